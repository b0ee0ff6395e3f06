"""Four SDK review findings, each checked without a server:

- an `ImgServeError` (and its subclasses) could not be pickled or copied (`__init__` took code, kind, message; the
  pickled `args` held one formatted string), so a `ProcessPoolExecutor` calling the SDK broke with BrokenProcessPool
  and `dataclasses.asdict`/`copy.deepcopy` of a failed `StreamResult` raised;
- job ids and model names went into URL paths unescaped: `batch.cancel("../models/x")` reached `DELETE
  /v1/models/x`;
- a binary file object, `io.BytesIO` or a numpy array given as the image(s) was iterated: a photo opened with
  `open(path, "rb")` went out line by line as hundreds of "images";
- over gRPC, `timing_ms` was float32 noise (39.92300033569336 for HTTP's 39.923) and the analysis stages' and the
  convert/enhance report's keys came in an order that changed from process to process (a protobuf Struct is a map).

HTTP requests go to `httpx.MockTransport`s or the HTTP app in process (tiny models); gRPC to a local server of the
same service (tests/unit/test_sdk_transport_parity.py's `over_both`, imported where used: a worker process of the
pool test imports this module).
"""

import copy
import dataclasses
import io
import json
import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from google.protobuf import struct_pb2

from serving.client import (
    Client,
    ImgServeError,
    PermissionDeniedError,
    RateLimitedError,
    StreamResult,
)
from serving.client.batch import BatchClient, BatchJob
from serving.client.errors import make_error
from serving.client.grpc_transport import (
    _RequestFeed,
    analysis_from_proto,
    classification_from_proto,
    pb,
    report_from_proto,
)
from serving.client.http_transport import HttpTransport, enhancement_report_from_headers
from serving.client.inputs import NamedImage, iter_stream_items, load_images
from serving.client.options import RequestOptions
from serving.client.training import TrainingClient

pytestmark = pytest.mark.unit

CLASSIFY_OK = {"results": [{"model": "m", "predictions": [{"label": "cat", "index": 3, "score": 0.9}], "timing_ms": 1}]}


# ---- 1. errors survive pickle and copy ----------------------------------------------------------------------------
ERRORS = [
    ImgServeError("INVALID_ARGUMENT", "invalid_image", "cannot decode image 0", 400),
    ImgServeError("UNAVAILABLE", "model_unavailable", "replica replaced", 503, 1.5),
    ImgServeError("DEADLINE_EXCEEDED", "timeout", "no answer in time: ReadTimeout"),
    make_error("UNAUTHENTICATED", "unauthenticated", "no API key", 401),
    make_error("PERMISSION_DENIED", "permission_denied", "viewer may not classify"),
    make_error("RESOURCE_EXHAUSTED", "rate_limited", "slow down", 429, 2.0),
    make_error("RESOURCE_EXHAUSTED", "quota_exceeded", "daily quota", retry_after=3600.0),
]


