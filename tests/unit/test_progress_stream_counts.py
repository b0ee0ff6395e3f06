"""Progress streams are counted when they are opened and uncounted when their response ends (review findings): the
count went up only when a stream's generator first ran, so 40 opens at once by one tenant all passed its cap of 16;
and a stream whose client left while a write was blocked stayed counted until the garbage collector finalised its
generator (the tenant kept at 429 meanwhile). The route with a stand-in job service, driven by ASGI calls."""

import asyncio
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serving.errors import ServiceError, classify_error
from serving.http import job_routes, progress_streams
from serving.http.dependencies import get_job_service, get_principal
from serving.jobs.records import JobRecord
from serving.security.principal import Principal

pytestmark = pytest.mark.unit


class RunningJob:
    async def get(self, job_id: str, principal: Principal) -> JobRecord:
        await asyncio.sleep(0.01)  # a database read: the opens interleave here
        now = time.time()
        return JobRecord(
            id=job_id, status="running", model="m", top_k=5, stages=("classification",), webhook_url=None,
            webhook_state="none", total=10, error=None, created_at=now, started_at=now, finished_at=None,
            counts={"running": 1},
        )  # fmt: skip


class NoGate:
    required = False


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(job_routes.router)
    app.state.gate = NoGate()
    app.dependency_overrides[get_job_service] = RunningJob
    app.dependency_overrides[get_principal] = lambda: Principal(key_id="k", tenant="a", role="viewer")

    async def refused(request: Request, exc: Exception) -> JSONResponse:  # the app's own handler, less its metrics
        return JSONResponse({"kind": classify_error(exc).kind}, status_code=classify_error(exc).http_status)

    app.add_exception_handler(ServiceError, refused)
    return app


def _scope() -> dict[str, Any]:
    path = "/v1/jobs/j1/progress"
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"interval=0.1",
        "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip


async def _client(app: FastAPI, gone: asyncio.Event, statuses: list[int], blocked: asyncio.Event | None = None) -> None:
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif blocked is not None:
            await blocked.wait()  # a slow client: its socket's buffer is full, the write waits

    await app(_scope(), receive, send)


@pytest.fixture(autouse=True)
def no_streams_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_streams, "_open_streams", 0)
    monkeypatch.setattr(progress_streams, "_tenant_streams", progress_streams.Counter())


def test_opens_at_once_are_held_to_the_tenants_cap_and_all_uncounted_when_they_end() -> None:
    app, cap = _app(), progress_streams.MAX_TENANT_PROGRESS_STREAMS

    async def scenario() -> tuple[list[int], int]:
        gone, statuses = asyncio.Event(), []
        clients = [asyncio.create_task(_client(app, gone, statuses)) for _ in range(40)]
        await asyncio.sleep(0.5)
        open_then = progress_streams._tenant_streams["a"]
        gone.set()
        await asyncio.gather(*clients, return_exceptions=True)
        return statuses, open_then

    statuses, open_then = asyncio.run(scenario())
    assert sorted(statuses) == [200] * cap + [429] * (40 - cap), statuses  # 40 x 200 before
    assert open_then == cap
    assert progress_streams._tenant_streams["a"] == 0 and progress_streams._open_streams == 0


def test_a_client_gone_while_a_write_waits_is_uncounted_when_its_response_ends() -> None:
    app = _app()

    async def scenario() -> int:
        gone, never = asyncio.Event(), asyncio.Event()
        client = asyncio.create_task(_client(app, gone, [], blocked=never))
        await asyncio.sleep(0.3)
        assert progress_streams._tenant_streams["a"] == 1
        gone.set()
        await asyncio.gather(client, return_exceptions=True)
        return progress_streams._tenant_streams["a"]

    assert asyncio.run(scenario()) == 0  # 1 until a garbage collection before
