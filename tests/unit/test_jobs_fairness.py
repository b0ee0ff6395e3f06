"""Fair sharing between tenants: a tenant's small job no longer waits behind another tenant's big one.

Jobs ran one after another, oldest first, each to its end: tenant A's 100 000-image job held tenant B's 5-image job
for hours. A job loop now works on a job in turns of `IMGSERVE_BATCH_TURN_ITEMS` claimed items; at the end of a turn
it lets the tenant it served least recently go next, if one has work waiting. Real store on SQLite, the fake service
of the runner tests.
"""

import asyncio
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from serving.jobs import runner as runner_module
from serving.jobs import work_queue
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import job_results
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity
from tests.unit.test_jobs_runner import FakeService, _runner, parts  # noqa: F401 - fixture

pytestmark = pytest.mark.unit
TURN = 8  # items claimed per turn in these tests (concurrency 4)


def _with_turns(parts, turn_items: int | None = TURN):  # noqa: F811
    engine, objects, settings = parts
    return engine, objects, settings.model_copy(update={"turn_items": turn_items})


def _submit(parts, tenant: str, payloads: list[bytes]) -> str:  # noqa: F811
    engine, objects, _ = parts
    items = [NewItem(f"{i}.jpg", "object", objects.put(p), len(p)) for i, p in enumerate(payloads)]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ("classification",)), items, tenant=tenant)
    time.sleep(0.01)  # the next job is strictly younger
    return job_id


def _run_until_idle(runner: JobRunner, jobs: list[str], steps: int = 200) -> Counter[str]:
    """`_step` until every job has ended; counts the turns (run_job calls) each job got."""
    turns: Counter[str] = Counter()
    run_job = runner.run_job

    async def counted(job):  # type: ignore[no-untyped-def]
        turns[job.id] += 1
        return await run_job(job)

    runner.run_job = counted  # type: ignore[method-assign]
    store = JobStore(runner.queue.engine)

    async def steps_until_done() -> None:
        for _ in range(steps):
            if all(store.get_job(job_id).status not in ("queued", "running") for job_id in jobs):
                return
            await runner._step()
        raise AssertionError(f"jobs not done after {steps} steps")

    asyncio.run(asyncio.wait_for(steps_until_done(), 60))
    return turns


def _results_per_item(engine: sa.Engine, job_id: str) -> Counter[int]:
    with engine.begin() as conn:
        rows = conn.execute(sa.select(job_results.c.idx).where(job_results.c.job_id == job_id)).all()
    return Counter(int(row.idx) for row in rows)


def test_a_small_job_of_another_tenant_finishes_before_a_big_one_submitted_first(
    parts,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "RETRY_DELAY_S", 0.0)
    fair = _with_turns(parts)
    big_payloads = [f"a{i}".encode() for i in range(60)]
    big = _submit(fair, "tenant-a", big_payloads)
    small = _submit(fair, "tenant-b", [f"b{i}".encode() for i in range(5)])
    # item 7 is refused for load once, in flight at the end of tenant A's first turn: handed back, run again
    service = FakeService(overload_once=frozenset({b"a7"}))
    turns = _run_until_idle(_runner(fair, service), [big, small])

    store = JobStore(parts[0])
    a, b = store.get_job(big), store.get_job(small)
    assert a.status == b.status == "completed" and a.counts["done"] == 60 and b.counts["done"] == 5
    assert b.finished_at is not None and a.finished_at is not None and b.finished_at < a.finished_at
    with parts[0].begin() as conn:
        a_done_before_b = conn.execute(
            sa.select(sa.func.count()).where(job_results.c.job_id == big, job_results.c.created_at < b.finished_at)
        ).scalar_one()
    # B waited for one turn of A (plus the chunk in flight when it ended), not for A's whole job
    assert a_done_before_b <= TURN + fair[2].concurrency, a_done_before_b
    # every item written exactly once; only the overloaded one dispatched twice (its refusal not counted)
    assert _results_per_item(parts[0], big) == Counter(range(60))
    assert _results_per_item(parts[0], small) == Counter(range(5))
    assert service.calls[b"a7"] == 2 and all(service.calls[p] == 1 for p in big_payloads if p != b"a7")
    assert a.attempts == 60 and a.rerun_items == 0
    assert turns[big] == 2 and turns[small] == 1, turns  # A gave its turn once, and got it back
    # going back to A after B's turn writes no event: one 'started', no 'resumed' per turn
    events = [e["event"] for e in store.events(big)]
    assert events == ["created", "queued", "started", "completed"], events


def test_alone_a_tenants_job_runs_in_one_turn_without_extra_events(parts) -> None:  # noqa: F811
    """No bubble when alone: the turn check finds no other tenant waiting and the loop goes on claiming. A second job
    of the same tenant waits for the first (oldest first within a tenant), it does not take turns with it."""
    fair = _with_turns(parts)
    first = _submit(fair, "tenant-a", [f"a{i}".encode() for i in range(40)])
    second = _submit(fair, "tenant-a", [b"x0", b"x1"])
    runner = _runner(fair, FakeService())
    asked = Counter[str]()
    waiting = runner.queue.other_tenant_waiting

    def counted(tenant: str) -> bool:
        asked[tenant] += 1
        return waiting(tenant)

    runner.queue.other_tenant_waiting = counted  # type: ignore[method-assign]
    turns = _run_until_idle(runner, [first, second])
    store = JobStore(parts[0])
    assert turns == {first: 1, second: 1}, turns
    assert asked["tenant-a"] >= 40 // TURN - 1, "checked at each turn's end"
    assert store.get_job(second).finished_at > store.get_job(first).finished_at  # type: ignore[operator]
    for job_id in (first, second):
        assert [e["event"] for e in store.events(job_id)] == ["created", "queued", "started", "completed"]


