"""API keys on the client side, against small local servers that record what they were sent.

An HTTP server (http.server in a thread) and a gRPC server (grpc, in process, generic handlers with the
ImageService messages) keep every `authorization` they receive and answer either normally or with imgserve's
refusals: 401 / UNAUTHENTICATED, 403 / PERMISSION_DENIED, 429 / RESOURCE_EXHAUSTED rate_limited with
`Retry-After` (the body `{"error", "kind"}` and the `imgserve-error-kind` trailing metadata, as the server sends
them). Checked: the SDK (argument and IMGSERVE_API_KEY, every call, streams and batch jobs included), the CLI,
the closed-loop senders and the locust file send the key; the refusals become the typed errors with
`retry_after`; the key shows in no repr, str or CLI message. Only the image_service stubs are loaded (the OIP
`inference_pb2` clashes with tritonclient's descriptors in one process: tests/unit/test_edges_in_process.py).
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from loadtests.closed_loop import keyed_sender, run_level
from serving.cli import main as cli_main
from serving.client import AuthenticationError, Client, ImgServeError, PermissionDeniedError, RateLimitedError
from serving.client.auth import API_KEY_ENV, resolve_api_key
from serving.client.errors import make_error, parse_retry_after
from serving.grpc.stubs import load
from tests.paths import DATA, PROJECT_ROOT, require

pytestmark = pytest.mark.unit

pb = load("image_service_pb2")
KEY = "isk_0123456789ab_" + "S3cr3t-K3y_" * 3 + "abcdefghij"  # the documented shape: 12 hex id, 43 urlsafe chars
SECRET = KEY.split("_", 2)[2]  # what must never show anywhere
OTHER_KEY = "isk_ba9876543210_" + "x" * 43
CLASSIFICATION = {"model": "m", "predictions": [{"label": "cat", "index": 3, "score": 0.9}], "timing_ms": 1}
JOB = {"job_id": "j1", "status": "completed", "counts": {"total": 1, "done": 1, "failed": 0}, "progress": 1.0}
REFUSALS = {
    "unauthenticated": (401, "UNAUTHENTICATED", AuthenticationError, "missing or invalid API key"),
    "permission_denied": (403, "PERMISSION_DENIED", PermissionDeniedError, "role viewer may not classify"),
    "rate_limited": (429, "RESOURCE_EXHAUSTED", RateLimitedError, "rate limit of 5 requests/s exceeded"),
}


def test_key_shape_used_here_is_the_documented_one() -> None:
    from serving.security.keys import KEY_PATTERN  # the server's own definition of a key

    assert KEY_PATTERN.match(KEY) and KEY_PATTERN.match(OTHER_KEY) and len(SECRET) == 43


# ------------------------------------------------------------------------------------------------ local servers


@dataclass
class Recorder:
    """What a server saw (the `authorization` of each request, None when absent) and how it answers next."""

    url: str = ""
    seen: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    refuse: str | None = None  # a REFUSALS kind: answer every request with it
    retry_after: str | None = "3"

    def bearers(self) -> set[str | None]:
        return set(self.seen)


def _http_answer(recorder: Recorder, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    if recorder.refuse:
        status, _, _, message = REFUSALS[recorder.refuse]
        headers = (
            {"Retry-After": recorder.retry_after} if recorder.refuse == "rate_limited" and recorder.retry_after else {}
        )
        body = json.dumps({"error": message, "kind": recorder.refuse}).encode()
        return status, body, headers
    route = path.split("?", 1)[0]
    if route == "/v1/classify":
        return 200, json.dumps({"results": [CLASSIFICATION]}).encode(), {}
    if route == "/v1/analyze":
        return 200, json.dumps({"results": [{"classification": CLASSIFICATION}]}).encode(), {}
    if route == "/v1/models":
        return 200, json.dumps({"default_model": "m", "models": [{"name": "m", "state": "READY"}]}).encode(), {}
    if route == "/v1/jobs":
        return 200, json.dumps({"jobs": [JOB]}).encode(), {}
    if route == "/v1/batch" or (route.startswith("/v1/jobs/") and not route.endswith("/results")):
        return (202 if method == "POST" else 200), json.dumps(JOB).encode(), {}
    if route.endswith("/results"):
        line = {"index": 0, "name": "a.jpg", "status": "done", "result": {"classification": CLASSIFICATION}}
        return 200, (json.dumps(line) + "\n").encode(), {}
    return 404, b'{"error": "no route", "kind": "not_found"}', {}


@pytest.fixture
def http_server() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            recorder.seen.append(self.headers.get("Authorization"))
            recorder.paths.append(self.path)
            status, body, headers = _http_answer(recorder, self.command, self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def _grpc_refuse(recorder: Recorder, context: grpc.ServicerContext) -> None:
    """Record the call's authorization; abort it as the server would when `recorder.refuse` is set."""
    recorder.seen.append(dict(context.invocation_metadata()).get("authorization"))
    if recorder.refuse:
        _, code, _, message = REFUSALS[recorder.refuse]
        trailing = [("imgserve-error-kind", recorder.refuse)]
        if recorder.refuse == "rate_limited" and recorder.retry_after:
            trailing.append(("retry-after", recorder.retry_after))
        context.set_trailing_metadata(trailing)
        context.abort(getattr(grpc.StatusCode, code), message)


