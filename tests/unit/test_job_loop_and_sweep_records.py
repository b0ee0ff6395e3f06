"""Two job loops on one store (review findings): a loop giving up on an item it no longer holds (requeued by an
orphan sweep and claimed by another loop) marked that loop's running item failed with a false `item_given_up`
event, as `release` already refused to; and a webhook's final delivery recorded by two loops added its
`webhook_delivered` event twice, where `close_webhook` adds it once. And a retention sweep summed only some of its
purges' counts. Real SQLite store."""

import time

import pytest
import sqlalchemy as sa

from serving.jobs.erasure import sweep
from serving.jobs.store import JobStore
from serving.jobs.tables import job_items, jobs
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity
from tests.unit.test_jobs_runner import _submit, parts  # noqa: F401 - fixture

pytestmark = pytest.mark.unit


def _events(engine: sa.Engine, job_id: str, name: str) -> list[dict]:
    return [event for event in JobStore(engine).events(job_id) if event["event"] == name]


def test_a_loop_cannot_give_up_an_item_another_loop_holds(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = _submit(parts, [b"img0"], hook=None)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="running"))
    first, second = WorkQueue(engine, WorkerIdentity()), WorkQueue(engine, WorkerIdentity())
    [item] = first.claim(job_id, 1)
    with engine.begin() as conn:  # an orphan sweep handed it back, and the second loop took it
        conn.execute(job_items.update().where(job_items.c.id == item.id).values(status="pending", worker_id=None))
    [again] = second.claim(job_id, 1)
    first.give_up(item, "no result could be stored")
    with engine.begin() as conn:
        status, worker = conn.execute(
            sa.select(job_items.c.status, job_items.c.worker_id).where(job_items.c.id == item.id)
        ).one()
    assert (status, worker) == ("running", second.worker.id) and not _events(engine, job_id, "item_given_up")
    second.give_up(again, "no result could be stored")  # its holder still can
    assert len(_events(engine, job_id, "item_given_up")) == 1


def test_a_webhooks_final_delivery_recorded_twice_is_one_event(parts) -> None:  # noqa: F811
    engine = parts[0]
    job_id = _submit(parts, [b"img0"], hook="https://example.test/hook")
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(webhook_state="pending"))
    for queue, attempt in ((WorkQueue(engine, WorkerIdentity()), 1), (WorkQueue(engine, WorkerIdentity()), 2)):
        row = {
            "job_id": job_id,
            "delivery_id": "d1",
            "event": "job.completed",
            "attempt": attempt,
            "url": "https://example.test/hook",
            "status_code": 200,
            "delivered": True,
        }
        queue.record_delivery(row, "delivered")
    assert [event["detail"] for event in _events(engine, job_id, "webhook_delivered")] == [{"attempts": 1}]


def test_a_retention_sweep_reports_every_count_of_its_purges(parts) -> None:  # noqa: F811
    """The sweep added up jobs, items and objects only: its report and audit entry said 0 inputs."""
    engine, objects, _ = parts
    for payloads in ([b"a", b"b"], [b"c", b"d", b"e"]):
        JobStore(engine).cancel_job(_submit(parts, payloads))  # finished, so a retention of 0 s expires them
    report = sweep(engine, objects, retention_s=0.0, now=time.time() + 1)
    assert (report.jobs, report.items, report.inputs, report.objects) == (2, 5, 5, 5)
