"""The Ingress replica's own listeners without Ray: admission limit, HTTP listener sharing a port, and the
serve-config plumbing that moves them. The gRPC listener (generated stubs) is exercised for real in
tests/integration/test_grpc.py against both placements."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from serving.admission import REPLICA_LIMIT, InflightLimit
from serving.config.app_args import DirectIngressOptions
from serving.deployments.direct_ingress import DirectListeners, reuse_port_socket
from serving.errors import OverloadedError
from serving.http.middleware import AdmissionMiddleware
from serving.serve_control import listening_at
from serving.server import load_serve_config
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit


def free_port() -> int:
    with reuse_port_socket("127.0.0.1", 0) as sock:
        return sock.getsockname()[1]


@pytest.fixture
def replica_limit() -> Iterator[InflightLimit]:
    REPLICA_LIMIT.limit, REPLICA_LIMIT.inflight = 1, 0
    yield REPLICA_LIMIT
    REPLICA_LIMIT.limit, REPLICA_LIMIT.inflight = None, 0


def test_inflight_limit_refuses_only_beyond_the_limit_and_frees_slots() -> None:
    limit = InflightLimit(2)
    with limit.admit(), limit.admit():
        with pytest.raises(OverloadedError, match="2 requests in flight"):
            with limit.admit():
                pass
        assert limit.inflight == 2
    assert limit.inflight == 0
    with pytest.raises(RuntimeError), limit.admit():  # a failing request gives its slot back
        raise RuntimeError("boom")
    assert limit.inflight == 0
    unlimited = InflightLimit()
    assert all(unlimited.try_enter() for _ in range(10_000))


def blocking_app() -> tuple[FastAPI, asyncio.Event]:
    app = FastAPI()
    release = asyncio.Event()

    @app.post("/v1/classify")
    async def classify() -> dict[str, bool]:
        await release.wait()
        return {"ok": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    app.add_middleware(AdmissionMiddleware)
    return app, release


def test_admission_middleware_answers_json_503_at_the_limit_and_lets_probes_through(
    replica_limit: InflightLimit,
) -> None:
    app, release = blocking_app()

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/classify"))
            while replica_limit.inflight == 0:
                await asyncio.sleep(0.001)
            refused = await client.post("/v1/classify")
            probe = await client.get("/v2/health/ready")
            release.set()
            return await first, refused, probe, await client.post("/v1/classify")

    first, refused, probe, after = asyncio.run(scenario())
    assert first.status_code == 200 and after.status_code == 200
    assert refused.status_code == 503 and refused.json()["kind"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert probe.status_code == 200
    assert replica_limit.inflight == 0


def test_two_replicas_share_the_http_port_and_each_stop_closes_only_its_own() -> None:
    """SO_REUSEPORT: a second replica on the same host binds the same port; the kernel spreads connections."""
    port = free_port()
    options = DirectIngressOptions(http_port=port, grpc_port=None)

    async def scenario() -> list[int]:
        app, release = blocking_app()
        release.set()
        first, second = DirectListeners(options, 1 << 20), DirectListeners(options, 1 << 20)
        await first.start(None, app)
        await second.start(None, app)
        codes = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            codes.append((await client.post("/v1/classify")).status_code)
            await first.stop()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            codes.append((await client.post("/v1/classify")).status_code)  # the remaining replica answers
            await second.stop()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with pytest.raises(httpx.ConnectError):
                await client.post("/v1/classify")
        return codes

    assert asyncio.run(scenario()) == [200, 200]


def test_start_fails_loudly_when_the_port_is_held_without_reuseport() -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        options = DirectIngressOptions(http_port=holder.getsockname()[1], grpc_port=None)
        with pytest.raises(OSError):
            asyncio.run(DirectListeners(options, 1 << 20).start(None, FastAPI()))
    finally:
        holder.close()


def test_port_overrides_move_the_direct_listeners_and_the_banner_names_them(tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    single = load_serve_config(PROJECT_ROOT / "serve_config.yaml", http_port=18000, grpc_port=19000, placement="local")
    direct = single["applications"][0]["args"]["direct_ingress"]
    assert (direct["http_port"], direct["grpc_port"]) == (18000, 19000)
    assert listening_at(ServeDeploySchema.model_validate(single)) == "http://127.0.0.1:18000 (grpc port 19000)"
    graph = load_serve_config(PROJECT_ROOT / "serve_config.yaml", http_port=18000, grpc_port=19000)
    assert "direct_ingress" not in graph["applications"][0]["args"]
    assert listening_at(ServeDeploySchema.model_validate(graph)) == "http://127.0.0.1:18000 (grpc port 19000)"
    http_only = tmp_path / "http_only.yaml"
    http_only.write_text(
        "proxy_location: Disabled\napplications:\n  - name: a\n    import_path: x:y\n"
        "    args: {direct_ingress: {grpc_port: null}}\n"
    )
    moved = load_serve_config(http_only, http_port=18001, grpc_port=19001)
    assert moved["applications"][0]["args"]["direct_ingress"] == {"grpc_port": None, "http_port": 18001}


class _StoppingServer:
    should_exit = False


class _RecordingGrpc:
    def __init__(self) -> None:
        self.stopped = False

    async def stop(self, grace: float) -> None:
        self.stopped = True


@pytest.mark.parametrize("cancelled", ["stop", "uvicorn"])
def test_stop_keeps_its_own_cancellation_and_stops_after_uvicorns(cancelled: str) -> None:
    """stop() swallowed every CancelledError while it waited for uvicorn: a shutdown Ray cancelled went on to stop the
    gRPC server (10 s of grace) and the rest. uvicorn's own task ending cancelled is still a stop."""
    grpc = _RecordingGrpc()

    async def scenario() -> bool:
        listeners = DirectListeners.__new__(DirectListeners)
        listeners._http, listeners._grpc = _StoppingServer(), grpc  # type: ignore[assignment]
        listeners._http_task = asyncio.create_task(asyncio.sleep(100))  # uvicorn finishing in-flight requests
        stopping = asyncio.create_task(listeners.stop())
        await asyncio.sleep(0.05)
        (stopping if cancelled == "stop" else listeners._http_task).cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        return stopping.cancelled()

    stop_cancelled = asyncio.run(scenario())
    assert (stop_cancelled, grpc.stopped) == ((True, False) if cancelled == "stop" else (False, True))