@pytest.fixture
def grpc_server() -> Iterator[Recorder]:
    recorder = Recorder()

    def classify(request: Any, context: grpc.ServicerContext) -> Any:
        _grpc_refuse(recorder, context)
        result = pb.Classification(model="m", predictions=[pb.Prediction(label="cat", index=3, score=0.9)])
        return pb.ClassifyResponse(results=[result for _ in request.images])

    def analyze(request: Any, context: grpc.ServicerContext) -> Any:
        _grpc_refuse(recorder, context)
        return pb.AnalyzeResponse(results=[pb.ImageAnalysis() for _ in request.images])

    def list_models(request: Any, context: grpc.ServicerContext) -> Any:
        _grpc_refuse(recorder, context)
        return pb.ListModelsResponse(default_model="m", models=[pb.ModelState(name="m", state="READY")])

    def analyze_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        if recorder.refuse != "rate_limited":  # the key and role are checked when the stream opens
            _grpc_refuse(recorder, context)
        else:
            recorder.seen.append(dict(context.invocation_metadata()).get("authorization"))
        for request in requests:
            if recorder.refuse == "rate_limited":  # each message is a request of the rate limit: its own error
                _, code, _, message = REFUSALS["rate_limited"]
                retry_s = float(recorder.retry_after or 0)
                error = pb.Error(code=code, kind="rate_limited", message=message, retry_after_s=retry_s)
                yield pb.AnalyzeStreamResponse(request_id=request.request_id, error=error)
            else:
                yield pb.AnalyzeStreamResponse(request_id=request.request_id)

    def unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, request.FromString, response.SerializeToString)

    handlers = {
        "Classify": unary(classify, pb.ClassifyRequest, pb.ClassifyResponse),
        "Analyze": unary(analyze, pb.AnalyzeRequest, pb.AnalyzeResponse),
        "ListModels": unary(list_models, pb.ListModelsRequest, pb.ListModelsResponse),
        "AnalyzeStream": grpc.stream_stream_rpc_method_handler(
            analyze_stream, pb.AnalyzeStreamRequest.FromString, pb.AnalyzeStreamResponse.SerializeToString
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("imgserve.v1.ImageService", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    recorder.url = f"grpc://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        server.stop(grace=None)


@pytest.fixture(params=["http", "grpc"])
def server(request: pytest.FixtureRequest) -> Recorder:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)


# ------------------------------------------------------------------------------------------------ the SDK sends it


def _every_call(client: Client) -> None:
    client.classify(b"jpeg")
    client.models()
    results = list(client.stream([b"a", ("frame-2", b"b")]))
    assert [r.request_id for r in results] == ["0", "frame-2"]


def test_sdk_sends_the_key_given_on_every_call(server: Recorder) -> None:
    with Client(server.url, retries=0, api_key=KEY) as client:
        _every_call(client)
    assert len(server.seen) >= 3 and server.bearers() == {f"Bearer {KEY}"}  # HTTP streams: one call per image


def test_sdk_reads_the_key_from_the_environment(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with Client(server.url, retries=0) as client:
        assert client.authenticated
        _every_call(client)
    assert server.bearers() == {f"Bearer {KEY}"}


def test_an_explicit_key_wins_and_an_empty_one_sends_none(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with Client(server.url, retries=0, api_key=OTHER_KEY) as client:
        client.models()
    with Client(server.url, retries=0, api_key="") as client:
        assert not client.authenticated
        client.models()
    assert server.seen == [f"Bearer {OTHER_KEY}", None]


def test_no_key_sends_no_authorization(server: Recorder) -> None:
    with Client(server.url, retries=0) as client:
        assert not client.authenticated
        _every_call(client)
    assert server.bearers() == {None}


def test_batch_jobs_send_the_key(http_server: Recorder, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    with Client(http_server.url, retries=0, api_key=KEY) as client:
        job = client.wait(client.submit_batch(tmp_path), poll_s=0.01)
        assert [r.name for r in client.job_results(job)] == ["a.jpg"]
        client.batch.jobs()
    assert len(http_server.seen) == 4 and http_server.bearers() == {f"Bearer {KEY}"}


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_refusals_become_typed_errors(server: Recorder, kind: str) -> None:
    status, code, error_type, message = REFUSALS[kind]
    server.refuse = kind
    with Client(server.url, retries=3, api_key=KEY) as client:
        with pytest.raises(error_type) as raised:
            client.classify(b"jpeg")
    error = raised.value
    assert isinstance(error, ImgServeError) and (error.code, error.kind, error.message) == (code, kind, message)
    assert error.status == (status if server.url.startswith("http") else None)
    assert not error.retryable and len(server.seen) == 1  # refusals are not retried
    if kind == "rate_limited":
        assert error.retry_after == 3.0
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in repr(error.__cause__)


@pytest.mark.parametrize("kind", ["permission_denied", "unauthenticated"])
def test_a_refused_stream_raises_the_typed_error(server: Recorder, kind: str) -> None:
    """A refused key or role is about the caller, not an image: it ends the stream on both transports (gRPC
    refuses the stream when it opens; over HTTP, one call per image, the first refused call ends it)."""
    server.refuse = kind
    with Client(server.url, retries=0, api_key=KEY) as client, pytest.raises(REFUSALS[kind][2]):
        list(client.stream([b"a", b"b", b"c"]))
    assert len(server.seen) == 1


def test_a_rate_limited_stream_item_is_its_error_and_the_stream_goes_on(server: Recorder) -> None:
    """The rate limit counts a stream's messages one by one: over gRPC a refused one is that item's error and the
    stream goes on (the server's AnalyzeStream); over HTTP the first 429 ended the stream by raising. Now both
    yield every item, each with a `RateLimitedError` carrying the server's Retry-After."""
    server.refuse = "rate_limited"
    with Client(server.url, retries=0, api_key=KEY) as client:
        results = list(client.stream([b"a", ("frame-2", b"b"), b"c"]))
    assert [r.request_id for r in results] == ["0", "frame-2", "2"]
    for result in results:
        assert not result.ok and isinstance(result.error, RateLimitedError)
        assert result.error.code == "RESOURCE_EXHAUSTED" and result.error.kind == "rate_limited"
        assert result.error.retry_after == 3.0
    assert len(server.seen) == (3 if server.url.startswith("http") else 1)  # HTTP: one call per image


def test_rate_limit_without_retry_after_has_none(server: Recorder) -> None:
    server.refuse, server.retry_after = "rate_limited", None
    with Client(server.url, retries=0, api_key=KEY) as client, pytest.raises(RateLimitedError) as raised:
        client.models()
    assert raised.value.retry_after is None


def test_other_resource_exhausted_errors_stay_plain() -> None:
    assert type(make_error("RESOURCE_EXHAUSTED", "overloaded", "busy", 503)) is ImgServeError
    assert type(make_error("RESOURCE_EXHAUSTED", "too_large", "big", 413)) is ImgServeError
    quota = make_error("RESOURCE_EXHAUSTED", "quota_exceeded", "daily quota", None, 60.0)
    assert isinstance(quota, RateLimitedError) and quota.retry_after == 60.0
    assert isinstance(make_error("RESOURCE_EXHAUSTED", "anything", "slow down", 429), RateLimitedError)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), (" 0.5 ", 0.5), ("-2", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("soon", None), ("", None)],
)
def test_retry_after_seconds_or_http_date(value: str, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(value, now=now) == seconds
    assert parse_retry_after(None) is None and parse_retry_after("inf") is None


# ------------------------------------------------------------------------------------------------ the key stays secret


def test_the_key_is_never_shown(http_server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    for client in (Client(http_server.url, api_key=KEY), Client("grpc://127.0.0.1:1", api_key=KEY)):
        with client:
            shown = [repr(client), str(client), repr(client._transport), repr(vars(client).get("_batch"))]
            assert "api_key=***" in repr(client)
            if client.transport == "http":
                shown += [repr(client.batch), repr(client._transport._http.headers)]  # type: ignore[attr-defined]
            assert not [text for text in shown if SECRET in text]
    assert "api_key" not in repr(Client(http_server.url))


def test_a_server_quoting_the_key_back_has_it_redacted(http_server: Recorder) -> None:
    import httpx

    from serving.client.errors import from_http_response

    response = httpx.Response(401, json={"error": f"bad key {KEY}", "kind": "unauthenticated"})
    error = from_http_response(response, KEY)
    assert isinstance(error, AuthenticationError) and SECRET not in str(error) and "[api key]" in error.message


@pytest.mark.parametrize("bad", ["isk_ab cd", "isk_abc\r\nX-Injected: 1", "isk_é"])
def test_keys_a_header_cannot_carry_are_refused_without_echoing(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="api_key has characters") as raised:
        Client("http://127.0.0.1:1", api_key=bad)
    assert bad.strip() not in str(raised.value)
    monkeypatch.setenv(API_KEY_ENV, bad)
    with pytest.raises(ValueError, match=API_KEY_ENV):
        Client("http://127.0.0.1:1")
    assert resolve_api_key(f"  {KEY}\n") == KEY  # surrounding whitespace (a copied line) is trimmed


# ------------------------------------------------------------------------------------------------ CLI


def _image(tmp_path: Path) -> str:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"jpeg")
    return str(image)


@pytest.mark.parametrize("command", ["classify", "analyze"])
def test_cli_sends_the_env_key_or_the_flag(
    command: str, server: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [command, _image(tmp_path), "--url", server.url, "--json"]
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert cli_main(args) == 0
    assert cli_main([*args, "--api-key", OTHER_KEY]) == 0
    assert server.seen == [f"Bearer {KEY}", f"Bearer {OTHER_KEY}"]


def test_cli_says_how_to_send_a_key(http_server: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    http_server.refuse = "unauthenticated"
    assert cli_main(["classify", _image(tmp_path), "--url", http_server.url]) == 1
    assert f"set {API_KEY_ENV}, or pass --api-key" in capsys.readouterr().err
    assert cli_main(["classify", _image(tmp_path), "--url", http_server.url, "--api-key", KEY]) == 1
    err = capsys.readouterr().err
    assert "UNAUTHENTICATED" in err and "pass --api-key" not in err and SECRET not in err
    http_server.refuse = "rate_limited"
    assert cli_main(["classify", _image(tmp_path), "--url", http_server.url, "--api-key", KEY]) == 1
    assert "(retry after 3 s)" in capsys.readouterr().err


def test_batch_cli_sends_the_key(http_server: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"jpeg")
    monkeypatch.setenv(API_KEY_ENV, KEY)
    out = tmp_path / "results.jsonl"
    assert cli_main(["batch", str(folder), "--url", http_server.url, "--out", str(out), "--poll", "0.01"]) == 0
    assert json.loads(out.read_text())["name"] == "a.jpg"
    assert http_server.bearers() == {f"Bearer {KEY}"}


# ------------------------------------------------------------------------------------------------ load generators


def test_closed_loop_senders_send_the_key(server: Recorder) -> None:
    assert keyed_sender(server.url, None) is None and keyed_sender(server.url, "") is None
    # run_level's clock starts before the client is made (httpx builds its SSL context): seconds, not 0.1 s
    level = asyncio.run(run_level(server.url, [b"jpeg"], 2, 1.0, keyed_sender(server.url, KEY)))
    assert level.requests > 0 and level.errors == 0
    assert server.bearers() == {f"Bearer {KEY}"}
    server.seen.clear()
    asyncio.run(run_level(server.url, [b"jpeg"], 1, 1.0))  # no sender given: the default, without a key
    assert server.bearers() == {None}


def test_locust_users_send_the_key(http_server: Recorder, grpc_server: Recorder, tmp_path: Path) -> None:
    """Both locust users, headless for a few seconds in a process of their own (gevent patches everything)."""
    require(DATA)
    env = {
        **os.environ,
        API_KEY_ENV: KEY,
        "IMGSERVE_GRPC_TARGET": grpc_server.url.removeprefix("grpc://"),
        "LOADTEST_IMAGES": "2",
        "WAIT_MAX_S": "0.05",
    }
    locust = Path(sys.executable).parent / "locust"
    command = [str(locust), "-f", "loadtests/locustfile.py", "--headless", "-u", "4", "-r", "4", "-t", "4s"]
    done = subprocess.run(
        [*command, "--host", http_server.url, "--only-summary"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert http_server.seen and grpc_server.seen, done.stderr[-2000:]
    assert http_server.bearers() == {f"Bearer {KEY}"} and grpc_server.bearers() == {f"Bearer {KEY}"}
    assert SECRET not in done.stdout + done.stderr
