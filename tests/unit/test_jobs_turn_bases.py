"""Review of turns between tenants (IMGSERVE_BATCH_TURN_ITEMS): a job with image operations named its outputs apart
over all its items (`output_bases`: 2.3 s for 100 000 items, on the event loop) at the start of every turn, not once:
a 100 000-item conversion job taking turns with another tenant's work spent more time naming than converting and held
the loop (the Ingress's, in the local placement) seconds at a time. Real SQLite store, fake operations."""

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from serving.jobs import runner as runner_module
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.store import JobStore
from tests.unit.test_jobs_runner import FakeService, _runner, parts  # noqa: F401 - fixture

pytestmark = pytest.mark.unit
TURN = 4  # items per turn (concurrency 4)


def test_a_job_taking_turns_names_its_outputs_once(parts, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine, objects, settings = parts
    settings = settings.model_copy(update={"turn_items": TURN, "poll_interval_s": 0.01})
    store = JobStore(engine)
    items = [
        NewItem(f"photos/IMG_{i % 10}.{'heic' if i < 10 else 'jpg'}", "object", objects.put(b"c%d" % i), 2)
        for i in range(20)
    ]
    convert = store.create_job(JobSpec("m", 1, (), operations={"convert": {"format": "webp"}}), items, tenant="a")
    time.sleep(0.01)
    others = [NewItem(f"{i}.jpg", "object", objects.put(b"o%d" % i), 2) for i in range(12)]
    other = store.create_job(JobSpec("m", 1, ("classification",)), others, tenant="b")
    named = Counter[int]()
    real_bases = runner_module.output_bases

    def counted_bases(*args: Any, **kwargs: Any) -> dict[int, str]:
        named[0] += 1
        return real_bases(*args, **kwargs)

    written: dict[int, str] = {}

    async def fake_operations(operations: Any, objects: Any, specs: Any, data: bytes, base: str, *rest: Any) -> Any:
        written[int(data[1:])] = base
        return {"name": base}, None

    monkeypatch.setattr(runner_module, "output_bases", counted_bases)
    monkeypatch.setattr(runner_module, "run_operations", fake_operations)
    runner = _runner((engine, objects, settings), FakeService())
    runner._image_operations = object()  # type: ignore[assignment]
    turns = Counter[str]()
    run_job = runner.run_job

    async def counted_turns(job):  # type: ignore[no-untyped-def]
        turns[job.id] += 1
        return await run_job(job)

    runner.run_job = counted_turns  # type: ignore[method-assign]

    async def until_ended() -> None:
        for _ in range(100):
            if all(store.get_job(j).status not in ("queued", "running") for j in (convert, other)):
                return
            await runner._step()

    asyncio.run(asyncio.wait_for(until_ended(), 30))
    assert store.get_job(convert).counts["done"] == 20 and store.get_job(other).counts["done"] == 12
    assert turns[convert] >= 3, turns  # it took turns with tenant b's job
    assert named[0] == 1, f"outputs named {named[0]} times for {turns[convert]} turns"
    # the names are those of all 20 items, whichever turn ran an item: IMG_0.heic and IMG_0.jpg apart
    assert len(set(written.values())) == 20 and len(written) == 20
