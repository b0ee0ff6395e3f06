"""The job store on SQLite: migrations, one result per item, requeue after a crash, cancel, paging."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.errors import BadRequestError, RequestTooLargeError
from serving.jobs.database import create_store_engine, current_revision, head_revision, migrate
from serving.jobs.errors import JobNotFoundError, JobStateError
from serving.jobs.records import JobSpec, NewItem, Outcome
from serving.jobs.store import JobStore
from serving.jobs.tables import job_items
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry

pytestmark = pytest.mark.unit
SPEC = JobSpec("m", 3, ("classification",))


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'db' / 'jobs.sqlite3'}")
    migrate(engine)
    return engine


def _items(n: int) -> list[NewItem]:
    return [NewItem(f"{i}.jpg", "object", f"{i:064x}", 10) for i in range(n)]


def test_migrations_reach_head_and_are_idempotent(engine: sa.Engine) -> None:
    migrate(engine)
    assert current_revision(engine) == head_revision() == "0010"
    tables = set(sa.inspect(engine).get_table_names())
    assert {"jobs", "job_items", "job_results", "job_events", "webhook_deliveries", "job_workers"} <= tables
    assert {"collections", "collection_images"} <= tables
    # The migration creates what the tables module declares (the store writes through those definitions).
    from serving.jobs.tables import collection_images

    columns = {c["name"] for c in sa.inspect(engine).get_columns("collection_images")}
    assert columns == {c.name for c in collection_images.columns}


def test_claim_record_finish(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(5))
    job = queue.next_job()
    assert job is not None and job.id == job_id and job.status == "queued"
    queue.mark_running(job_id)
    claimed = queue.claim(job_id, 3)
    assert [c.idx for c in claimed] == [0, 1, 2] and all(c.attempts == 1 for c in claimed)
    assert store.get_job(job_id).counts["running"] == 3
    assert queue.record(claimed[0], Outcome("done", "m", {"classification": {}}))
    assert not queue.record(claimed[0], Outcome("done", "m", {})), "a second result for one item is refused"
    assert queue.finish_if_done(job_id) is None
    for item in claimed[1:] + queue.claim(job_id, 10):
        queue.record(item, Outcome("failed" if item.idx == 4 else "done", "m", error_kind="invalid_image"))
    finished = queue.finish_if_done(job_id)
    assert finished is not None and finished.status == "completed"
    assert finished.counts["done"] == 4 and finished.counts["failed"] == 1 and finished.attempts == 5
    rows = store.results_page(job_id)
    assert [r.idx for r in rows] == [0, 1, 2, 3, 4]
    assert [r.idx for r in store.results_page(job_id, after=1, limit=2)] == [2, 3]
    assert [r.idx for r in store.results_page(job_id, status="failed")] == [4]
    assert [e["event"] for e in store.events(job_id)] == ["created", "queued", "started", "completed"]


def test_an_index_cursor_never_steps_over_an_item_that_finishes_late(engine: sa.Engine) -> None:
    """Items finish out of order: a client paging with `after` = the last index it saw got [0, 2], then nothing
    after 2, and never saw item 1. A running job's results are answered up to its first unfinished item."""
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(4))
    queue.mark_running(job_id)
    items = {item.idx: item for item in queue.claim(job_id, 3)}
    queue.record(items[0], Outcome("done", "m", {}))
    queue.record(items[2], Outcome("done", "m", {}))
    assert [r.idx for r in store.results_page(job_id)] == [0]  # 1 runs, 2 waits behind it
    seen = [r.idx for r in store.results_page(job_id)]
    queue.record(items[1], Outcome("done", "m", {}))
    seen += [r.idx for r in store.results_page(job_id, after=seen[-1])]
    assert seen == [0, 1, 2]  # item 3 is still pending
    for item in queue.claim(job_id, 1):
        queue.record(item, Outcome("failed", "m", error_kind="invalid_image"))
    seen += [r.idx for r in store.results_page(job_id, after=seen[-1])]
    assert seen == [0, 1, 2, 3]


def test_a_running_jobs_outputs_stop_at_its_first_unfinished_item(engine: sa.Engine) -> None:
    """outputs.zip of a running job paged by index as results are: a zip held item 2 without item 1, which
    finished later and was never added (its outputs so far had holes). Up to the first unfinished item now."""
    from serving.jobs.records import ItemOutput

    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(3))
    queue.mark_running(job_id)
    items = {item.idx: item for item in queue.claim(job_id, 3)}

    def done(idx: int) -> None:
        output = ItemOutput(f"{idx:064x}", f"{idx}.webp", 10, 5)
        queue.record(items[idx], Outcome("done", "m", {}, output=output))

    done(0)
    done(2)
    assert [idx for idx, _, _ in store.outputs_page(job_id)] == [0]  # [0, 2] before: 1 never came after
    done(1)
    assert [idx for idx, _, _ in store.outputs_page(job_id, after=0)] == [1, 2]


