"""Issue #18's named probes for client input that used to reach a 500: each gets a 4xx naming what is wrong, and a
500 never carries exception text. In-process app over the tiny models (no Ray cluster), as test_edges_in_process."""

import asyncio
import json
import logging
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from serving.admission import REPLICA_LIMIT
from serving.config.app_args import AppArgs
from serving.errors import BadRequestError, classify_error
from serving.grpc.edge import attempt
from serving.http.app import create_http_app
from serving.http.middleware import AdmissionMiddleware
from serving.jobs.errors import ItemInputError
from serving.jobs.uris import check_uri, read_uri
from serving.metrics import REQUESTS
from serving.oip.tensors import array_from_json, tensor_shape
from serving.placement import build_service, compose
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

INFER = "/v2/models/tiny/infer"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("t")))
    with TestClient(create_http_app(build_service(config)), raise_server_exceptions=False) as client:
        yield client


def _error(response, status: int, kind: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["kind"] == kind
    return body["error"]


def test_shape_of_1e400_is_an_invalid_tensor(http: TestClient) -> None:
    body = b'{"inputs":[{"name":"input","shape":[1e400,3],"datatype":"FP32","data":[1]}]}'
    assert "not an integer" in _error(http.post(INFER, content=body, headers=JSON), 400, "invalid_tensor")


def test_200000_open_brackets_are_a_bad_request(http: TestClient) -> None:
    message = _error(http.post(INFER, content=b"[" * 200_000, headers=JSON), 400, "bad_request")
    assert "nested too deeply" in message


def test_non_ascii_digit_in_the_binary_header_length_is_a_bad_request(http: TestClient) -> None:
    body = b'{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'
    # b"\xb2" is latin-1 for superscript two, which str.isdigit() accepts and int() refuses
    headers = {"content-type": "application/octet-stream", "Inference-Header-Content-Length": b"\xb2"}
    _error(http.post(INFER, content=body + b"\x00" * 4, headers=headers), 400, "bad_request")


@pytest.mark.parametrize("shape", ["[100000000000]", "[100000,100000]"])  # one absurd dimension; a product of 1e10
def test_binary_bytes_tensor_with_a_huge_shape_is_refused_before_allocating(http: TestClient, shape: str) -> None:
    head = f'{{"inputs":[{{"name":"input","shape":{shape},"datatype":"BYTES","parameters":{{"binary_data_size":8}}}}]}}'
    headers = {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    body = head.encode() + b"\x04\x00\x00\x00abcd"
    _error(http.post(INFER, content=body, headers=headers), 400, "invalid_tensor")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing sized by the shape


def test_shapes_and_bytes_elements_are_checked_strictly() -> None:
    assert tensor_shape([1, 3, 224, 224]) == [1, 3, 224, 224]
    for bad in ([2.5], [True], ["3"], [-1], [2**40], "1,2", None):
        with pytest.raises(ValueError):
            tensor_shape(bad)
    with pytest.raises(ValueError, match="must be strings"):  # bytes(10**9) would allocate a gigabyte
        array_from_json([10**9], "BYTES", [1])


def test_nul_bytes_and_malformed_uris_are_client_errors(tmp_path: Path) -> None:
    for uri in (f"file://{tmp_path}/a\x00b.jpg", f"file://{tmp_path}/a%00b.jpg", "s3://[broken/key"):
        with pytest.raises(BadRequestError):
            check_uri(uri, tmp_path)
    with pytest.raises(ItemInputError) as caught:  # in a running job: that item fails, the job goes on
        read_uri(f"file://{tmp_path}/a%00b.jpg", tmp_path, 100)
    assert caught.value.kind == "forbidden_uri"


def test_internal_errors_name_the_request_not_the_exception(http: TestClient) -> None:
    info = classify_error(RuntimeError("ActorDiedError at 10.0.0.7:6379 pid=4242 [SQL: SELECT secret] /srv/keys"))
    assert info.http_status == 500 and info.kind == "internal"
    assert "request id" in info.message
    for leak in ("10.0.0.7", "4242", "SQL", "/srv", "RuntimeError"):
        assert leak not in info.message
    assert json.dumps(info.message).isascii()


def test_the_server_log_has_a_traceback_for_internal_errors_and_one_line_for_outages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sqlalchemy.exc import OperationalError

    from serving.http.middleware import log_answered_error

    caplog.set_level(logging.INFO)
    cases = {
        "internal": RuntimeError("a bug"),
        "store": OperationalError("SELECT 1", {}, OSError("connection refused")),
        "client": BadRequestError("top_k must be >= 1"),
    }
    for name, exc in cases.items():
        caplog.clear()
        log_answered_error(classify_error(exc), f"/v1/{name}", exc)
        records = [(r.levelno, r.exc_info is not None) for r in caplog.records]
        expected = {"internal": [(logging.ERROR, True)], "store": [(logging.WARNING, False)], "client": []}[name]
        assert records == expected, (name, caplog.text)


def test_text_no_encoder_takes_never_stops_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone surrogate in client text quoted by an error: the message is sent with its escape (a JSON body could
    not be encoded: a bare 500), and a log stream that refuses it (a Ray worker's strict UTF-8 stderr, where
    logging's own fallback raised too) costs the log line, not the answer."""
    import io

    from serving.http.middleware import log_answered_error

    info = classify_error(BadRequestError("unknown output '\ud800'"))
    assert info.message == "unknown output '\\ud800'" and info.message.encode("utf-8")
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    handler = logging.StreamHandler(strict)
    logger = logging.getLogger("imgserve.http")
    logger.addHandler(handler)
    monkeypatch.setattr("sys.stderr", strict)  # logging.Handler.handleError's report goes here, and fails too
    try:
        exc = RuntimeError("a bug quoting '\ud800'")
        log_answered_error(classify_error(exc), "/v2/models/m/infer", exc)  # raised UnicodeEncodeError before
    finally:
        logger.removeHandler(handler)


def test_slow_upload_gets_408_and_frees_its_slot(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = tiny_settings(tmp_path_factory.mktemp("slow")).model_copy(update={"body_read_timeout_s": 0.3})
    config = compose(AppArgs(placement="local", default_model="tiny"), settings)
    app = create_http_app(build_service(config), settings=settings)
    sent: list[dict] = []

    async def trickle() -> dict:  # one byte, then nothing: a slowloris upload
        if not sent and not getattr(trickle, "started", False):
            trickle.started = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"x", "more_body": True}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"",
        "headers": [(b"content-type", b"image/jpeg"), (b"host", b"test")], "http_version": "1.1",
        "scheme": "http", "server": ("test", 80), "client": ("127.0.0.1", 1), "root_path": "",
    }  # fmt: skip
    start = time.perf_counter()
    asyncio.run(asyncio.wait_for(app(scope, trickle, send), 10))
    assert time.perf_counter() - start < 5
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["kind"] == "timeout"
    assert REPLICA_LIMIT.inflight == 0  # the admission slot went back


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"",
        "headers": [(b"host", b"test"), *headers], "http_version": "1.1",
        "scheme": "http", "server": ("test", 80), "client": ("127.0.0.1", 1), "root_path": "",
    }  # fmt: skip


def test_slow_uploads_hold_no_admission_slot(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ten bodies trickling in on a replica limited to one request in flight: a complete request is still served
    (the slow ones hold connections, not the slot), and each slow one ends 408 at the read timeout."""
    settings = tiny_settings(tmp_path_factory.mktemp("slowmany")).model_copy(update={"body_read_timeout_s": 1.0})
    app = create_http_app(
        build_service(compose(AppArgs(placement="local", default_model="tiny"), settings)), settings=settings
    )
    image = jpeg()

    async def main() -> tuple[list[list[dict]], list[dict]]:
        slow_sent: list[list[dict]] = [[] for _ in range(10)]

        def trickling() -> Any:
            state = {"sent": False}

            async def receive() -> dict:
                if not state["sent"]:
                    state["sent"] = True
                    return {"type": "http.request", "body": b"\xff", "more_body": True}
                await asyncio.sleep(3600)
                return {"type": "http.disconnect"}

            return receive

        def collect(box: list[dict]) -> Any:
            async def send(message: dict) -> None:
                box.append(message)

            return send

        declared = [(b"content-length", b"100000"), (b"content-type", b"image/jpeg")]
        slow = [asyncio.create_task(app(_scope(declared), trickling(), collect(box))) for box in slow_sent]
        await asyncio.sleep(0.2)
        fast_sent: list[dict] = []

        delivered = []

        async def whole() -> dict:  # the body, then (as a server does) nothing until the client goes away
            if not delivered:
                delivered.append(True)
                return {"type": "http.request", "body": image, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        await app(_scope([(b"content-length", str(len(image)).encode())]), whole, collect(fast_sent))
        await asyncio.gather(*slow)
        return slow_sent, fast_sent

    REPLICA_LIMIT.limit = 1
    try:
        slow_sent, fast_sent = asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        REPLICA_LIMIT.limit = None
    assert fast_sent[0]["status"] == 200, fast_sent
    assert [box[0]["status"] for box in slow_sent] == [408] * 10
    assert REPLICA_LIMIT.inflight == 0


def test_bodies_waiting_for_admission_share_a_memory_budget() -> None:
    async def inner(scope: dict, receive: Any, send: Any) -> None:
        raise AssertionError("must not be reached")

    middleware = AdmissionMiddleware(inner, preread_budget_bytes=1000)
    sent: list[dict] = []

    async def big() -> dict:
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    REPLICA_LIMIT.limit = 4
    try:
        asyncio.run(middleware(_scope([(b"content-length", b"5000")]), big, send))
    finally:
        REPLICA_LIMIT.limit = None
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[b"retry-after"] == b"1"
    assert json.loads(sent[1]["body"])["kind"] == "overloaded"
    assert middleware.buffered == 0 and REPLICA_LIMIT.inflight == 0


def test_a_client_gone_mid_upload_gives_its_bytes_back_to_the_budget() -> None:
    """Bytes read ahead from a client that then hung up stayed counted against the budget: 10 such uploads of 100 kB
    filled a 1 MB budget and every later request with a body was refused 503 'overloaded' (1 GiB by default)."""

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = AdmissionMiddleware(inner, preread_budget_bytes=1_000_000)

    async def hang_up_mid_body() -> None:
        messages = [{"type": "http.request", "body": b"x" * 100_000, "more_body": True}, {"type": "http.disconnect"}]

        async def receive() -> dict:
            return messages.pop(0)

        with pytest.raises(ClientDisconnect):
            await middleware(_scope([(b"content-length", b"1000000")]), receive, _no_send)

    async def scenario() -> list[dict]:
        for _ in range(10):
            await hang_up_mid_body()
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": b"y" * 10, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await middleware(_scope([(b"content-length", b"10")]), receive, send)
        return sent

    REPLICA_LIMIT.limit = 8
    try:
        sent = asyncio.run(scenario())
    finally:
        REPLICA_LIMIT.limit = None
    assert middleware.buffered == 0 and REPLICA_LIMIT.inflight == 0
    assert sent[0]["status"] == 200, sent


async def _no_send(message: dict) -> None:
    raise AssertionError(f"nothing is answered to a client that left: {message}")


def _requests_with_status(status: str) -> float:
    """imgserve_requests_total over every endpoint, protocol and model (before routing the endpoint is "unmatched")."""
    samples = REQUESTS.collect()[0].samples
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels["status"] == status)


@pytest.mark.parametrize("limit", [None, 4], ids=["no-limit", "admission-limit"])
def test_a_client_gone_mid_upload_is_counted_499_not_a_server_error(
    limit: int | None, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes its connection before its body arrived: nothing is sent, no traceback is logged, and
    the request is counted with status 499 (before: an "unhandled error" traceback and a 500 in /metrics and the
    access log for each of them, 1,100 of them in the slow-upload integration test)."""
    settings = tiny_settings(tmp_path_factory.mktemp("gone"))
    app = create_http_app(build_service(compose(AppArgs(placement="local", default_model="tiny"), settings)))
    parts = [{"type": "http.request", "body": b"\xff\xd8", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    before, errors_before = _requests_with_status("499"), _requests_with_status("500")
    REPLICA_LIMIT.limit = limit
    try:
        asyncio.run(asyncio.wait_for(app(_scope([(b"content-length", b"100000")]), receive, send), 10))
    finally:
        REPLICA_LIMIT.limit = None
    assert sent == []
    assert _requests_with_status("499") == before + 1 and _requests_with_status("500") == errors_before
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert REPLICA_LIMIT.inflight == 0


def test_a_cancelled_rpc_is_counted_cancelled_not_ok() -> None:
    """A gRPC call the client cancels (or whose deadline passes) mid-way: the handler's task is cancelled, and the
    request is counted with status CANCELLED (before: "OK", with the latency of the part that ran)."""

    async def main() -> None:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.create_task(attempt("/imgserve.ImageService/Classify", "tiny", slow))  # auth off: admitted
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    cancelled, ok = _requests_with_status("CANCELLED"), _requests_with_status("OK")
    asyncio.run(asyncio.wait_for(main(), 10))
    assert _requests_with_status("CANCELLED") == cancelled + 1 and _requests_with_status("OK") == ok


@pytest.mark.parametrize(
    ("path", "query", "misspelt"),
    [
        ("/v1/convert", "to=webp&quality=80", "to"),  # served as JPEG (the input's format) before
        ("/v1/enhance", "brightnes=1.5", "brightnes"),  # served auto-enhanced before
        ("/v1/classify", "topk=3", "topk"),  # served with top_k 5 before
        ("/v1/analyze", "field=quality", "field"),  # every stage ran before
    ],
)
def test_a_misspelt_query_option_is_a_bad_request_not_ignored(
    http: TestClient, path: str, query: str, misspelt: str
) -> None:
    """A JSON body's unknown `options` were refused while the same option as a query parameter was dropped and the
    request served with the default: now both are a 400 that names the parameter and what the route takes (an image
    operation's is `invalid_option`, in the words gRPC refuses it with: tests/unit/test_api_consistency_http.py)."""
    kind = "invalid_option" if path in ("/v1/convert", "/v1/enhance") else "bad_request"
    message = _error(http.post(f"{path}?{query}", content=jpeg()), 400, kind)
    assert repr(misspelt) in message and "known:" in message
    known = {"/v1/convert": "format=webp", "/v1/enhance": "brightness=1.5", "/v1/classify": "top_k=3"}
    if path in known:  # the right spelling is served
        assert http.post(f"{path}?{known[path]}", content=jpeg()).status_code == 200
    assert http.get("/v2/models/tiny/ready?client_tag=1").status_code == 200  # /v2 leaves extra parameters alone


def test_an_unknown_json_field_is_named_but_not_echoed_whole(http: TestClient) -> None:
    message = _error(http.post("/v1/classify", json={"image": "", "x" * 10_000: 1}), 400, "bad_request")
    assert "xxxx" in message and len(message) < 300


def test_a_stage_whose_upstream_replica_died_is_a_503_to_retry_not_an_internal_error() -> None:
    """Graph placement: the Decoder SIGKILLed while its result, passed by reference, fed a model deployment. Ray
    Serve raises RayServeException("... an upstream actor died ...") from the ActorDiedError: it was a 500 `internal`
    (not retried by the SDK, an error-budget burn), where a replica dying under the request is 503."""
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import RayServeException

    from serving.placement.graph import _pick

    died = RayServeException("Request to deployment 'model-m' failed because an upstream actor died")
    died.__cause__ = ActorDiedError()
    with pytest.raises(RayServeException) as raised:
        _pick(died, 0)  # the copy each image of the call gets keeps the cause
    for error in (died, raised.value):
        info = classify_error(error)
        assert (info.http_status, info.grpc_code, info.kind, info.retry_after_s) == (
            503, "UNAVAILABLE", "replica_unavailable", 1.0,
        )  # fmt: skip
    assert classify_error(RayServeException("something else")).kind == "internal"


def test_a_method_the_route_does_not_take_is_a_405_naming_the_ones_it_does(http: TestClient) -> None:
    answer = http.put("/v1/classify", content=b"x")
    assert answer.status_code == 405 and answer.json()["kind"] == "http_405"
    assert answer.headers["allow"] == "POST"  # RFC 9110 15.5.6: a 405 names them (the header was dropped)


def test_a_body_refused_for_its_declared_size_is_counted_as_an_error(http: TestClient) -> None:
    """The 413 answered from Content-Length alone, before any route, moved imgserve_requests_total but not
    imgserve_errors_total (README "Errors": every error is counted)."""
    from serving.metrics import ERRORS

    refused = ERRORS.labels("(listener)", "too_large")
    before = refused._value.get()
    answer = http.post("/v1/classify", content=b"x", headers={"Content-Length": "999999999999"})
    assert answer.status_code == 413 and answer.json()["kind"] == "too_large"
    assert refused._value.get() == before + 1
