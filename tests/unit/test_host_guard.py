"""With auth off, the direct HTTP listener refuses requests addressed to another host or sent from another
origin (DNS rebinding, cross-site posts from a page the developer opens). The real-server check is in
tests/integration/test_local_placement.py."""

from collections.abc import Iterable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.http.host_guard import LoopbackHostGuard
from serving.security.settings import SecuritySettings

pytestmark = pytest.mark.unit


def _client(extra: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> TestClient:
    app = FastAPI()

    @app.api_route("/v1/jobs", methods=["GET", "POST"])
    def jobs() -> dict[str, str]:
        return {"jobs": "the developer's"}

    return TestClient(LoopbackHostGuard(app, extra, cors_origins), base_url="http://127.0.0.1:8000")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "127.0.0.2", "LOCALHOST"])
def test_loopback_names_pass(host: str) -> None:
    assert _client().get("/v1/jobs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebound.example:8000"},  # DNS rebinding: the attacker's name, resolved to 127.0.0.1
        {"Host": ""},
        {"Host": "127.0.0.1:8000", "Origin": "https://evil.example"},  # a cross-site form post
        {"Host": "127.0.0.1:8000", "Origin": "null"},  # a sandboxed frame or a file:// page
        {"Host": "[::1"},  # hosts that do not parse: a plain-text 500 before (urlsplit's ValueError)
        {"Host": "127.0.0.1:8000", "Origin": "http://[zz"},
    ],
)
def test_another_host_or_origin_is_refused(headers: dict[str, str]) -> None:
    from serving.metrics import ERRORS

    refusals = ERRORS.labels("(listener)", "forbidden_host")
    before = refusals._value.get()
    answer = _client().post("/v1/jobs", headers=headers)
    assert answer.status_code == 403 and answer.json()["kind"] == "forbidden_host", answer.text
    assert "the developer's" not in answer.text
    assert answer.headers["connection"] == "close"  # its body is never read
    assert refusals._value.get() == before + 1  # counted, as every error is (it was not)


def test_same_origin_and_allowed_names_pass() -> None:
    client = _client(SecuritySettings.from_env({"IMGSERVE_ALLOWED_HOSTS": " Devbox.lan , other"}).allowed_hosts)
    assert client.post("/v1/jobs", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200  # the web UI
    assert client.get("/v1/jobs", headers={"Host": "devbox.lan:8000"}).status_code == 200
    assert client.get("/v1/jobs", headers={"Host": "evil.example"}).status_code == 403
    assert _client(frozenset({"*"})).get("/v1/jobs", headers={"Host": "anything"}).status_code == 200


def test_an_origin_listed_for_cors_passes_and_others_do_not() -> None:
    """IMGSERVE_CORS_ORIGINS lets those pages call the API; with auth off (`make serve`'s default) the guard refused
    them all the same (403 forbidden_host), so CORS worked only with auth on."""
    origins = SecuritySettings.from_env({"IMGSERVE_CORS_ORIGINS": "http://app.example"}).cors_origins
    client = _client(cors_origins=origins)
    assert client.post("/v1/jobs", headers={"Origin": "http://app.example"}).status_code == 200
    assert client.post("/v1/jobs", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/v1/jobs", headers={"Origin": "https://app.example"}).status_code == 403  # another origin
    # the Host must still be this machine's: a rebinding page cannot name an allowed origin to get in
    assert client.get("/v1/jobs", headers={"Host": "app.example", "Origin": "http://app.example"}).status_code == 403
    # `*` lets no origin past the guard: with auth off every caller is the anonymous admin
    star = _client(cors_origins=["*", "http://app.example"])
    assert star.post("/v1/jobs", headers={"Origin": "https://evil.example"}).status_code == 403
    assert star.post("/v1/jobs", headers={"Origin": "http://app.example"}).status_code == 200


def test_header_names_are_matched_in_any_case() -> None:
    """ASGI servers give lower-case names, but the guard does not rely on it: an `Origin` spelled with a capital
    letter passed before (raw ASGI scope)."""
    import asyncio

    async def app(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]

    def status(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(LoopbackHostGuard(app)({"type": "http", "headers": headers}, None, send))  # type: ignore[arg-type]
        return sent[0]["status"]

    assert status([(b"Host", b"localhost")]) == 200
    assert status([(b"host", b"localhost"), (b"Origin", b"https://evil.example")]) == 403
    assert status([(b"HOST", b"rebound.example")]) == 403