def test_an_ended_jobs_results_are_all_answered(engine: sa.Engine) -> None:
    """A job cancelled with item 0 still in flight: its other results are answered (a collection saved from it has
    them), not held behind an item that may never finish in an ended job."""
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(3))
    queue.mark_running(job_id)
    first, *rest = queue.claim(job_id, 3)
    for item in rest:
        queue.record(item, Outcome("done", "m", {}))
    assert store.results_page(job_id) == []  # running: item 0 first
    store.cancel_job(job_id)
    assert [r.idx for r in store.results_page(job_id)] == [1, 2]
    queue.record(first, Outcome("done", "m", {}))  # in flight at the cancel: its result still counts
    assert [r.idx for r in store.results_page(job_id)] == [0, 1, 2]


def test_requeue_after_crash_reruns_only_in_flight_items(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(4))
    queue.mark_running(job_id)
    first = queue.claim(job_id, 2)
    queue.record(first[0], Outcome("done", "m", {}))
    # the worker dies here with item 1 in flight; a new one starts:
    assert WorkQueue(engine).requeue_orphans() == {job_id: 1}
    again = queue.claim(job_id, 10)
    assert [(c.idx, c.attempts) for c in again] == [(1, 2), (2, 1), (3, 1)]
    for item in again:
        queue.record(item, Outcome("done", "m", {}))
    finished = queue.finish_if_done(job_id)
    assert finished is not None and finished.rerun_items == 1 and finished.attempts == 5
    assert len(store.results_page(job_id)) == 4


def test_cancel_drops_pending_items_and_refuses_twice(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(JobSpec("m", 1, ("classification",), "http://127.0.0.1:1/hook"), _items(4))
    queue.mark_running(job_id)
    in_flight = queue.claim(job_id, 1)
    job = store.cancel_job(job_id)
    assert job.status == "cancelled" and job.counts["cancelled"] == 3 and job.webhook_state == "pending"
    assert queue.claim(job_id, 10) == []
    assert queue.record(in_flight[0], Outcome("done", "m", {}))  # in-flight work still lands
    assert queue.finish_if_done(job_id) is None
    with pytest.raises(JobStateError):
        store.cancel_job(job_id)
    with pytest.raises(JobNotFoundError):
        store.cancel_job("nope")


def test_open_job_takes_items_until_started(engine: sa.Engine) -> None:
    store = JobStore(engine, max_items=5)
    job_id = store.create_job(SPEC, _items(2), start=False)
    assert store.get_job(job_id).status == "open"
    assert store.add_items(job_id, _items(2)) == 4
    with pytest.raises(RequestTooLargeError):
        store.add_items(job_id, _items(2))
    store.start_job(job_id)
    assert store.get_job(job_id).status == "queued"
    assert [r.idx for r in WorkQueue(engine).claim(job_id, 10)] == []  # queued, not yet running
    with pytest.raises(JobStateError):
        store.add_items(job_id, _items(1))
    with pytest.raises(BadRequestError):
        store.create_job(SPEC, [])


def test_intake_failures_are_recorded_at_once_and_answered_in_index_order(engine: sa.Engine) -> None:
    store = JobStore(engine)
    items = [*_items(1), NewItem("../x.jpg", "none", "", None, "unsafe_entry", "refused")]
    job_id = store.create_job(SPEC, items)
    job = store.get_job(job_id)
    assert job.counts["failed"] == 1 and job.counts["pending"] == 1 and job.total == 2
    # recorded at once; answered once the items before it are finished (an index cursor must not step over item 0)
    assert store.results_page(job_id) == []
    queue = WorkQueue(engine)
    queue.mark_running(job_id)
    (first,) = queue.claim(job_id, 5)
    queue.record(first, Outcome("done", "m", {}))
    _, row = store.results_page(job_id)
    assert row.idx == 1 and row.error_kind == "unsafe_entry" and row.attempts == 0


def test_list_is_newest_first_and_filters(engine: sa.Engine) -> None:
    store = JobStore(engine)
    ids = [store.create_job(SPEC, _items(1)) for _ in range(3)]
    assert [j.id for j in store.list_jobs()] == ids[::-1]
    store.cancel_job(ids[0])
    assert [j.id for j in store.list_jobs(status="cancelled")] == [ids[0]]
    assert len(store.list_jobs(limit=1, offset=1)) == 1


def test_a_cancelled_job_is_never_marked_running_again(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(2))
    store.cancel_job(job_id)
    queue.mark_running(job_id)
    assert store.get_job(job_id).status == "cancelled"
    assert queue.next_job() is None


def test_an_item_that_kills_every_worker_ends_failed_after_max_attempts(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(2))
    queue.mark_running(job_id)
    for attempt in (1, 2, 3):  # each time the worker dies with both items in flight
        claimed = queue.claim(job_id, 10)
        assert [c.attempts for c in claimed] == [attempt, attempt]
        if attempt == 3:
            queue.record(claimed[1], Outcome("done", "m", {}))  # this one finished before the third crash
        requeued = WorkQueue(engine).requeue_orphans(max_attempts=3)
        assert requeued == ({} if attempt == 3 else {job_id: 2})
    assert queue.claim(job_id, 10) == []  # nothing left to crash-loop on
    finished = queue.finish_if_done(job_id)
    assert finished is not None and finished.counts["failed"] == 1 and finished.counts["done"] == 1
    poisoned = store.results_page(job_id, status="failed")[0]
    assert poisoned.idx == 0 and poisoned.error_kind == "poison" and "3 dispatches" in (poisoned.error or "")
    assert "item_poisoned" in [e["event"] for e in store.events(job_id)]


def test_overload_release_does_not_count_as_a_dispatch(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    job_id = store.create_job(SPEC, _items(1))
    queue.mark_running(job_id)
    for _ in range(5):  # refused five times by an overloaded graph: never really dispatched
        queue.release(queue.claim(job_id, 1)[0], counted=False)
    assert queue.claim(job_id, 1)[0].attempts == 1


def test_downgrading_the_webhook_claims_keeps_the_jobs(engine: sa.Engine) -> None:
    """0008's downgrade rebuilt `jobs` (batch mode drops and recreates it) and with foreign keys on that deleted
    every job's items and results by cascade."""
    from alembic import command

    from serving.jobs.database import _alembic_config

    migrate(engine)
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ("classification",), None), _items(2))
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    assert current_revision(engine) == "0007"
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_items WHERE job_id = :j"), {"j": job_id}).scalar() == 2
    migrate(engine)
    assert current_revision(engine) == head_revision()


