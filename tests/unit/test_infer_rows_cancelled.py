"""A client-batched tensor (OIP infer) that fails as a whole leaves none of its rows to run (async review): one row
refused at a full batch queue answered the request 503 at once, but the rows already queued stayed queued and the
model ran them for nobody, under exactly the overload that refused it. `gather_all_or_cancel` alone, then the
service with the tiny model."""

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pytest

from serving.errors import OverloadedError
from serving.stages.concurrency import gather_all_or_cancel
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def test_the_first_failure_cancels_the_rest_and_is_raised() -> None:
    finished: list[int] = []

    async def row(index: int) -> int:
        if index == 2:
            raise ValueError("row 2")
        await asyncio.sleep(0.05 * index)
        finished.append(index)
        return index

    async def scenario() -> None:
        assert await gather_all_or_cancel([row(i) for i in (0, 1, 3)]) == [0, 1, 3]
        assert await gather_all_or_cancel([]) == []
        finished.clear()
        with pytest.raises(ValueError, match="row 2"):
            await gather_all_or_cancel([row(i) for i in (2, 5, 6)])
        await asyncio.sleep(0.4)

    asyncio.run(scenario())
    assert finished == []  # rows 5 and 6 were cancelled, not run to the end


def test_a_tensor_refused_for_a_full_queue_runs_none_of_its_rows() -> None:
    service = tiny_local_service(Path(tempfile.mkdtemp()))[0]
    entry = service.routed_entry("tiny", "")
    queue = service.pipeline.models[entry.key]._queue
    queue.max_queued = 4
    run_batch, rows_run = queue._run_batch, []

    async def slow_model(items: list) -> list:
        await asyncio.sleep(0.2)
        rows_run.append(len(items))
        return await run_batch(items)

    queue._run_batch = slow_model

    async def scenario() -> None:
        batch = np.zeros((8, *entry.config.input.shape), dtype=service.pipeline.models[entry.key].input_dtype)
        with pytest.raises(OverloadedError):
            await service.infer_on(entry, batch)
        await asyncio.sleep(0.6)

    asyncio.run(scenario())
    assert sum(rows_run) == 0  # 4 before: the queued rows ran after the 503
