"""Run awaitables concurrently, wait for every one, then raise the first failure in order (none left unretrieved)."""

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any


async def gather_or_raise(
    calls: Sequence[Awaitable[Any]], keep: tuple[type[BaseException], ...] = (), note_index: bool = False
) -> list[Any]:
    """Results in order. A failure that is a `keep` instance stays in its slot (a per-image error in a list
    answer); the first other failure is raised, with "image index i" noted when `note_index` and several ran."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException) and not isinstance(result, keep):
            if note_index and len(results) > 1:
                result.add_note(f"image index {index}")
            raise result
    return list(results)
