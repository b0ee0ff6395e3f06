"""Retries with exponential backoff for calls that failed with UNAVAILABLE, and nothing else."""

import time
from collections.abc import Callable
from typing import TypeVar

from serving.client.errors import ImgServeError

T = TypeVar("T")
FIRST_BACKOFF_S = 0.1
MAX_RETRY_AFTER_S = 10.0  # a longer Retry-After is not waited for: the call fails and the caller decides


def with_retries(
    call: Callable[[], T],
    retries: int,
    sleep: Callable[[float], None] | None = None,
    first_backoff_s: float = FIRST_BACKOFF_S,
) -> T:
    """Run `call`; on a retryable `ImgServeError` wait 0.1 s, 0.2 s, 0.4 s, ... (or the server's Retry-After when
    longer) and try again, `retries` times. A Retry-After over 10 s is raised at once, with its `retry_after`."""
    delay = first_backoff_s
    for attempt in range(retries + 1):
        try:
            return call()
        except ImgServeError as exc:
            asked = exc.retry_after or 0.0
            if not exc.retryable or attempt == retries or asked > MAX_RETRY_AFTER_S:
                raise
            wait = max(delay, asked)  # the server's Retry-After, if longer
        (sleep or time.sleep)(wait)
        delay *= 2
    raise AssertionError("unreachable")  # the loop returns or raises