def _same(copied: ImgServeError, error: ImgServeError) -> None:
    assert type(copied) is type(error)
    fields = ("code", "kind", "message", "status", "retry_after", "retryable", "args")
    assert {f: getattr(copied, f) for f in fields} == {f: getattr(error, f) for f in fields}
    assert str(copied) == str(error) and repr(copied) == repr(error)
    assert copied.__dict__ == error.__dict__


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: f"{type(e).__name__}-{e.kind}")
@pytest.mark.parametrize(
    "duplicate",
    [lambda e: pickle.loads(pickle.dumps(e)), copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_every_error_round_trips_through_pickle_and_copy(error: ImgServeError, duplicate: Callable[[Any], Any]) -> None:
    _same(duplicate(error), error)


def test_an_errors_later_attributes_and_notes_travel_too() -> None:
    error = make_error("RESOURCE_EXHAUSTED", "rate_limited", "slow down", 429, 2.0)
    error.request_id = "req-7"  # type: ignore[attr-defined]
    error.add_note("the half-uploaded job j1 could not be cancelled either")
    copied = pickle.loads(pickle.dumps(error))
    _same(copied, error)
    assert isinstance(copied, RateLimitedError) and copied.request_id == "req-7"  # type: ignore[attr-defined]
    assert copied.__notes__ == ["the half-uploaded job j1 could not be cancelled either"]


def test_a_failed_stream_result_can_be_copied_and_turned_into_a_dict() -> None:
    failed = StreamResult("frame-2", error=ERRORS[0])
    document = dataclasses.asdict(failed)
    _same(document["error"], ERRORS[0])
    _same(copy.deepcopy(failed).error, ERRORS[0])  # type: ignore[arg-type]


def _fail_in_worker(kind: str) -> None:
    raise make_error("PERMISSION_DENIED" if kind == "denied" else "INVALID_ARGUMENT", kind, f"worker says {kind}", 400)


def test_an_error_raised_in_a_worker_process_reaches_the_caller() -> None:
    """Before: the worker's error could not be unpickled in the caller, which got BrokenProcessPool."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for kind, cls in (("invalid_image", ImgServeError), ("denied", PermissionDeniedError)):
            with pytest.raises(ImgServeError) as raised:
                pool.submit(_fail_in_worker, kind).result(timeout=60)
            assert type(raised.value) is cls
            assert (raised.value.kind, raised.value.message, raised.value.status) == (kind, f"worker says {kind}", 400)


# ---- 2. ids and names are one escaped path segment ----------------------------------------------------------------
JOB = {"job_id": "j1", "status": "cancelled", "counts": {"total": 1}, "progress": 1.0}
TRAINING_JOB = {"id": "t1", "model": "parcels", "status": "running"}


class Recorder:
    """The requests sent (method, the path exactly as it goes on the wire) and plausible answers to them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?")[0]
        self.sent.append((request.method, path))
        if path.endswith("/progress"):
            body = f"event: progress\ndata: {json.dumps(JOB)}\n\nevent: end\ndata: {{}}\n\n"
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        if path.endswith("/results"):
            return httpx.Response(200, text="")
        if path.startswith("/v1/training-jobs/"):
            return httpx.Response(200, json=TRAINING_JOB)
        return httpx.Response(200, json=JOB)

    def clients(self) -> tuple[BatchClient, TrainingClient]:
        transport = httpx.MockTransport(self)
        return BatchClient("http://imgserve.test", transport=transport), TrainingClient(
            "http://imgserve.test", transport=transport
        )


BATCH_CALLS: dict[str, Callable[[BatchClient, str], Any]] = {
    "job": lambda b, i: b.job(i),
    "cancel": lambda b, i: b.cancel(i),
    "results": lambda b, i: list(b.results(i)),
    "results_csv": lambda b, i: b.results_csv(i),
    "watch": lambda b, i: list(b.watch(i)),
    "wait": lambda b, i: b.wait(i, poll_s=0),
}
TRAINING_CALLS: dict[str, Callable[[TrainingClient, str], Any]] = {
    "job": lambda t, i: t.job(i),
    "cancel": lambda t, i: t.cancel(i),
    "delete": lambda t, i: t.delete(i),
    "load": lambda t, m: t.load(m),
    "unload": lambda t, m: t.unload(m),
    "canary": lambda t, m: t.canary(m, "2", 10),
    "end_canary": lambda t, m: t.end_canary(m),
    "delete_model": lambda t, m: t.delete_model(m),
    "promote(model)": lambda t, m: t.promote(m, "2"),
    "promote(version)": lambda t, v: t.promote("parcels", v),
    "delete_version(version)": lambda t, v: t.delete_version("parcels", v),
}


def test_the_reviews_traversals_stay_inside_their_own_routes() -> None:
    recorder = Recorder()
    batch, training = recorder.clients()
    batch.cancel("../models/no_such_model_x")
    training.unload("x/../no_such_model_y")
    batch.job("../models")  # was a KeyError: the model list answered, not a job
    batch.cancel(BatchJob("a/b?c#d%", "running", 1, 0, 0, 0.0))
    assert recorder.sent == [
        ("DELETE", "/v1/jobs/..%2Fmodels%2Fno_such_model_x"),
        ("POST", "/v1/models/x%2F..%2Fno_such_model_y/unload"),
        ("GET", "/v1/jobs/..%2Fmodels"),
        ("DELETE", "/v1/jobs/a%2Fb%3Fc%23d%25"),
    ]


@pytest.mark.parametrize("call", BATCH_CALLS)
def test_every_batch_route_escapes_the_job_id(call: str) -> None:
    recorder = Recorder()
    batch, _ = recorder.clients()
    BATCH_CALLS[call](batch, "../x")
    assert recorder.sent and all(path.startswith("/v1/jobs/..%2Fx") for _, path in recorder.sent), recorder.sent


@pytest.mark.parametrize("call", TRAINING_CALLS)
def test_every_training_and_model_route_escapes_its_names(call: str) -> None:
    recorder = Recorder()
    _, training = recorder.clients()
    TRAINING_CALLS[call](training, "../x")
    [(_, path)] = recorder.sent
    assert "/..%2Fx" in path and "/../" not in path, path


@pytest.mark.parametrize("value", ["", ".", ".."])
@pytest.mark.parametrize("call", [*BATCH_CALLS, *(f"training.{name}" for name in TRAINING_CALLS)])
def test_dot_segments_and_empty_ids_are_refused_before_sending(call: str, value: str) -> None:
    recorder = Recorder()
    batch, training = recorder.clients()
    with pytest.raises(ValueError, match="cannot name anything"):
        if call.startswith("training."):
            TRAINING_CALLS[call.removeprefix("training.")](training, value)
        else:
            BATCH_CALLS[call](batch, value)
    assert recorder.sent == []


def test_ordinary_ids_and_names_go_as_they_are() -> None:
    recorder = Recorder()
    batch, training = recorder.clients()
    assert batch.job("4f0c2b9e1d").job_id == "j1"
    assert list(batch.watch(BatchJob("4f0c2b9e1d", "running", 1, 0, 0, 0.0)))[-1].status == "cancelled"
    assert training.job("t1").model == "parcels"
    training.promote("parcels", "2")
    training.delete_version("parcels-v.2", "3")
    assert recorder.sent == [
        ("GET", "/v1/jobs/4f0c2b9e1d"),
        ("GET", "/v1/jobs/4f0c2b9e1d/progress"),
        ("GET", "/v1/training-jobs/t1"),
        ("POST", "/v1/models/parcels/versions/2/promote"),
        ("DELETE", "/v1/models/parcels-v.2/versions/3"),
    ]


# ---- 3. a file object is one image; arrays and dicts are refused --------------------------------------------------
JPEG_LIKE = b"\xff\xd8\xff\xe0JFIF\n" + b"line\n" * 300 + b"\xff\xd9"  # newlines: a file object iterates 302 "lines"


def _http_client(sent: list[httpx.Request]) -> Client:
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        images = request.content.count(b'name="image"')
        results = CLASSIFY_OK["results"] * images
        if request.url.path == "/v1/analyze":
            return httpx.Response(200, json={"results": [{"classification": r} for r in results]})
        return httpx.Response(200, json={"results": results})

    client = Client("http://imgserve.test", retries=0)
    client._transport = HttpTransport("http://imgserve.test", 5, 0, transport=httpx.MockTransport(handle))
    return client


def test_a_binary_file_object_is_one_image_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(JPEG_LIKE)
    with path.open("rb") as file:
        assert load_images(file) == [NamedImage(str(path), JPEG_LIKE)]
        assert not file.closed  # the caller's to close
    assert load_images(io.BytesIO(JPEG_LIKE)) == [NamedImage("0", JPEG_LIKE)]
    assert load_images(memoryview(JPEG_LIKE)) == [NamedImage("0", JPEG_LIKE)]
    assert load_images(bytearray(JPEG_LIKE)) == [NamedImage("0", JPEG_LIKE)]
    with path.open("rb") as file:  # lists of them keep working, mixed with paths and bytes
        assert load_images([file, io.BytesIO(b"b"), path, b"c"]) == [
            NamedImage(str(path), JPEG_LIKE),
            NamedImage("1", b"b"),
            NamedImage(str(path), JPEG_LIKE),
            NamedImage("3", b"c"),
        ]


def test_classify_analyze_and_stream_send_a_file_object_as_one_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(JPEG_LIKE)
    sent: list[httpx.Request] = []
    client = _http_client(sent)
    with path.open("rb") as file:
        assert len(client.classify(file)) == 1
    assert len(client.analyze(io.BytesIO(JPEG_LIKE))) == 1
    with path.open("rb") as file:
        results = list(client.stream(file))
    assert [r.request_id for r in results] == [str(path)] and results[0].ok
    assert len(sent) == 3 and all(r.content.count(b'name="image"') == 1 and JPEG_LIKE in r.content for r in sent)
    with path.open("rb") as file:  # over gRPC the stream's feed holds one message too
        feed = list(_RequestFeed(iter_stream_items(file), RequestOptions(None, 5)))
    assert [(m.request_id, m.image) for m in feed] == [(str(path), JPEG_LIKE)]


def test_convert_and_enhance_take_one_image_and_refuse_several_or_none() -> None:
    """Only the first of several images was sent; an empty list was an IndexError."""
    sent: list[httpx.Request] = []
    client = _http_client(sent)
    for call in (client.convert, client.enhance):
        for images in ([JPEG_LIKE, JPEG_LIKE], []):
            with pytest.raises(TypeError, match="takes one image"):
                call(images)
    assert sent == []


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: np.zeros((4, 4, 3), np.uint8), "array of pixels"),
        (lambda p: np.frombuffer(JPEG_LIKE, np.uint8), "array of pixels"),
        (lambda p: {"a": str(p)}, "a dict"),
        (lambda p: [np.zeros((2, 2), np.uint8)], "array of pixels"),
        (lambda p: [{"a": str(p)}], "a dict"),
        (lambda p: io.StringIO("not bytes"), "binary mode"),
        (lambda p: p.open("r"), "binary mode"),
        (lambda p: 3.5, "iterable"),
    ],
    ids=["pixels", "encoded-as-array", "dict", "list-of-arrays", "list-of-dicts", "stringio", "text-file", "float"],
)
def test_arrays_dicts_and_text_files_are_a_type_error_before_sending(
    tmp_path: Path, make: Callable[[Path], Any], says: str
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(JPEG_LIKE)
    sent: list[httpx.Request] = []
    client = _http_client(sent)
    for call in (client.classify, client.analyze, lambda images: list(client.stream(images)), client.convert):
        value = make(path)
        with pytest.raises(TypeError, match=says) as raised:
            call(value)
        if says not in ("binary mode",):
            assert "path" in str(raised.value) and "binary file" in str(raised.value), raised.value
        if hasattr(value, "close"):
            value.close()
    assert sent == []


# ---- 4. gRPC answers as HTTP does: timings, key order -------------------------------------------------------------
@pytest.mark.parametrize("timing", [39.923, 0.001, 1.5, 1234.567, 8191.999, 12345.678, 16383.999])
def test_a_grpc_timing_is_the_servers_milliseconds(timing: float) -> None:
    message = pb.Classification(model="m", timing_ms=timing)
    assert message.timing_ms != timing or timing == 1.5  # float32 on the wire: 39.92300033569336
    assert classification_from_proto(message).timing_ms == timing


class FakeStreamCall:
    def __init__(self, responses: list[Any]):
        self.responses = responses

    def __iter__(self) -> Any:
        return iter(self.responses)

    def cancel(self) -> None:
        pass


def test_a_grpc_streams_timing_and_retry_after_are_the_servers_numbers() -> None:
    """The stream's messages carry float32s too: an item's `retry_after_s` of 1.2 was 1.2000000476837158."""
    refused = pb.Error(code="RESOURCE_EXHAUSTED", kind="rate_limited", message="slow down", retry_after_s=1.2)
    analysis = pb.ImageAnalysis(classification=pb.Classification(model="m", timing_ms=39.923))
    answers = [pb.AnalyzeStreamResponse(request_id="0", error=refused)]
    answers.append(pb.AnalyzeStreamResponse(request_id="1", analysis=analysis))
    client = Client("grpc://127.0.0.1:1", retries=0)  # never connects: the stub is replaced
    client._transport._stub = type(
        "Stub", (), {"AnalyzeStream": lambda self, feed, metadata: FakeStreamCall(answers)}
    )()  # type: ignore[attr-defined]
    first, second = list(client.stream([b"a", b"b"]))
    assert isinstance(first.error, RateLimitedError) and first.error.retry_after == 1.2
    assert second.analysis is not None and second.analysis.classification is not None
    assert second.analysis.classification.timing_ms == 39.923
    client.close()


def _keys(value: Any) -> Any:
    """Every dict's key order, at any depth."""
    if isinstance(value, dict):
        return [(key, _keys(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_keys(item) for item in value]
    return None


def _is_sorted(value: Any) -> bool:
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(_is_sorted(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_sorted(v) for v in value)
    return True


QUALITY = {
    "score": 71.83,
    "level": "HIGH",
    "tags": [{"name": "well_exposed", "confidence": 0.9, "source": "classical", "evidence": {"zeta": 1, "alpha": 2}}],
    "classical_score": 81.52,
    "model_score": 71.32,
    "thresholds_version": 5,
    "model_version": "quality_mos:1",
    "metrics": {name: float(i) for i, name in enumerate(["width", "height", "sharpness", "noise_sigma", "blockiness"])},
}


def test_grpc_analysis_stages_have_sorted_keys_at_every_depth() -> None:
    """A Struct is a protobuf map (upb's hash order, different in each process): sorted keys are the same in every
    run; the server's own order does not travel."""
    message = pb.ImageAnalysis()
    message.quality.update(QUALITY)
    message.metadata.update({"image": {"width": 4, "height": 3, "format": "JPEG"}, "file": {"size_bytes": 10}})
    again = pb.ImageAnalysis.FromString(message.SerializeToString())
    first, second = analysis_from_proto(message), analysis_from_proto(again)
    assert _is_sorted(first.quality) and _is_sorted(first.metadata)
    assert _keys(first.quality) == _keys(second.quality) and first.quality == QUALITY
    assert isinstance(first.quality["thresholds_version"], int)  # the integer fields still come back as ints


ENHANCE_HEADERS = {
    "content-type": "image/png",
    "x-imgserve-input-format": "jpeg",
    "x-imgserve-format": "png",
    "x-imgserve-input-size": "8x6",
    "x-imgserve-size": "4x3",
    "x-imgserve-frames": "1",
    "x-imgserve-input-bytes": "100",
    "x-imgserve-output-bytes": "80",
    "x-imgserve-compression-ratio": "1.25",
    "x-imgserve-operations-detail": '[{"operation":"brightness","reason":"requested","factor":1.4}]',
    "x-imgserve-reverted": '[{"operation":"exposure_up","reason":"tag low_light","stops":0.512}]',
    "x-imgserve-quality": '{"before": {"score": 31.8, "level": "LOW", "tags": ["low_light"]},'
    ' "after": {"score": 58.2, "level": "MEDIUM", "tags": []}}',
}


def test_a_grpc_report_has_the_key_order_of_the_http_report() -> None:
    over_http = enhancement_report_from_headers(httpx.Headers(ENHANCE_HEADERS))
    struct = struct_pb2.Struct()
    struct.update(dict(reversed(over_http.items())))
    over_grpc = report_from_proto(struct_pb2.Struct.FromString(struct.SerializeToString()))
    assert over_grpc == over_http and _keys(over_grpc) == _keys(over_http)


@pytest.mark.parametrize(
    ("operation", "options"),
    [("convert", {"format": "webp", "quality": 80, "max_side": 64}), ("enhance", {"auto": True, "format": "png"})],
)
def test_convert_and_enhance_reports_match_key_for_key_over_both_transports(
    tmp_path: Path, operation: str, options: dict[str, Any]
) -> None:
    from tests.unit.test_sdk_enhance_headers import noisy
    from tests.unit.test_sdk_transport_parity import over_both, photo

    data = noisy() if operation == "enhance" else photo()
    over_http, over_grpc = over_both(tmp_path, lambda client: getattr(client, operation)(data, **options).report)
    assert isinstance(over_http, dict) and isinstance(over_grpc, dict), (over_http, over_grpc)
    assert _keys(over_grpc) == _keys(over_http)


def test_grpc_analyses_are_the_same_document_every_call(tmp_path: Path) -> None:
    from tests.unit.test_sdk_transport_parity import over_both, photo

    data = photo()
    first, second = over_both(tmp_path, lambda client: [client.analyze(data)[0] for _ in range(2)])[1]
    assert first.quality is not None and first.metadata is not None
    assert _is_sorted(first.quality) and _is_sorted(first.metadata)
    assert _keys(dataclasses.asdict(first)) == _keys(dataclasses.asdict(second))
    assert first.classification is not None and round(first.classification.timing_ms, 3) == (
        first.classification.timing_ms
    )