def test_old_pending_items_of_ended_jobs_are_not_counted_as_pending(engine: sa.Engine) -> None:
    store, queue = JobStore(engine), WorkQueue(engine)
    cancelled, failed, active = (store.create_job(SPEC, _items(3)) for _ in range(3))
    for job_id in (cancelled, failed, active):
        queue.mark_running(job_id)
    store.cancel_job(cancelled)
    queue.fail_job(failed, "its model is no longer served")
    with engine.begin() as conn:  # rows as a store from before the hand-back fix left them
        conn.execute(job_items.update().where(job_items.c.job_id.in_([cancelled, failed])).values(status="pending"))
    for job_id in (cancelled, failed):
        job = store.get_job(job_id)
        assert job.counts["pending"] == 0 and job.counts["cancelled"] == 3, (job.status, job.counts)
    listed = {job.id: job for job in store.list_jobs()}
    assert listed[cancelled].counts["pending"] == 0 and listed[failed].counts["pending"] == 0
    assert listed[active].counts["pending"] == 3  # a job that runs still has its items waiting
    assert queue.job(active).counts["pending"] == 3  # type: ignore[union-attr]


def test_a_graceful_stop_does_not_hand_back_items_of_a_job_that_ended_meanwhile(engine: sa.Engine) -> None:
    worker = WorkerIdentity()
    store, queue, registry = JobStore(engine), WorkQueue(engine, worker), WorkerRegistry(engine)
    registry.heartbeat(worker)
    ended, running = store.create_job(SPEC, _items(2)), store.create_job(SPEC, _items(2))
    for job_id in (ended, running):
        queue.mark_running(job_id)
        assert len(queue.claim(job_id, 10)) == 2
    store.cancel_job(ended)  # the in-flight items may still record; the worker stops instead
    assert registry.retire(worker) == 4
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(job_items.c.job_id, job_items.c.status).distinct()).all())
    assert statuses == {ended: "cancelled", running: "pending"}
    assert [c.attempts for c in queue.claim(running, 10)] == [1, 1]  # the stop's hand-back is not a dispatch
