"""A job cancelled while items run is notified once they have recorded: its webhook went out at the cancel with counts
that did not add up (`{total: 6, done: 2, cancelled: 3}`), and a client paging the cancelled job with the `after`
cursor stepped over the in-flight item's result, which landed later (an ended job's results are still all answered
at once: tests/unit/test_jobs_store.py; the webhook and the events stream's `end` now say when nothing is in
flight)."""

from pathlib import Path

import pytest

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.records import JobSpec, NewItem, Outcome
from serving.jobs.store import JobStore
from serving.jobs.webhooks import payload
from serving.jobs.work_queue import WorkQueue

pytestmark = pytest.mark.unit


def test_cancel_with_an_item_in_flight(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'j.sqlite3'}")
    migrate(engine)
    store, queue = JobStore(engine), WorkQueue(engine)
    items = [NewItem(f"{i}.jpg", "object", f"{i:064x}", 1) for i in range(6)]
    job_id = store.create_job(JobSpec("m", 1, ("classification",), "https://hooks.example/x"), items)
    queue.mark_running(job_id)
    first, second, third = queue.claim(job_id, 3)
    queue.record(second, Outcome("done", "m", {}))
    queue.record(third, Outcome("done", "m", {}))
    store.cancel_job(job_id)

    assert queue.pending_webhooks() == []  # not while item 0 runs
    assert store.get_job(job_id).counts["running"] == 1  # what a client waits on before paging for good

    queue.record(first, Outcome("done", "m", {}))
    (due,) = queue.pending_webhooks()
    counts = payload(due)["counts"]
    assert counts == {"total": 6, "done": 3, "failed": 0, "cancelled": 3}
    assert [row.idx for row in store.results_page(job_id)] == [0, 1, 2]


def test_a_cancelled_job_with_nothing_in_flight_is_notified_at_once(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'j.sqlite3'}")
    migrate(engine)
    store, queue = JobStore(engine), WorkQueue(engine)
    items = [NewItem(f"{i}.jpg", "object", f"{i:064x}", 1) for i in range(3)]
    job_id = store.create_job(JobSpec("m", 1, ("classification",), "https://hooks.example/x"), items)
    queue.mark_running(job_id)
    (item,) = queue.claim(job_id, 1)
    store.cancel_job(job_id)
    queue.release(item)  # handed back after the cancel: it becomes cancelled, and the job is due
    (due,) = queue.pending_webhooks()
    assert payload(due)["counts"] == {"total": 3, "done": 0, "failed": 0, "cancelled": 3}
