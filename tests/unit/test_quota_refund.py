"""Synchronous inference charges the daily image quota before its work; a request that then fails on the server's
side (a 5xx) gets its images back, one the client caused (a 4xx) keeps the charge (found by a review: every failure
kept its charge, so a client retrying through an overload paid for each 503)."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pipelines.errors import ImageInputError
from serving.admission import ADMITTED_AT, REPLICA_LIMIT
from serving.errors import BadRequestError, ModelUnavailableError, OverloadedError, RequestTooLargeError
from serving.jobs.database import create_store_engine, migrate
from serving.security.errors import QuotaExceededError
from serving.security.gate import CURRENT_PRINCIPAL, SecurityGate
from serving.security.principal import Principal
from serving.security.settings import SecuritySettings
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def _gate(engine: sa.Engine) -> SecurityGate:
    return SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))


def _caller(key_id: str, quota: int) -> Principal:
    return Principal(key_id=key_id, tenant="q", role="analyst", quota_images_per_day=quota)


SERVER_SIDE = [
    RuntimeError("a bug"),  # internal
    ModelUnavailableError("no model"),
    OverloadedError("busy"),
    sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")),  # store_unavailable
]
CLIENT_SIDE = [
    BadRequestError("bad"),
    RequestTooLargeError("big"),
    ImageInputError("not an image"),
]


@pytest.mark.parametrize(("error", "refunded"), [(e, True) for e in SERVER_SIDE] + [(e, False) for e in CLIENT_SIDE])
def test_the_gate_refunds_server_failures_only(engine: sa.Engine, error: Exception, refunded: bool) -> None:
    gate = _gate(engine)

    async def run() -> None:
        CURRENT_PRINCIPAL.set(_caller("k1", 2))
        await gate.charge_images(2)
        await gate.refund_failed(2, error)
        if refunded:
            await gate.charge_images(2)  # both images back
        with pytest.raises(QuotaExceededError):
            await gate.charge_images(1)

    asyncio.run(run())


def test_a_jobs_images_are_not_refunded_twice(engine: sa.Engine) -> None:
    """Work the batch loop does for a job is charged at submission (serving.jobs.service), never here."""
    gate = _gate(engine)

    async def run() -> None:
        CURRENT_PRINCIPAL.set(Principal(key_id=None, tenant="q", role="analyst", source="job"))
        await gate.refund_failed(5, OverloadedError("busy"))
        assert gate.usage is not None and gate.usage._pending == {}

    asyncio.run(run())


# ---- through the service (serving/service.py and serving/image_ops.py call `refund_failed`) -----------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("quota_refund")
    service, _ = tiny_local_service(root)
    engine = create_store_engine(f"sqlite:///{root / 'db.sqlite3'}")
    migrate(engine)
    service.gate = _gate(engine)
    yield service
    service.gate = None


def _as(caller: Principal, request: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        CURRENT_PRINCIPAL.set(caller)
        return await request()

    return call


def test_requests_shed_as_overloaded_give_their_images_back(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two classify requests shed with 503 (they waited past the queue budget), then the quota of 2 is still whole."""
    caller = _caller("shed", 2)
    monkeypatch.setattr(REPLICA_LIMIT, "max_queue_wait_s", 1.0)

    async def run() -> None:
        ADMITTED_AT.set(time.monotonic() - 60.0)  # admitted a minute ago: the decode stage sheds it
        for _ in range(2):
            with pytest.raises(OverloadedError):
                await service.classify([jpeg()])
        ADMITTED_AT.set(None)
        for _ in range(2):
            await service.classify([jpeg()])
        with pytest.raises(QuotaExceededError):
            await service.classify([jpeg()])

    asyncio.run(_as(caller, run)())


def test_a_bad_image_keeps_its_charge(service: Any) -> None:
    """The client's error: the image was charged and stays charged (true before and after the refunds)."""
    caller = _caller("bad", 2)

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(ImageInputError):
                await service.classify([b"not an image at all"])
        with pytest.raises(QuotaExceededError):
            await service.classify([jpeg()])

    asyncio.run(_as(caller, run)())


def test_an_image_operation_that_fails_on_the_server_gives_its_image_back(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.convert import ConvertOptions
    from pipelines.limits import DecodeLimits
    from serving import image_ops

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the converter")

    caller = _caller("convert", 1)
    operations = image_ops.ImageOperations(service, DecodeLimits())

    async def run() -> None:
        monkeypatch.setattr(image_ops, "convert_image", broken)
        with pytest.raises(RuntimeError):
            await operations.convert(jpeg(), ConvertOptions())
        monkeypatch.undo()
        await operations.convert(jpeg(), ConvertOptions())  # the quota of 1 is still whole
        with pytest.raises(QuotaExceededError):
            await operations.convert(jpeg(), ConvertOptions())

    asyncio.run(_as(caller, run)())
