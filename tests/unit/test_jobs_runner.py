"""The job loop with a fake service (no Ray): bounded concurrency, per-item errors, retries, webhooks."""

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from pipelines.errors import InvalidImageError
from serving.errors import ModelUnavailableError, OverloadedError
from serving.jobs import runner as runner_module
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import JobStoreUnavailableError
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.results import csv_lines
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.webhooks import SIGNATURE_HEADER, WebhookSender, verify
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from serving.postprocess import Prediction
from serving.requests import ImageOptions
from serving.service import Analysis, Classification

pytestmark = pytest.mark.unit
SECRET = "s3cret"
HOOK_ADDRESS = "93.184.215.14"  # what hooks.test "resolves" to: a public address (the mock transport connects nowhere)


def _resolve(host: str, port: int) -> list[str]:
    assert host == "hooks.test", host
    return [HOOK_ADDRESS]


class FakeService:
    """Stands in for InferenceService.analyze: counts calls per input and the most in flight at once."""

    def __init__(self, overload_once: frozenset[bytes] = frozenset()):
        self.calls: Counter[bytes] = Counter()
        self.active = self.max_active = 0
        self.overload_once = overload_once

    def served_entry(self, name: str | None) -> object:
        if name != "m":
            raise ModelUnavailableError(f"model '{name}' is not available")
        return object()

    async def analyze(
        self, images: list[bytes], options: ImageOptions | None = None, count_quality: bool = True
    ) -> list[Analysis]:
        (data,) = images
        self.calls[data] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.005)
        finally:
            self.active -= 1
        if data.startswith(b"bad"):
            raise InvalidImageError("cannot decode image: truncated")
        if data in self.overload_once and self.calls[data] == 1:
            raise OverloadedError("server is overloaded")
        return [Analysis(classification=Classification("m", [Prediction(data.decode(), 7, 0.5)], 1.0))]


@pytest.fixture
def parts(tmp_path: Path) -> tuple[sa.Engine, ObjectStore, JobSettings]:
    settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        object_store=str(tmp_path / "objects"),
        concurrency=4,
        webhook_secret=SECRET,
        webhook_backoff_s=0.01,
        webhook_max_attempts=3,
    )
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    return engine, ObjectStore(settings.object_store), settings


def _runner(
    parts: tuple[sa.Engine, ObjectStore, JobSettings], service: FakeService, client: httpx.AsyncClient | None = None
) -> JobRunner:
    engine, objects, settings = parts
    queue = WorkQueue(engine, WorkerIdentity())
    webhooks = WebhookSender(queue, settings, client, resolver=_resolve)
    return JobRunner(queue, WorkerRegistry(engine), objects, service, settings, webhooks)


def _submit(
    parts: tuple[sa.Engine, ObjectStore, JobSettings], payloads: list[bytes], model: str = "m", hook: str | None = None
) -> str:
    engine, objects, _ = parts
    items = [NewItem(f"{i}.jpg", "object", objects.put(p), len(p)) for i, p in enumerate(payloads)]
    return JobStore(engine).create_job(JobSpec(model, 1, ("classification",), hook), items)


def test_items_run_with_bounded_concurrency_and_fail_one_by_one(parts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "RETRY_DELAY_S", 0.0)
    payloads = [f"img{i}".encode() for i in range(30)] + [b"bad-one"]
    service = FakeService(overload_once=frozenset({b"img3"}))
    job_id = _submit(parts, payloads)
    runner = _runner(parts, service)
    job = JobStore(parts[0]).get_job(job_id)
    finished = asyncio.run(runner.run_job(job))
    assert finished is not None and finished.status == "completed"
    assert finished.counts["done"] == 30 and finished.counts["failed"] == 1
    assert 1 < service.max_active <= 4
    # overloaded once, retried: the refusal is not counted as a dispatch (a crash-prone item it would mimic)
    assert service.calls[b"img3"] == 2 and finished.rerun_items == 0 and finished.attempts == 31
    rows = {r.name: r for r in JobStore(parts[0]).results_page(job_id)}
    assert rows["30.jpg"].error_kind == "invalid_image" and "truncated" in (rows["30.jpg"].error or "")
    assert rows["5.jpg"].result == {
        "classification": {
            "model": "m",
            "model_version": "",
            "predictions": [{"label": "img5", "index": 7, "score": 0.5}],
            "timing_ms": 1.0,
            "stage_ms": {},
        }
    }
    csv_text = csv_lines([rows["5.jpg"], rows["30.jpg"]])
    assert csv_text.splitlines()[0] == "5,5.jpg,done,m,img5,0.500000,,,,,"  # no output columns for a classifier job
    assert csv_text.splitlines()[1].startswith("30,30.jpg,failed,m,,,invalid_image,")


