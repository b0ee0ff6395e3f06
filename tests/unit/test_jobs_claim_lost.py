"""Review of the job loop's claims: a claim whose commit went through but whose answer was lost (the connection to
PostgreSQL dropped during COMMIT: an OperationalError, retried by `StoreCalls.durable`) left its items running under
this live worker, which no loop runs and no orphan sweep requeues (the worker is alive): the job never finished.
Real SQLite store, the fake service of the runner tests."""

import asyncio
from collections import Counter

import pytest
import sqlalchemy as sa

from serving.jobs import outage
from serving.jobs.records import ClaimedItem
from serving.jobs.store import JobStore
from serving.jobs.tables import job_results
from tests.unit.test_jobs_runner import FakeService, _runner, _submit, parts  # noqa: F401 - fixture

pytestmark = pytest.mark.unit


def test_items_of_a_claim_whose_answer_was_lost_are_run_and_the_job_finishes(
    parts,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outage, "FIRST_DELAY_S", 0.0)
    payloads = [f"img{i}".encode() for i in range(10)]
    job_id = _submit(parts, payloads)
    service = FakeService()
    runner = _runner(parts, service)
    runner.settings = runner.settings.model_copy(update={"poll_interval_s": 0.01})
    claim, lost = runner.queue.claim, []

    def claim_answer_lost_once(job: str, limit: int) -> list[ClaimedItem]:
        claimed = claim(job, limit)  # committed
        if not lost:
            lost.extend(claimed)
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionResetError("connection reset by peer"))
        return claimed

    runner.queue.claim = claim_answer_lost_once  # type: ignore[method-assign]
    store = JobStore(parts[0])

    async def until_ended() -> None:
        for _ in range(50):  # polls of 10 ms
            if store.get_job(job_id).status not in ("queued", "running"):
                return
            await runner._step()

    asyncio.run(asyncio.wait_for(until_ended(), 30))
    assert lost, "the first claim's answer was lost"
    job = store.get_job(job_id)
    assert job.status == "completed" and job.counts["done"] == 10, (job.status, job.counts)
    with parts[0].begin() as conn:
        rows = conn.execute(sa.select(job_results.c.idx).where(job_results.c.job_id == job_id)).all()
    written = Counter(int(row.idx) for row in rows)
    assert written == Counter(range(10)) and set(service.calls.values()) == {1}
    assert job.attempts == 10, "an item of the lost claim never ran: its dispatch is not counted"
