"""The SDK without a server: input normalisation, URL parsing, HTTP error mapping and retry policy."""

from pathlib import Path

import httpx
import pytest

from serving.client import Client, ImgServeError
from serving.client.http_transport import HttpTransport, analysis_from_json
from serving.client.inputs import NamedImage, iter_stream_items, load_images, parse_url
from serving.client.options import RequestOptions
from serving.client.retry import with_retries

pytestmark = pytest.mark.unit

CLASSIFY_OK = {"results": [{"model": "m", "predictions": [{"label": "cat", "index": 3, "score": 0.9}], "timing_ms": 1}]}


# ---- inputs -------------------------------------------------------------------------------------------
def test_single_path_bytes_and_lists_become_lists(tmp_path: Path) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"jpeg-bytes")
    assert load_images(image) == [NamedImage(str(image), b"jpeg-bytes")]
    assert load_images(str(image)) == [NamedImage(str(image), b"jpeg-bytes")]
    assert load_images(b"raw") == [NamedImage("0", b"raw")]
    assert load_images(bytearray(b"raw")) == [NamedImage("0", b"raw")]
    assert load_images([b"a", image, str(image)]) == [
        NamedImage("0", b"a"),
        NamedImage(str(image), b"jpeg-bytes"),
        NamedImage(str(image), b"jpeg-bytes"),
    ]
    assert load_images([]) == []


def test_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="path"):
        load_images([1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="iterable"):
        load_images(3.5)  # type: ignore[arg-type]


def test_stream_items_take_caller_request_ids() -> None:
    items = list(iter_stream_items([b"a", ("frame-7", b"b"), b"c"]))
    assert [(i.name, i.data) for i in items] == [("0", b"a"), ("frame-7", b"b"), ("2", b"c")]


# ---- URLs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "scheme", "target", "is_grpc"),
    [
        ("grpc://127.0.0.1:9000", "grpc", "127.0.0.1:9000", True),
        ("grpcs://example.com:443", "grpcs", "example.com:443", True),
        ("http://localhost:8000", "http", "localhost:8000", False),
        ("http://localhost:8000/", "http", "localhost:8000", False),
        ("HTTPS://example.com", "https", "example.com:443", False),
        ("http://[::1]:8000", "http", "[::1]:8000", False),
    ],
)
def test_parse_url(url: str, scheme: str, target: str, is_grpc: bool) -> None:
    address = parse_url(url)
    assert (address.scheme, address.target, address.is_grpc) == (scheme, target, is_grpc)


@pytest.mark.parametrize(
    "url", ["ftp://host:21", "127.0.0.1:9000", "grpc://127.0.0.1", "http://:8000", "http://h:8000/v1", "http://h:x"]
)
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)
    with pytest.raises(ValueError):
        Client(url)


# ---- HTTP error mapping and retries (httpx.MockTransport, no server) ----------------------------------
def _transport(handler: httpx.MockTransport, retries: int = 3) -> HttpTransport:
    return HttpTransport("http://imgserve.test", timeout=5, retries=retries, transport=handler)


def _failing(status: int, body: dict | str, calls: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_image", "INVALID_ARGUMENT"),
        (415, "unsupported_format", "INVALID_ARGUMENT"),
        (404, "unknown_model", "NOT_FOUND"),
        (409, "version_in_use", "FAILED_PRECONDITION"),  # the server's gRPC code for the same error
        (413, "too_large", "RESOURCE_EXHAUSTED"),
        (503, "overloaded", "RESOURCE_EXHAUSTED"),
        (503, "model_unavailable", "UNAVAILABLE"),
        (500, "internal", "INTERNAL"),
    ],
)
def test_http_errors_map_to_grpc_codes(status: int, kind: str, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.client.retry.time.sleep", lambda s: None)
    calls: list[httpx.Request] = []
    transport = _transport(_failing(status, {"error": f"it went wrong: {kind}", "kind": kind}, calls))
    with pytest.raises(ImgServeError) as raised:
        transport.classify([NamedImage("0", b"x")], RequestOptions(None, 5))
    error = raised.value
    assert (error.code, error.kind, error.status) == (code, kind, status)
    assert error.message == f"it went wrong: {kind}" and code in str(error)


def test_non_json_error_body_still_maps() -> None:
    calls: list[httpx.Request] = []
    with pytest.raises(ImgServeError) as raised:
        _transport(_failing(404, "<html>not here</html>", calls)).models()
    assert (raised.value.code, raised.value.kind, raised.value.status) == ("NOT_FOUND", "http_404", 404)


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_image"), (404, "unknown_model"), (503, "overloaded")])
def test_only_unavailable_is_retried(status: int, kind: str) -> None:
    calls: list[httpx.Request] = []
    with pytest.raises(ImgServeError):
        _transport(_failing(status, {"error": "no", "kind": kind}, calls)).classify(
            [NamedImage("0", b"x")], RequestOptions(None, 5)
        )
    assert len(calls) == 1


def test_unavailable_is_retried_with_doubling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("serving.client.retry.time.sleep", sleeps.append)
    calls: list[httpx.Request] = []
    with pytest.raises(ImgServeError) as raised:
        _transport(_failing(503, {"error": "not deployed", "kind": "model_unavailable"}, calls)).models()
    assert raised.value.code == "UNAVAILABLE"
    assert len(calls) == 4 and sleeps == [0.1, 0.2, 0.4]


def test_connection_error_is_retried_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.client.retry.time.sleep", lambda s: None)
    calls: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=CLASSIFY_OK)

    results = _transport(httpx.MockTransport(flaky)).classify([NamedImage("0", b"x")], RequestOptions("m", 1))
    assert len(calls) == 3
    assert results[0].predictions[0].label == "cat" and results[0].model == "m"
    assert calls[-1].url.params.get_list("model") == ["m"] and calls[-1].url.params["top_k"] == "1"


def test_timeout_is_deadline_exceeded_and_not_retried() -> None:
    calls: list[httpx.Request] = []

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ImgServeError) as raised:
        _transport(httpx.MockTransport(slow)).models()
    assert (raised.value.code, raised.value.status, len(calls)) == ("DEADLINE_EXCEEDED", None, 1)


def test_retries_zero_means_one_attempt() -> None:
    attempts: list[int] = []

    def call() -> None:
        attempts.append(1)
        raise ImgServeError("UNAVAILABLE", "connection", "down")

    with pytest.raises(ImgServeError):
        with_retries(call, 0)
    assert len(attempts) == 1


def test_http_stream_keeps_server_errors_per_item() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if b"corrupt" in request.content:
            return httpx.Response(400, json={"error": "cannot decode", "kind": "invalid_image"})
        body = {"results": [{"classification": CLASSIFY_OK["results"][0], "quality": {"sharpness": 0.5}}]}
        return httpx.Response(200, json=body)

    results = list(
        _transport(httpx.MockTransport(handle)).stream(
            iter_stream_items([b"a", b"corrupt", b"c"]), RequestOptions(None, 5, None)
        )
    )
    assert [r.request_id for r in results] == ["0", "1", "2"]
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None and results[1].error.kind == "invalid_image"
    assert results[0].analysis is not None and results[0].analysis.quality == {"sharpness": 0.5}


def test_analysis_keeps_unknown_stages_in_extra() -> None:
    analysis = analysis_from_json({"classification": None, "anomaly": {"score": 0.1}, "faces": {"count": 2}})
    assert analysis.classification is None and analysis.anomaly == {"score": 0.1}
    assert analysis.extra == {"faces": {"count": 2}}