def test_unservable_model_fails_the_job(parts) -> None:
    job_id = _submit(parts, [b"img"], model="gone")
    runner = _runner(parts, FakeService())
    assert asyncio.run(runner.run_job(JobStore(parts[0]).get_job(job_id))) is None
    job = JobStore(parts[0]).get_job(job_id)
    assert job.status == "failed" and "gone" in (job.error or "") and job.counts["cancelled"] == 1


def test_restart_reruns_only_items_in_flight(parts) -> None:
    job_id = _submit(parts, [f"img{i}".encode() for i in range(6)])
    queue = WorkQueue(parts[0])
    queue.mark_running(job_id)
    queue.claim(job_id, 2)  # the previous worker died with these two in flight
    service = FakeService()
    runner = _runner(parts, service)
    assert queue.requeue_orphans() == {job_id: 2}
    finished = asyncio.run(runner.run_job(JobStore(parts[0]).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 6
    assert finished.attempts == 8 and finished.rerun_items == 2
    assert all(count == 1 for count in service.calls.values())


def _hook_client(statuses: list[int], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_webhook_is_signed_retried_and_recorded(parts) -> None:
    seen: list[httpx.Request] = []
    job_id = _submit(parts, [b"img0", b"img1"], hook="http://hooks.test/done")
    runner = _runner(parts, FakeService(), _hook_client([500, 503, 200], seen))
    store = JobStore(parts[0])
    finished = asyncio.run(runner.run_job(store.get_job(job_id)))
    assert finished is not None and finished.webhook_state == "pending"
    assert asyncio.run(runner.webhooks.deliver(finished)) is True
    assert len(seen) == 3
    body = seen[-1].content
    assert verify(body, SECRET.encode(), seen[-1].headers[SIGNATURE_HEADER])
    assert not verify(body + b" ", SECRET.encode(), seen[-1].headers[SIGNATURE_HEADER])
    assert seen[-1].headers[SIGNATURE_HEADER].startswith("t=")
    # sent to the checked address, with the name the client gave as the Host header
    assert seen[-1].url.host == HOOK_ADDRESS and seen[-1].headers["host"] == "hooks.test"
    document = json.loads(body)
    assert document["job_id"] == job_id and document["status"] == "completed" and document["counts"]["done"] == 2
    assert len({r.headers["X-Imgserve-Delivery"] for r in seen}) == 1
    deliveries = store.deliveries([job_id])
    assert [(d["attempt"], d["status_code"], d["error"], d["delivered"]) for d in deliveries] == [
        (1, 500, "5xx", False),
        (2, 503, "5xx", False),
        (3, 200, None, True),
    ]
    assert store.get_job(job_id).webhook_state == "delivered"
    assert asyncio.run(runner.webhooks.deliver(store.get_job(job_id))) is False  # never twice
    assert len(seen) == 3


def test_webhook_permanent_4xx_stops_at_once(parts) -> None:
    seen: list[httpx.Request] = []
    job_id = _submit(parts, [b"img0"], hook="http://hooks.test/done")
    runner = _runner(parts, FakeService(), _hook_client([404], seen))
    finished = asyncio.run(runner.run_job(JobStore(parts[0]).get_job(job_id)))
    assert finished is not None and asyncio.run(runner.webhooks.deliver(finished)) is False
    assert len(seen) == 1 and JobStore(parts[0]).get_job(job_id).webhook_state == "failed"


def test_a_second_loop_passes_over_a_job_whose_items_another_loop_holds(parts) -> None:
    """Two job loops on one store (two Ingress replicas): while one holds a job's last items, the other used to pick
    that job again and again without a pause (hundreds of store calls a second), writing a 'resumed' event each time.
    It now starts the next job; the held job keeps its one 'started' event."""
    first = _submit(parts, [b"img0", b"img1"])
    second = _submit(parts, [b"img2"])
    holder = WorkQueue(parts[0], WorkerIdentity())
    holder.mark_running(first)
    assert len(holder.claim(first, 2)) == 2  # every remaining item of the first job is in flight on the other loop
    runner = _runner(parts, FakeService())
    calls = Counter[str]()
    next_job = runner.queue.next_job

    def counted() -> object:
        calls["next_job"] += 1
        return next_job()

    runner.queue.next_job = counted  # type: ignore[method-assign]

    async def steps() -> None:
        for _ in range(5):
            await runner._step()

    asyncio.run(asyncio.wait_for(steps(), 30))
    store = JobStore(parts[0])
    assert store.get_job(second).status == "completed", "the next job ran while the first one's items were held"
    events = Counter(e["event"] for e in store.events(first))
    assert events["started"] == 1 and events["resumed"] == 0, events
    assert store.get_job(first).counts["running"] == 2


def test_an_item_whose_result_cannot_be_stored_fails_instead_of_staying_running(
    parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result the store refuses with an error that is not an outage (PostgreSQL's json column and a NaN token): the
    item stayed running under a live worker, its job never finished and every later job waited behind it."""
    monkeypatch.setattr(runner_module, "RETRY_DELAY_S", 0.0)
    job_id = _submit(parts, [b"img0", b"img1"])
    runner = _runner(parts, FakeService())
    record = runner.queue.record
    refused = {"img1": 0}

    def refusing(item, outcome):  # type: ignore[no-untyped-def]
        if item.name == "1.jpg" and outcome.result is not None:
            refused["img1"] += 1
            raise sa.exc.DataError("INSERT INTO job_results ...", {}, Exception('Token "NaN" is invalid'))
        return record(item, outcome)

    runner.queue.record = refusing  # type: ignore[method-assign]
    finished = asyncio.run(asyncio.wait_for(runner.run_job(JobStore(parts[0]).get_job(job_id)), 30))
    assert finished is not None and finished.status == "completed" and refused["img1"] == 1
    rows = {r.name: r for r in JobStore(parts[0]).results_page(job_id)}
    assert rows["0.jpg"].status == "done" and rows["1.jpg"].status == "failed"
    assert rows["1.jpg"].error_kind == "internal" and "could not be stored" in (rows["1.jpg"].error or "")


def test_items_handed_back_after_a_cancel_are_cancelled_not_pending(parts) -> None:
    """Items in flight at a cancel that then hit a transient error (overloaded) went back to pending in a cancelled
    job, which nothing claims: the finished job showed pending items for ever. The same for a dead worker's items."""
    job_id = _submit(parts, [f"img{i}".encode() for i in range(4)])
    queue = WorkQueue(parts[0], WorkerIdentity())
    queue.mark_running(job_id)
    held = queue.claim(job_id, 3)
    JobStore(parts[0]).cancel_job(job_id)
    queue.release(held[0])  # overloaded after the cancel
    queue.release(held[1], counted=False)
    orphans = WorkQueue(parts[0])  # no worker: its items count as a dead worker's
    assert orphans.requeue_orphans() == {job_id: 1}
    counts = JobStore(parts[0]).get_job(job_id).counts
    assert counts["pending"] == 0 and counts["running"] == 0 and counts["cancelled"] == 4, counts


def test_an_object_store_that_cannot_confirm_a_result_hands_the_item_back(
    parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a result checks its stored objects on the object store (`hold_objects`); a store still failing past
    IMGSERVE_REMOTE_TIMEOUT_S raises JobStoreUnavailableError there. That is the store's trouble, not the item's: the
    item is tried again (its result was not recorded, so it runs once more and is recorded once), where it failed
    at once as `internal` "the item's result could not be stored"."""
    monkeypatch.setattr(runner_module, "RETRY_DELAY_S", 0.0)
    job_id = _submit(parts, [b"img0", b"img1"])
    runner = _runner(parts, FakeService())
    record = runner.queue.record
    refused = {"img1": 0}

    def store_down_once(item, outcome):  # type: ignore[no-untyped-def]
        if item.name == "1.jpg" and outcome.result is not None and not refused["img1"]:
            refused["img1"] += 1
            raise JobStoreUnavailableError("the object store did not say whether stored objects are there: 503")
        return record(item, outcome)

    runner.queue.record = store_down_once  # type: ignore[method-assign]
    finished = asyncio.run(asyncio.wait_for(runner.run_job(JobStore(parts[0]).get_job(job_id)), 30))
    assert finished is not None and finished.status == "completed" and refused["img1"] == 1
    rows = {r.name: r for r in JobStore(parts[0]).results_page(job_id)}
    assert rows["0.jpg"].status == "done" and rows["1.jpg"].status == "done", rows["1.jpg"]
    assert len(JobStore(parts[0]).results_page(job_id)) == 2  # recorded once each


def test_an_object_store_failing_every_attempt_fails_the_item_with_the_stores_reason(
    parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "RETRY_DELAY_S", 0.0)
    job_id = _submit(parts, [b"img0"])
    runner = _runner(parts, FakeService())
    record = runner.queue.record
    died: list[object] = []
    item_died = runner._item_died

    async def recording_death(job, item, error):  # type: ignore[no-untyped-def]
        died.append(error)
        await item_died(job, item, error)

    def store_down(item, outcome):  # type: ignore[no-untyped-def]
        if outcome.result is not None:
            raise JobStoreUnavailableError("the object store did not say whether stored objects are there: 503")
        return record(item, outcome)

    runner.queue.record = store_down  # type: ignore[method-assign]
    runner._item_died = recording_death  # type: ignore[method-assign]
    finished = asyncio.run(asyncio.wait_for(runner.run_job(JobStore(parts[0]).get_job(job_id)), 30))
    assert finished is not None and finished.status == "failed" and not died, died  # its only item failed, no crash
    (row,) = JobStore(parts[0]).results_page(job_id)
    assert row.status == "failed" and row.error_kind == "store_unavailable" and "503" in (row.error or ""), row
