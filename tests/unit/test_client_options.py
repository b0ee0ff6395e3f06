"""The SDK's request options without a server: `confidence_threshold` (and its neighbours) as the HTTP query
parameters and the gRPC request fields each transport builds, and the client-side range checks."""

import math
from pathlib import Path

import httpx
import pytest

from serving.cli import build_parser
from serving.client import Client
from serving.client.grpc_transport import _RequestFeed, analyze_request, classify_request
from serving.client.http_transport import HttpTransport
from serving.client.inputs import NamedImage, iter_stream_items
from serving.client.options import RequestOptions

pytestmark = pytest.mark.unit

CLASSIFICATION = {"model": "m", "predictions": [{"label": "cat", "index": 3, "score": 0.9}], "timing_ms": 1}
IMAGE = NamedImage("cat.jpg", b"jpeg-bytes")


def _recording(calls: list[httpx.Request]) -> HttpTransport:
    """An HTTP transport whose requests are kept in `calls` and answered with one result per request."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path == "/v1/classify":
            return httpx.Response(200, json={"results": [CLASSIFICATION]})
        return httpx.Response(200, json={"results": [{"classification": CLASSIFICATION}]})

    return HttpTransport("http://imgserve.test", timeout=5, retries=0, transport=httpx.MockTransport(handle))


def _client(transport: HttpTransport) -> Client:
    client = Client("http://imgserve.test", retries=0)
    client._transport.close()
    client._transport = transport
    return client


# ---- HTTP: query parameters ---------------------------------------------------------------------------
def test_http_classify_sends_threshold_when_set() -> None:
    calls: list[httpx.Request] = []
    _recording(calls).classify([IMAGE], RequestOptions("m", 3, confidence_threshold=0.5))
    params = calls[0].url.params
    assert calls[0].url.path == "/v1/classify"
    assert params["confidence_threshold"] == "0.5" and params["top_k"] == "3" and params["model"] == "m"


@pytest.mark.parametrize("call", ["positional", "keyword_zero", "default"])
def test_http_classify_query_is_unchanged_without_threshold(call: str) -> None:
    calls: list[httpx.Request] = []
    transport = _recording(calls)
    if call == "positional":
        transport.classify([IMAGE], RequestOptions("m", 3))
    elif call == "keyword_zero":
        transport.classify([IMAGE], RequestOptions("m", 3, confidence_threshold=0.0))
    else:
        _client(transport).classify(IMAGE.data, "m", 3)
    assert "confidence_threshold" not in calls[0].url.params
    assert calls[0].url.query == b"top_k=3&model=m"  # the exact query an SDK without the option sent


def test_http_analyze_and_stream_send_threshold_with_fields() -> None:
    calls: list[httpx.Request] = []
    transport = _recording(calls)
    transport.analyze([IMAGE], RequestOptions(None, 5, ("classification", "quality"), 0.25))
    list(transport.stream(iter_stream_items([b"a", b"b"]), RequestOptions(None, 2, None, 0.75)))
    list(transport.stream(iter_stream_items([b"c"]), RequestOptions(None, 2, None)))
    analyze, *stream = calls
    assert analyze.url.path == "/v1/analyze"
    assert analyze.url.params.get_list("fields") == ["classification", "quality"]
    assert analyze.url.params["confidence_threshold"] == "0.25" and "model" not in analyze.url.params
    assert [r.url.params.get("confidence_threshold") for r in stream] == ["0.75", "0.75", None]
    assert all(r.url.path == "/v1/analyze" and r.url.params["top_k"] == "2" for r in stream)


def test_client_passes_threshold_to_the_transport_for_every_method() -> None:
    calls: list[httpx.Request] = []
    with _client(_recording(calls)) as client:
        client.classify(IMAGE.data, confidence_threshold=0.2)
        client.analyze(IMAGE.data, fields=["classification"], confidence_threshold=0.3)
        results = list(client.stream([b"frame"], confidence_threshold=0.4))
        client.classify(IMAGE.data, "m", 5, 1)  # positional, at the end; an int is fine
    assert [r.url.params.get("confidence_threshold") for r in calls] == ["0.2", "0.3", "0.4", "1.0"]
    assert results[0].ok


# ---- gRPC: request messages ---------------------------------------------------------------------------
def test_grpc_classify_request_carries_threshold() -> None:
    request = classify_request([IMAGE], RequestOptions("m", 3, confidence_threshold=0.5))
    assert (list(request.images), request.model, request.top_k) == ([b"jpeg-bytes"], "m", 3)
    assert request.confidence_threshold == pytest.approx(0.5)
    assert classify_request([IMAGE], RequestOptions(None, 5)).confidence_threshold == 0.0  # 0: the server's default


def test_grpc_analyze_request_carries_threshold() -> None:
    request = analyze_request([IMAGE], RequestOptions(None, 4, ("classification",), 0.3))
    assert (request.model, request.top_k, list(request.fields)) == ("", 4, ["classification"])
    assert request.confidence_threshold == pytest.approx(0.3)  # a float field: 0.3 to float32 precision
    assert analyze_request([IMAGE], RequestOptions(None, 4, None)).confidence_threshold == 0.0


def test_grpc_stream_requests_carry_threshold() -> None:
    feed = _RequestFeed(iter_stream_items([b"a", ("frame-7", b"b")]), RequestOptions("m", 2, ("quality",), 0.75))
    requests = list(feed)
    assert [(r.request_id, r.image) for r in requests] == [("0", b"a"), ("frame-7", b"b")]
    assert all(r.confidence_threshold == 0.75 and r.top_k == 2 and r.model == "m" for r in requests)
    assert feed.error is None
    assert [r.confidence_threshold for r in _RequestFeed(iter_stream_items([b"a"]), RequestOptions(None, 5, None))] == [
        0.0
    ]


def test_grpc_messages_serialize_unchanged_without_threshold() -> None:
    """Proto3 leaves a 0 float off the wire: a request without a threshold is byte-identical to before."""
    with_zero = classify_request([IMAGE], RequestOptions("m", 3, confidence_threshold=0.0)).SerializeToString()
    assert b"m" in with_zero and classify_request([IMAGE], RequestOptions("m", 3)).SerializeToString() == with_zero
    assert (
        len(classify_request([IMAGE], RequestOptions("m", 3, confidence_threshold=0.5)).SerializeToString())
        == len(with_zero) + 5
    )  # tag + float32


# ---- client-side validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [-0.1, 1.01, 2, math.nan, math.inf])
@pytest.mark.parametrize("url", ["http://imgserve.test", "grpc://127.0.0.1:1"])
def test_out_of_range_threshold_raises_before_sending(url: str, threshold: float) -> None:
    with Client(url, retries=0) as client:  # nothing listens: a request would fail, not raise ValueError
        with pytest.raises(ValueError, match="confidence_threshold"):
            client.classify(b"x", confidence_threshold=threshold)
        with pytest.raises(ValueError, match="confidence_threshold"):
            client.analyze(b"x", confidence_threshold=threshold)
        with pytest.raises(ValueError, match="confidence_threshold"):
            client.stream([b"x"], confidence_threshold=threshold)


@pytest.mark.parametrize("threshold", [0, 0.0, 0.5, 1, 1.0])
def test_threshold_bounds_are_inclusive(threshold: float) -> None:
    calls: list[httpx.Request] = []
    with _client(_recording(calls)) as client:
        client.classify(b"x", confidence_threshold=threshold)
    assert len(calls) == 1


# ---- CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["classify", "analyze"])
def test_cli_flag_parses_and_defaults_to_zero(command: str) -> None:
    args = build_parser().parse_args([command, "cat.jpg", "--confidence-threshold", "0.4"])
    assert args.confidence_threshold == 0.4
    assert build_parser().parse_args([command, "cat.jpg"]).confidence_threshold == 0.0


def test_cli_rejects_out_of_range_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"jpeg-bytes")
    args = build_parser().parse_args(["classify", str(image), "--confidence-threshold", "1.5", "--url", "http://h:1"])
    assert args.func(args) == 2
    assert "confidence_threshold must be between 0 and 1" in capsys.readouterr().err


def test_anonymize_travels_on_both_transports() -> None:
    from serving.client.grpc_transport import analyze_request
    from serving.client.http_transport import _query

    options = RequestOptions(fields=("metadata",), anonymize=True)
    assert ("anonymize", "true") in _query(options)
    assert ("anonymize", "true") not in _query(RequestOptions(fields=("metadata",)))
    assert analyze_request([], options).anonymize is True


def test_retries_wait_for_the_servers_retry_after_when_it_is_longer() -> None:
    from serving.client.errors import make_error
    from serving.client.retry import with_retries

    waits: list[float] = []
    failures = iter([make_error("UNAVAILABLE", "replica_unavailable", "restarting", 503, 1.0)] * 2)

    def call() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert with_retries(call, retries=3, sleep=waits.append) == "ok"
    assert waits == [1.0, 1.0]  # not 0.1 and 0.2: the replica is being replaced


def test_serve_finds_the_projects_config_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`imgserve serve` outside the checkout looked for ./serve_config.yaml and failed; the other defaults (model
    repository, weights) were already the project's."""
    monkeypatch.chdir(tmp_path)
    config = Path(build_parser().parse_args(["serve"]).config)
    assert config.is_absolute() and config.is_file() and config.name == "serve_config.yaml"
