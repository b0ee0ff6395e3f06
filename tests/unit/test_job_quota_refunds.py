"""Images charged to the daily quota for a request the job store then refuses are given back: a 413 over the job's
item limit and a 409 for adding to a job no longer open used it up (only a stored-bytes refusal refunded), and adding
to a started job stored every input before saying no."""

import asyncio
import io
from hashlib import sha256
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.errors import RequestTooLargeError
from serving.jobs.errors import JobStateError
from serving.jobs.intake import InputPart
from serving.jobs.records import JobSpec
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings

pytestmark = pytest.mark.unit


class CountingGate:
    """The part of the SecurityGate the job service calls, counting the images charged and not refunded."""

    required = True

    def __init__(self) -> None:
        self.charged = 0

    async def tenant_policy(self, tenant: str) -> SimpleNamespace:
        return SimpleNamespace(quota_stored_bytes=None)

    async def charge_images(self, images: int) -> None:
        self.charged += images

    async def refund_images(self, images: int) -> None:
        self.charged -= images

    async def anonymize_forced(self) -> bool:
        return False


def _parts(count: int, first: int = 0) -> list[InputPart]:
    return [InputPart("image", f"{i}.jpg", io.BytesIO(b"image %d" % i)) for i in range(first, first + count)]


def test_refused_requests_use_no_images_of_the_day(tmp_path: Path) -> None:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'j.sqlite3'}", object_store=str(tmp_path / "o"))
    settings = settings.model_copy(update={"max_items": 5})
    gate = CountingGate()
    service = JobService(SimpleNamespace(), settings, gate=gate)
    spec = JobSpec("m", 1, ("classification",))

    async def scenario() -> None:
        with pytest.raises(RequestTooLargeError):
            await service.submit(spec, _parts(8))
        assert gate.charged == 0
        job = await service.submit(spec, _parts(2))
        assert gate.charged == 2
        with pytest.raises(JobStateError):
            await service.add_items(job.id, _parts(3, first=10))
        assert gate.charged == 2
        assert not any(service.objects().exists(sha256(b"image %d" % i).hexdigest()) for i in (10, 11, 12))
        open_job = await service.submit(spec, _parts(4, first=20), start=False)
        with pytest.raises(RequestTooLargeError):
            await service.add_items(open_job.id, _parts(2, first=30))  # 6 > 5
        assert gate.charged == 6

    asyncio.run(scenario())
