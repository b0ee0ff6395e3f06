"""Faults the batch worker survives (#18): store outages with backoff, orphan recovery scoped to dead workers,
graceful hand-back, store errors as 503, and online inference on threads a stalled database cannot take.

The store here is a real SQLite file; an "outage" is the real SQLAlchemy OperationalError a refused connection
raises, injected in front of the real queue methods.
"""

import asyncio
import socket
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from serving.errors import classify_error
from serving.jobs import outage as outage_module
from serving.jobs.outage import StoreCalls
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.store import JobStore
from serving.jobs.work_queue import WorkQueue
from serving.jobs.worker import JobLoop
from serving.jobs.workers import HOST, WorkerIdentity, WorkerRegistry
from serving.stages.concurrency import STAGE_THREADS, stage_thread
from tests.unit.test_jobs_runner import FakeService, _runner, _submit, parts  # noqa: F401 - fixture

pytestmark = pytest.mark.unit


def _refused() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))


def test_results_computed_during_an_outage_are_written_once_when_it_ends(parts, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(outage_module, "FIRST_DELAY_S", 0.02)
    monkeypatch.setattr(outage_module, "MAX_DELAY_S", 0.2)
    engine = parts[0]
    job_id = _submit(parts, [f"img{i}".encode() for i in range(12)])
    service = FakeService()
    runner = _runner(parts, service)
    real_record, tries = runner.queue.record, []
    down_until = time.monotonic() + 1.0

    def record(item, outcome):  # the store is down for the first second
        tries.append(time.monotonic())
        if time.monotonic() < down_until:
            raise _refused()
        return real_record(item, outcome)

    runner.queue.record = record  # type: ignore[method-assign]
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.status == "completed" and finished.counts["done"] == 12
    assert finished.counts["running"] == 0 and finished.attempts == 12, "nothing ran twice"
    assert all(count == 1 for count in service.calls.values())
    during = [t for t in tries if t < down_until]
    # 4 items in flight, each retrying with shared backoff capped at 0.2 s: a few dozen tries, not a hot loop
    assert 4 <= len(during) <= 60, len(during)
    assert runner.store.down_for() == 0.0 and runner.store.failures == 0
    with engine.begin() as conn:
        per_item = conn.execute(sa.text("SELECT item_id, count(*) FROM job_results GROUP BY item_id")).all()
    assert len(per_item) == 12 and all(count == 1 for _, count in per_item)


def test_outage_duration_and_backoff() -> None:
    calls = StoreCalls()
    delays = [calls.failed(_refused()) for _ in range(8)]
    assert delays[:3] == [0.5, 1.0, 2.0] and max(delays) == outage_module.MAX_DELAY_S
    assert calls.down_for() > 0
    calls.succeeded()
    assert calls.down_for() == 0.0 and calls.failed(_refused()) == 0.5


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_orphan_recovery_requeues_only_dead_workers_items(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = _submit(parts, [f"img{i}".encode() for i in range(8)])
    registry = WorkerRegistry(engine)
    live_here = WorkerIdentity()
    dead_here = WorkerIdentity(pid=_dead_pid())
    live_elsewhere = WorkerIdentity(host=HOST + "-other", pid=1)
    stale_elsewhere = WorkerIdentity(host=HOST + "-other", pid=1)
    for worker in (live_here, dead_here, live_elsewhere, stale_elsewhere):
        registry.heartbeat(worker)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE job_workers SET heartbeat_at = :t WHERE id = :id"),
            {"t": time.time() - 120, "id": stale_elsewhere.id},
        )
    WorkQueue(engine).mark_running(job_id)
    held = {
        w.id: WorkQueue(engine, w).claim(job_id, 2) for w in (live_here, dead_here, live_elsewhere, stale_elsewhere)
    }
    newcomer = WorkQueue(engine, WorkerIdentity())
    assert newcomer.requeue_orphans(max_attempts=3, stale_after_s=30) == {job_id: 4}
    pending = {c.idx for c in newcomer.claim(job_id, 10)}
    assert pending == {c.idx for c in held[dead_here.id] + held[stale_elsewhere.id]}
    with engine.begin() as conn:
        workers = {row.id for row in conn.execute(sa.text("SELECT id FROM job_workers"))}
    assert live_here.id in workers and live_elsewhere.id in workers
    assert dead_here.id not in workers and stale_elsewhere.id not in workers
    events = [e for e in JobStore(engine).events(job_id) if e["event"] == "items_requeued"]
    assert events and events[-1]["detail"]["reason"] == "their worker stopped"


def test_a_worker_in_another_pid_namespace_of_this_host_is_judged_by_its_heartbeat(parts) -> None:  # noqa: F811
    """Pods on the host network share the node's host name, each in its own PID namespace: a live pod's pid looks
    gone from another pod, whose loop requeued its running items (run twice) when host names were compared."""
    engine = parts[0]
    job_id = _submit(parts, [b"a", b"b"])
    neighbour_pod = WorkerIdentity(host=socket.gethostname(), pid=_dead_pid())  # same name, pid not in our namespace
    WorkerRegistry(engine).heartbeat(neighbour_pod)
    WorkQueue(engine).mark_running(job_id)
    assert len(WorkQueue(engine, neighbour_pod).claim(job_id, 2)) == 2
    assert WorkQueue(engine, WorkerIdentity()).requeue_orphans(max_attempts=3, stale_after_s=30) == {}


def test_a_retiring_worker_hands_its_items_back_uncounted(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = _submit(parts, [b"a", b"b", b"c"])
    worker = WorkerIdentity()
    registry, queue = WorkerRegistry(engine), WorkQueue(engine, worker)
    registry.heartbeat(worker)
    queue.mark_running(job_id)
    assert len(queue.claim(job_id, 2)) == 2
    assert registry.retire(worker) == 2
    again = WorkQueue(engine, WorkerIdentity()).claim(job_id, 10)
    assert len(again) == 3 and all(item.attempts == 1 for item in again)


def test_the_worker_reports_unhealthy_only_after_a_long_outage(parts) -> None:  # noqa: F811
    async def main() -> None:
        loop = JobLoop(FakeService(), parts[2])
        try:
            loop.runner.store.failed(_refused())
            loop.runner.store._since = time.monotonic() - parts[2].unhealthy_after_s - 1  # as if down that long
            loop.check_health()  # the Ingress (local placement) keeps serving online traffic
            with pytest.raises(RuntimeError, match="job store unavailable"):
                loop.check_health(restart_on_store_outage=True)  # the BatchWorker is restarted by Ray
            loop.runner.store.succeeded()
            loop.check_health(restart_on_store_outage=True)
        finally:
            await loop.stop()

    asyncio.run(main())


def test_store_errors_are_503_without_sql() -> None:
    info = classify_error(_refused())
    assert (info.http_status, info.grpc_code, info.kind) == (503, "UNAVAILABLE", "store_unavailable")
    assert "INSERT" not in info.message and "refused" not in info.message and info.retry_after_s


def test_stage_calls_run_while_the_default_executor_is_stalled() -> None:
    """Every default-executor thread blocked (a database hanging under to_thread calls): stage work still runs."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        stalled = [loop.run_in_executor(None, release.wait) for _ in range(64)]
        try:
            return await asyncio.wait_for(stage_thread(lambda: threading.current_thread().name), timeout=5)
        finally:
            release.set()
            await asyncio.gather(*stalled)

    assert asyncio.run(main()).startswith("imgserve-stage")
    assert STAGE_THREADS._max_workers >= 4


def test_a_worker_judged_dead_re_registers_on_its_next_heartbeat(parts) -> None:  # noqa: F811
    """A live worker whose row was deleted (judged dead by a peer while the store was unreachable)."""
    engine = parts[0]
    worker = WorkerIdentity()
    registry = WorkerRegistry(engine)
    registry.heartbeat(worker)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM job_workers"))
    registry.heartbeat(worker)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_workers WHERE id = :id"), {"id": worker.id}).scalar() == 1


def test_claims_name_their_worker(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ("classification",)), [NewItem("a", "object", "0" * 64, 1)])
    worker = WorkerIdentity()
    queue = WorkQueue(engine, worker)
    queue.mark_running(job_id)
    queue.claim(job_id, 1)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT worker_id FROM job_items")).scalar() == worker.id


def test_a_live_local_worker_is_not_judged_by_a_heartbeat_an_outage_delayed(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = _submit(parts, [b"a", b"b"])
    worker = WorkerIdentity()  # this process: alive
    WorkerRegistry(engine).heartbeat(worker)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE job_workers SET heartbeat_at = :t"), {"t": time.time() - 600})
    queue = WorkQueue(engine, worker)
    queue.mark_running(job_id)
    held = queue.claim(job_id, 2)
    other = WorkQueue(engine, WorkerIdentity())
    assert other.requeue_orphans(stale_after_s=15) == {}
    other.release(held[0])  # not its item: nothing changes
    assert JobStore(engine).get_job(job_id).counts["running"] == 2
