"""`imgserve_batch_queue_depth`: the items waiting in a model's batch queue, the queue gauge every placement exports.

The local placement (what `make serve` runs) calls no Serve handle, so Ray's `ray_serve_deployment_queued_queries`
never exists there; the queue alert and the dashboard's queue panel read this gauge as well.
"""

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge

from serving.errors import OverloadedError
from serving.stages.batching import BatchQueue, Queued

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _gauge() -> Gauge:
    return Gauge("test_queue_depth", "items waiting", registry=CollectorRegistry())


def test_the_gauge_counts_items_waiting_for_a_batch_and_returns_to_zero() -> None:
    depth = _gauge()
    seen: list[float] = []

    async def scenario() -> list[int]:
        release = asyncio.Event()

        async def run(items: list[Queued[int]]) -> list[int | BaseException]:
            seen.append(depth._value.get())  # the batch has taken its items: they wait no more
            await release.wait()
            return [q.item for q in items]

        queue: BatchQueue[int, int] = BatchQueue(run, max_batch_size=2, batch_wait_timeout_s=0.0, depth=depth)
        calls = [asyncio.ensure_future(queue.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)  # the first batch (2 items) runs and blocks; 3 items wait behind it
        waiting = depth._value.get()
        release.set()
        results = await asyncio.gather(*calls)
        seen.append(waiting)
        return results

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]
    assert seen[-1] == 3 and seen[0] == 3  # while the first batch ran, 3 items waited
    assert depth._value.get() == 0


def test_dropped_and_shed_items_leave_the_gauge() -> None:
    """Cancelled callers dropped at the bound, and a refused submission (never queued), do not stay counted."""
    depth = _gauge()

    async def scenario() -> None:
        release = asyncio.Event()

        async def run(items: list[Queued[int]]) -> list[int | BaseException]:
            await release.wait()
            return [q.item for q in items]

        queue: BatchQueue[int, int] = BatchQueue(run, 1, 0.0, max_queued=2, depth=depth)
        running = asyncio.ensure_future(queue.submit(0))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(queue.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert depth._value.get() == 2
        with pytest.raises(OverloadedError):
            await queue.submit(3)
        assert depth._value.get() == 2
        for call in waiting:
            call.cancel()
        await asyncio.sleep(0)
        late = asyncio.ensure_future(queue.submit(4))  # at the bound: the cancelled two are dropped, 4 waits
        await asyncio.sleep(0.01)
        assert depth._value.get() == 1
        release.set()
        assert await asyncio.gather(running, late) == [0, 4]
        assert depth._value.get() == 0

    asyncio.run(scenario())


def test_a_closed_queue_drains_the_gauge() -> None:
    depth = _gauge()

    async def scenario() -> None:
        async def run(items: list[Queued[int]]) -> list[int | BaseException]:
            await asyncio.sleep(0.005)
            return [q.item for q in items]

        queue: BatchQueue[int, int] = BatchQueue(run, 4, 0.0, depth=depth)
        calls = [asyncio.ensure_future(queue.submit(i)) for i in range(10)]
        queue.close()
        assert await asyncio.gather(*calls) == list(range(10))
        assert depth._value.get() == 0

    asyncio.run(scenario())


class _Backend:
    """A backend whose batch blocks until released, so requests pile up behind it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def info(self) -> Any:
        return SimpleNamespace(name="fake", device="cpu", precision="fp32", platform="test", detail={})

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.release.wait(10)
        return {"logits": np.zeros((batch.shape[0], 3), dtype=np.float32)}


def test_a_model_stage_reports_its_queue_under_the_models_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model stage (local placement: in the Ingress; graph: in the model deployment) feeds the gauge."""
    from serving.config.model_config import load_model_config
    from serving.config.model_entry import ModelEntry
    from serving.metrics import BATCH_QUEUE_DEPTH
    from serving.stages import model as model_module

    folder = ROOT / "models" / "mobilenet_v2_imagenet"
    entry = ModelEntry(load_model_config(folder / "config.yaml"), folder)
    backend = _Backend()
    monkeypatch.setattr(model_module, "load_backend", lambda *_: backend)
    stage = model_module.ModelStage(
        entry,
        batching={
            "max_batch_size": 1,
            "batch_wait_timeout_ms": 0,
            "max_concurrent_batches": 1,
            "preferred_batch_sizes": [],
        },
    )
    gauge = BATCH_QUEUE_DEPTH.labels(entry.name)
    before = gauge._value.get()
    tensor = np.zeros(stage.input_shape, dtype=stage.input_dtype)

    async def scenario() -> float:
        calls = [asyncio.ensure_future(stage.infer(tensor)) for _ in range(4)]
        await asyncio.sleep(0.05)  # one batch of 1 runs (blocked); 3 wait
        waiting = gauge._value.get() - before
        backend.release.set()
        await asyncio.gather(*calls)
        return waiting

    try:
        assert asyncio.run(scenario()) == 3
        assert gauge._value.get() == before
    finally:
        backend.release.set()
        stage.retire()
