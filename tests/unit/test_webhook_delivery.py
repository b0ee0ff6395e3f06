"""A job's webhook is POSTed by one job loop at a time: two Ingress replicas (each runs a loop) on one store used to
deliver every notification twice, with clashing attempt numbers. And an attempt lasts at most the webhook timeout,
however slowly the receiver answers."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity

pytestmark = pytest.mark.unit


def _resolve(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]  # a public address; the mock transport connects nowhere


def _world(tmp_path: Path, **settings_fields: float) -> tuple[JobStore, WorkQueue, JobSettings, str]:
    settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        object_store=str(tmp_path / "objects"),
        webhook_secret="s" * 32,
        webhook_max_attempts=3,
        **settings_fields,
    )
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    objects = ObjectStore(settings.object_store)
    store = JobStore(engine)
    job_id = store.create_job(
        JobSpec("m", 1, ("classification",), "http://hooks.test/done"),
        [NewItem("a.jpg", "object", objects.put(b"x"), 1)],
    )
    queue = WorkQueue(engine, WorkerIdentity())
    queue.mark_running(job_id)
    return store, queue, settings, job_id


def _ended(store: JobStore, queue: WorkQueue, job_id: str) -> None:
    """The job ends with its webhook pending, as the runner leaves it."""
    from serving.jobs.tables import jobs

    with store.engine.begin() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(status="completed", webhook_state="pending", finished_at=1.0)
        )


@pytest.mark.parametrize("statuses", [[200], [503, 200]])
def test_two_loops_post_each_attempt_once(tmp_path: Path, statuses: list[int]) -> None:
    store, queue, settings, job_id = _world(tmp_path, webhook_backoff_s=0.2)
    _ended(store, queue, job_id)
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(0.1)  # both loops are in flight at once
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    async def scenario() -> list[bool]:
        senders = [
            WebhookSender(queue, settings, httpx.AsyncClient(transport=httpx.MockTransport(handler)), resolver=_resolve)
            for _ in range(2)
        ]
        job = store.get_job(job_id)
        outcomes = await asyncio.gather(*(sender.deliver(job) for sender in senders))
        for _ in range(3):  # a loop that left it picks it up again at its next poll, as the job loop does
            if store.get_job(job_id).webhook_state != "pending":
                break
            outcomes += await asyncio.gather(*(sender.deliver(store.get_job(job_id)) for sender in senders))
        return outcomes

    outcomes = asyncio.run(scenario())
    assert len(seen) == len(statuses) and outcomes.count(True) == 1
    rows = [(d["attempt"], d["status_code"]) for d in store.deliveries([job_id])]
    assert rows == [(i + 1, status) for i, status in enumerate(statuses)]
    assert store.get_job(job_id).webhook_state == "delivered"


def test_a_loop_that_died_mid_delivery_is_taken_over_when_its_claim_runs_out(tmp_path: Path) -> None:
    store, queue, settings, job_id = _world(tmp_path)
    _ended(store, queue, job_id)
    assert queue.claim_webhook(job_id, "dead-loop", lease_s=60.0)
    assert not queue.claim_webhook(job_id, "live-loop", lease_s=60.0)
    assert queue.claim_webhook(job_id, "live-loop", lease_s=60.0, now=time.time() + 61.0)


def test_an_attempt_lasts_at_most_the_webhook_timeout(tmp_path: Path) -> None:
    """httpx's timeout bounds each read: a receiver trickling its answer held an attempt 6 s with a 1 s timeout."""
    store, queue, settings, job_id = _world(tmp_path, webhook_timeout_s=0.5, webhook_backoff_s=0.01)
    _ended(store, queue, job_id)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3.0)
        return httpx.Response(200)

    async def scenario() -> bool:
        client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
        return await WebhookSender(queue, settings, client, resolver=_resolve).deliver(store.get_job(job_id))

    start = time.monotonic()
    assert asyncio.run(scenario()) is False
    assert time.monotonic() - start < 6.0  # three attempts of at most 0.5 s each (~1.6 s), not 3 s each (9 s)
    assert [d["error"] for d in store.deliveries([job_id])] == ["no_response"] * 3


def test_after_a_rotation_deliveries_verify_with_the_old_secret_and_the_new(tmp_path: Path) -> None:
    """The replica cached a tenant's secret for a minute and then signed with the new one only: a receiver still on
    the old secret (or already on the new one, within that minute) refused the delivery, a permanent failure."""
    from serving.jobs.webhooks import sign, verify
    from serving.jobs.worker import TenantSecrets
    from serving.security.tenants import ROTATION_GRACE_S, TenantStore

    store, queue, settings, job_id = _world(tmp_path)
    tenants = TenantStore(store.engine)
    old = tenants.webhook_secret("default")
    secrets_of = TenantSecrets(store.engine, None)
    job = store.get_job(job_id)
    assert secrets_of(job) == (old,)
    new = tenants.webhook_secret("default", rotate=True)
    assert new != old and secrets_of(job) == (new, old)  # at once, no cache
    header = sign(b"{}", secrets_of(job))
    assert verify(b"{}", new, header) and verify(b"{}", old, header)
    assert not verify(b"{}", b"whsec_someone_else", header)
    later = tenants.signing_secrets("default", now=time.time() + ROTATION_GRACE_S + 1)
    assert later == (new,)


def test_the_address_check_counts_in_the_attempt_time(tmp_path: Path) -> None:
    """The target's address check (DNS) ran outside the attempt's time limit: a hanging resolver could outlast the
    delivery's claim, and a second loop POST the same notification meanwhile."""
    store, queue, settings, job_id = _world(tmp_path, webhook_timeout_s=0.5, webhook_backoff_s=0.01)
    _ended(store, queue, job_id)

    def slow_resolve(host: str, port: int) -> list[str]:
        time.sleep(2.0)
        return ["93.184.215.14"]

    async def scenario() -> bool:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
        return await WebhookSender(queue, settings, client, resolver=slow_resolve).deliver(store.get_job(job_id))

    start = time.monotonic()
    assert asyncio.run(scenario()) is False
    assert time.monotonic() - start < 5.5  # three attempts of at most 0.5 s (the threads finish on their own)
    assert [d["error"] for d in store.deliveries([job_id])] == ["no_response"] * 3
