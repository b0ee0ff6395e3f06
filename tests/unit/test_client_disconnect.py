"""The direct listeners (an admission limit set): a client that disconnects while its inference request waits or
runs gives its admission slot back at once, its image is not run, and it is counted 499 (before: it kept its slot
and model time to the end, logged 200, while live clients got 503). In-process app over the tiny models."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.admission import REPLICA_LIMIT
from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.metrics import REQUESTS
from serving.placement import build_service, compose
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit
BATCH_S = 0.6  # how long the model takes per batch here


@pytest.fixture
def slow_app(tmp_path: Path) -> Iterator[tuple[Any, list[int]]]:
    """The app with the tiny model taking BATCH_S per batch of one image; the sizes of the batches run."""
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path)))
    stage = service.pipeline.models["tiny"]  # type: ignore[attr-defined]
    real = stage.backend.infer
    batches: list[int] = []

    def slow(batch: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(BATCH_S)
        batches.append(len(batch))
        return real(batch)

    stage.backend.infer = slow
    stage._queue.configure(1, 0.001)  # one image per batch: what was run is visible
    REPLICA_LIMIT.limit = 2
    try:
        yield create_http_app(service), batches
    finally:
        REPLICA_LIMIT.limit = None


def _requests_with_status(status: str) -> float:
    samples = REQUESTS.collect()[0].samples
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels["status"] == status)


async def _classify(app: Any, upstream_after_body: Callable[[list[int]], Awaitable[dict]]) -> list[int]:
    """POST /v1/classify as uvicorn calls the app; after the body, `receive` answers `upstream_after_body(sent)`."""
    body = jpeg()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    statuses: list[int] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream_after_body(statuses)

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses


async def _stays(statuses: list[int]) -> dict:
    await asyncio.Event().wait()  # a live client: its connection stays open
    return {"type": "http.disconnect"}


async def _leaves(statuses: list[int]) -> dict:
    await asyncio.sleep(0.05)  # its HTTP timeout fired: the connection closes
    return {"type": "http.disconnect"}


def test_a_client_that_leaves_frees_its_slot_and_its_image_is_not_run(slow_app: tuple[Any, list[int]]) -> None:
    app, batches = slow_app
    gone_before = _requests_with_status("499")

    async def main() -> tuple[list[int], list[int], list[int]]:
        first = asyncio.create_task(_classify(app, _stays))  # A: its batch runs 0 - BATCH_S
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(_classify(app, _leaves))  # B: queued behind A, leaves at ~0.1 s
        await asyncio.sleep(0.2)
        assert REPLICA_LIMIT.inflight == 1  # B's slot is back
        third = await _classify(app, _stays)  # C: admitted, not 503
        return await first, await gone, third

    first, gone, third = asyncio.run(asyncio.wait_for(main(), 20))
    assert first == [200] and third == [200] and gone == []
    assert batches == [1, 1]  # A's and C's images; B's was never run
    assert _requests_with_status("499") == gone_before + 1
    assert REPLICA_LIMIT.inflight == 0


def test_an_answered_request_is_not_cancelled_by_the_disconnect_that_follows(slow_app: tuple[Any, list[int]]) -> None:
    """Servers answer `http.disconnect` once the response is complete: that is no client leaving."""
    app, batches = slow_app
    gone_before = _requests_with_status("499")

    async def after_answer(statuses: list[int]) -> dict:
        while not statuses:
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    assert asyncio.run(asyncio.wait_for(_classify(app, after_answer), 20)) == [200]
    assert batches == [1] and _requests_with_status("499") == gone_before and REPLICA_LIMIT.inflight == 0


def test_a_request_cancelled_inside_the_app_is_counted_499_not_500() -> None:
    """Behind Ray's proxy a client that leaves cancels the replica's ASGI task: the metrics middleware counted that
    request as status 500 (a server error in the throughput panels and the access log, where a direct listener says
    499 for the same disconnect)."""
    from serving.http.middleware import RequestMetricsMiddleware

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    async def scenario() -> None:
        app = RequestMetricsMiddleware(slow)
        scope = {"type": "http", "path": "/v1/cancelled-probe", "method": "POST", "headers": []}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            pass

        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    def count(status: str) -> float:
        return sum(
            sample.value
            for metric in REQUESTS.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["status"] == status
        )

    before_500, before_499 = count("500"), count("499")
    asyncio.run(scenario())
    assert count("500") == before_500 and count("499") == before_499 + 1
