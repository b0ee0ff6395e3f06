"""Review of `Idempotency-Key` (serving.jobs.idempotency): the loser of a race for a key answers the winner's job even
when the winner's images and bytes leave no room in the tenant's quotas, instead of a quota refusal for a request
that was accepted (its retry with the same key answers the job)."""

import asyncio
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from serving.jobs import service as service_module
from serving.jobs.idempotency import IdempotencyClaim, IdempotencyKeyReusedError
from serving.jobs.intake import InputPart
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import jobs
from serving.security.errors import QuotaExceededError
from tests.unit.test_job_quota_refunds import CountingGate

pytestmark = pytest.mark.unit
SPEC = JobSpec("m", 1, ("classification",))
QUOTA = 10  # stored bytes: room for one request of two 4-byte images, not two


class QuotaGate(CountingGate):
    """A tenant with a stored-bytes quota and, optionally, a daily image quota."""

    def __init__(self, images_per_day: int | None = None) -> None:
        super().__init__()
        self.images_per_day = images_per_day

    async def tenant_policy(self, tenant: str) -> SimpleNamespace:
        return SimpleNamespace(quota_stored_bytes=QUOTA)

    async def charge_images(self, images: int) -> None:
        if self.images_per_day is not None and self.charged + images > self.images_per_day:
            raise QuotaExceededError("daily image quota reached", 3600.0)
        self.charged += images


def _parts(*contents: bytes) -> list[InputPart]:
    return [InputPart("image", f"{i}.jpg", io.BytesIO(data)) for i, data in enumerate(contents)]


def _service(tmp_path: Path, gate: QuotaGate) -> JobService:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'j.sqlite3'}", object_store=str(tmp_path / "o"))
    return JobService(SimpleNamespace(), settings, gate=gate)


def _winner_writes_after_the_lookup(monkeypatch: pytest.MonkeyPatch, gate: QuotaGate, same_request: bool) -> None:
    """The first lookup of the key finds nothing, and the other request (the winner) then writes its job with that key
    and is charged for its two images: both requests looked the key up before either wrote its job."""
    real_lookup, looked_up = service_module.keyed_job, []

    def lookup(engine: sa.Engine, tenant: str, claim: IdempotencyClaim) -> str | None:
        if not looked_up:
            looked_up.append(claim)
            winner = claim if same_request else IdempotencyClaim(claim.key, "0" * 64)
            items = [NewItem(f"{i}.jpg", "object", f"{i}" * 64, 4) for i in range(2)]
            JobStore(engine).create_job(SPEC, items, tenant=tenant, idempotency=winner)
            gate.charged += 2
            return None
        return real_lookup(engine, tenant, claim)

    monkeypatch.setattr(service_module, "keyed_job", lookup)


@pytest.mark.parametrize("full", ["stored_bytes", "images_per_day"])
def test_the_loser_of_a_race_for_a_key_answers_the_winners_job_when_the_winner_filled_a_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: str
) -> None:
    gate = QuotaGate(images_per_day=2 if full == "images_per_day" else None)
    service = _service(tmp_path, gate)
    _winner_writes_after_the_lookup(monkeypatch, gate, same_request=True)

    async def scenario() -> None:
        submitted = await service.submit_with_key(SPEC, _parts(b"abcd", b"efgh"), key="k")
        assert submitted.replayed and submitted.job.total == 2  # the winner's job, not a 429 quota_exceeded

    asyncio.run(scenario())
    assert gate.charged == 2  # the winner's images only: the loser's were given back (or never charged)
    with service.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 1


def test_the_loser_of_a_race_with_another_request_under_the_key_is_422_not_a_quota_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = QuotaGate()
    service = _service(tmp_path, gate)
    _winner_writes_after_the_lookup(monkeypatch, gate, same_request=False)
    with pytest.raises(IdempotencyKeyReusedError):
        asyncio.run(service.submit_with_key(SPEC, _parts(b"abcd", b"efgh"), key="k"))
    assert gate.charged == 2


def test_a_quota_refusal_without_a_race_is_still_a_quota_refusal(tmp_path: Path) -> None:
    gate = QuotaGate()
    service = _service(tmp_path, gate)

    async def scenario() -> None:
        await service.submit_with_key(SPEC, _parts(b"abcd", b"efgh"), key="first")
        with pytest.raises(QuotaExceededError):
            await service.submit_with_key(SPEC, _parts(b"ijkl", b"mnop"), key="second")

    asyncio.run(scenario())
    assert gate.charged == 2