def test_next_job_rotates_tenants_least_recently_served_first(parts) -> None:  # noqa: F811
    engine = parts[0]
    a1 = _submit(parts, "a", [b"1"])
    b1 = _submit(parts, "b", [b"2", b"3"])
    c1 = _submit(parts, "c", [b"4"])
    a2 = _submit(parts, "a", [b"5"])
    queue = WorkQueue(engine, WorkerIdentity())

    def turns(count: int) -> list[str | None]:
        return [job.id if (job := queue.next_job()) else None for _ in range(count)]

    # oldest first among tenants never served; then the least recently served; a tenant's oldest job first
    assert turns(5) == [a1, b1, c1, a1, b1]
    d1 = _submit(parts, "d", [b"6"])
    assert turns(3) == [d1, c1, a1], "a tenant never served goes before any served one, however young its job"
    # b's remaining items all run on another loop: passed over, as before
    other = WorkQueue(engine, WorkerIdentity())
    other.mark_running(b1)
    assert len(other.claim(b1, 10)) == 2
    assert turns(3) == [d1, c1, a1]
    JobStore(engine).cancel_job(a1)
    assert turns(2) == [d1, c1] and turns(1) == [a2]
    for job_id in (c1, a2, d1):
        JobStore(engine).cancel_job(job_id)
    assert turns(1) == [None]  # nothing left: the rotation starts afresh
    a3, e1 = _submit(parts, "a", [b"7"]), _submit(parts, "e", [b"8"])
    assert turns(2) == [a3, e1], "oldest first again: a's earlier turns are forgotten"


def test_a_loop_forgets_the_tenants_it_served_longest_ago(parts, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The rotation a loop keeps is bounded (a busy server with many tenants is never idle); a forgotten tenant ranks
    as never served: still before every tenant served after it."""
    monkeypatch.setattr(work_queue, "REMEMBERED_TENANTS", 2)
    a1, b1, c1 = (_submit(parts, tenant, [b"1"]) for tenant in "abc")
    queue = WorkQueue(parts[0], WorkerIdentity())
    assert [job.id for job in (queue.next_job(), queue.next_job(), queue.next_job())] == [a1, b1, c1]
    assert list(queue._last_served) == ["b", "c"]
    assert [job.id for job in (queue.next_job(), queue.next_job(), queue.next_job())] == [a1, b1, c1]
    assert len(queue._last_served) == 2


def test_other_tenant_waiting(parts) -> None:  # noqa: F811
    engine = parts[0]
    _submit(parts, "a", [b"1", b"2"])
    queue = WorkQueue(engine, WorkerIdentity())
    assert not queue.other_tenant_waiting("a")
    _submit(parts, "a", [b"3"])
    assert not queue.other_tenant_waiting("a"), "the same tenant's jobs wait their turn in age order"
    theirs = _submit(parts, "b", [b"4"])
    assert queue.other_tenant_waiting("a") and queue.other_tenant_waiting("b")
    queue.mark_running(theirs)
    (held,) = queue.claim(theirs, 1)
    assert not queue.other_tenant_waiting("a"), "only pending work waits: b's one item is in flight"
    JobStore(engine).cancel_job(theirs)
    queue.release(held)
    assert not queue.other_tenant_waiting("a"), "an ended job's items wait for nothing"


def test_turn_items_setting() -> None:
    base = {"IMGSERVE_DATABASE_URL": "sqlite:///x.sqlite3", "IMGSERVE_OBJECT_STORE": "/tmp/objects"}
    assert JobSettings.from_env(base).items_per_turn() == 4 * 8  # a few times the concurrency by default
    assert JobSettings.from_env({**base, "IMGSERVE_BATCH_CONCURRENCY": "3"}).items_per_turn() == 12
    assert JobSettings.from_env({**base, "IMGSERVE_BATCH_TURN_ITEMS": "100"}).items_per_turn() == 100
    with pytest.raises(ValueError, match="IMGSERVE_BATCH_TURN_ITEMS"):
        JobSettings.from_env({**base, "IMGSERVE_BATCH_TURN_ITEMS": "0"})


def test_two_loops_each_rotate_and_write_every_item_once(parts) -> None:  # noqa: F811
    """Two job loops on one store (two Ingress replicas), each with its own rotation: the small job still finishes
    first, nothing runs twice, and a job gets one 'resumed' at most (the second loop joining it), not one per turn."""
    fair = _with_turns(parts)
    big = _submit(fair, "tenant-a", [f"a{i}".encode() for i in range(80)])
    small = _submit(fair, "tenant-b", [f"b{i}".encode() for i in range(5)])
    service = FakeService()
    store = JobStore(parts[0])

    async def loop(runner: JobRunner) -> None:
        while any(store.get_job(job_id).status in ("queued", "running") for job_id in (big, small)):
            await runner._step()

    async def both() -> None:
        await asyncio.gather(loop(_runner(fair, service)), loop(_runner(fair, service)))

    asyncio.run(asyncio.wait_for(both(), 60))
    a, b = store.get_job(big), store.get_job(small)
    assert a.counts["done"] == 80 and b.counts["done"] == 5 and b.finished_at < a.finished_at  # type: ignore[operator]
    assert _results_per_item(parts[0], big) == Counter(range(80)) and set(service.calls.values()) == {1}
    events = Counter(e["event"] for e in store.events(big))
    assert events["started"] == 1 and events["resumed"] <= 1, events
