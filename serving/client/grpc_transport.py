"""The SDK over gRPC: `imgserve.v1.ImageService` on a sync channel, AnalyzeStream for `stream`.

Only the image_service stubs are loaded: the OIP `inference_pb2` would clash with tritonclient's
descriptors of the same proto when both live in one process.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from serving.client.auth import auth_metadata, redact
from serving.client.errors import CALLER_REFUSALS, ImgServeError, make_error, parse_retry_after
from serving.client.inputs import NamedImage
from serving.client.options import RequestOptions
from serving.client.retry import with_retries
from serving.client.types import (
    REPORT_KEYS,
    Analysis,
    Classification,
    ModelInfo,
    ModelList,
    OperationResult,
    Prediction,
    StreamResult,
)
from serving.float32 import float32_score
from serving.grpc.stubs import load

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")
KIND_METADATA = "imgserve-error-kind"  # trailing metadata set by serving.grpc.edge.answer
RETRY_AFTER_METADATA = "retry-after"  # seconds, trailing metadata of a RESOURCE_EXHAUSTED rate_limited answer
# The Convert/Enhance report's integers (pipelines.convert `ConvertResult.summary`, which HTTP sends as JSON): a
# protobuf Struct carries every number as a double, so they came back as 1420341.0 and [2048.0, 1365.0] over gRPC.
# Only these: the report's other numbers are floats on HTTP too, whole or not (a factor of 2.0, a score of 100.0).
REPORT_INTEGERS = frozenset({"frames", "input_bytes", "output_bytes", "size", "input_size"})
# The same for the analysis stages, at any depth of their Struct: the integer fields of the dataclasses the server
# sends (pipelines.metadata.result; pipelines.quality's report and metrics, whose names the tags' evidence uses too).
# No name is an integer in one place of a stage and a float in another (tests/unit/test_sdk_transport_parity.py).
ANALYSIS_INTEGERS: dict[str, frozenset[str]] = {
    "metadata": frozenset(
        {
            "size_bytes",
            "width",
            "height",
            "upright_width",
            "upright_height",
            "bands",
            "bit_depth",
            "frames",
            "orientation",
            "iso",
            "focal_length_35mm_equiv_mm",
            "flash",
            "rgb",
            "mean_rgb",
            "sample_size",
        }
    ),
    "quality": frozenset({"width", "height", "short_side", "thresholds_version"}),
    "anomaly": frozenset(),
}
# Failures the gRPC library reports itself (no kind from the server), with the kind HTTP gives the same failure.
TOO_LARGE_DETAILS = "larger than max"  # "Received message larger than max (N vs. M)": HTTP's 413 too_large


def error_from_rpc(exc: grpc.RpcError, api_key: str | None = None) -> ImgServeError:
    """A failed call as `ImgServeError` (or its auth subclass): the code, the server's kind from the trailing
    metadata (the code in lower case without one), and `retry-after` for a rate-limited call."""
    code = exc.code().name if hasattr(exc, "code") and exc.code() is not None else "UNKNOWN"  # type: ignore[attr-defined]
    details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
    trailing = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}  # type: ignore[attr-defined]
    kind = str(trailing.get(KIND_METADATA) or library_kind(code, details or ""))
    retry_after = trailing.get(RETRY_AFTER_METADATA)
    retry_s = parse_retry_after(retry_after if isinstance(retry_after, str) else None)
    return make_error(code, kind, redact(details or code, api_key), retry_after=retry_s)


def library_kind(code: str, details: str) -> str:
    """The kind of a status the server did not set (the gRPC library's own, a proxy's): as the HTTP transport names
    the same failure where there is one (no server reached: `connection`, imgserve's own UNAVAILABLE always names
    its kind; a deadline passed: `timeout`; a message over the limit: `too_large`), else the code in lower case."""
    if code == "UNAVAILABLE":
        return "connection"
    if code == "DEADLINE_EXCEEDED":
        return "timeout"
    if code == "RESOURCE_EXHAUSTED" and TOO_LARGE_DETAILS in details:
        return "too_large"
    return code.lower()


def classification_from_proto(message: Any) -> Classification:
    # proto `float` is float32: the shortest decimal, as the HTTP answer gives it (0.917, not 0.9170000553131104)
    predictions = tuple(Prediction(p.label, p.index, float32_score(p.score)) for p in message.predictions)
    return Classification(message.model, predictions, milliseconds(message.timing_ms), message.model_version)


def milliseconds(value: float) -> float:
    """A proto `float` (float32) time as the server measured it, milliseconds to the microsecond (HTTP's JSON):
    39.923, not 39.92300033569336. Rounded to 3 decimals rather than `float32_score`'s shortest float32 decimal: the
    same below 8.192 s, and still the server's number up to 16.384 s, where a float32's step nears a microsecond."""
    return round(value, 3)


def analysis_from_proto(message: Any) -> Analysis:
    """Stages this SDK predates (fields added to ImageAnalysis later) are kept in `extra` as JSON-like dicts."""
    extra: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        if descriptor.name not in ("classification", "metadata", "quality", "anomaly"):
            is_message = descriptor.message_type is not None
            extra[descriptor.name] = (
                ordered(MessageToDict(value, preserving_proto_field_name=True)) if is_message else value
            )
    classification = classification_from_proto(message.classification) if message.HasField("classification") else None
    # A protobuf Struct carries every number as a double: the stages' integers are ints again (ANALYSIS_INTEGERS).
    # Its keys come in no stable order (a map): sorted, at every depth (`ordered`), so a record is the same each run;
    # the server's own order (HTTP's) is not known here (metadata keeps the file's EXIF order).
    structs = {
        name: with_integers(ordered(MessageToDict(getattr(message, name))), ANALYSIS_INTEGERS[name])
        if message.HasField(name)
        else None
        for name in ("metadata", "quality", "anomaly")
    }
    return Analysis(classification, structs["metadata"], structs["quality"], structs["anomaly"], extra)


def model_list_from_proto(message: Any) -> ModelList:
    models = tuple(
        ModelInfo(m.name, m.version, m.task, m.state, m.reason or None, m.backend or None) for m in message.models
    )
    return ModelList(message.default_model, models)


def classify_request(images: list[NamedImage], options: RequestOptions) -> Any:
    """The `ClassifyRequest` of one call (an unset model, or a threshold of 0, means the server's default)."""
    return pb.ClassifyRequest(
        images=[i.data for i in images],
        model=options.model or "",
        top_k=options.top_k,
        confidence_threshold=options.confidence_threshold,
    )


def analyze_request(images: list[NamedImage], options: RequestOptions) -> Any:
    """The `AnalyzeRequest` of one call."""
    return pb.AnalyzeRequest(images=[i.data for i in images], **_analysis_options(options))


def _analysis_options(options: RequestOptions) -> dict[str, Any]:
    """The option fields `AnalyzeRequest` and `AnalyzeStreamRequest` share."""
    return {
        "model": options.model or "",
        "top_k": options.top_k,
        "fields": list(options.fields or ()),
        "confidence_threshold": options.confidence_threshold,
        "anonymize": options.anonymize,
    }


class _RequestFeed:
    """The request iterator of a stream. gRPC drains it on its own thread, so a failure to read an input
    is kept here and re-raised to the caller once the answers to the images before it have arrived."""

    def __init__(self, images: Iterable[NamedImage], options: RequestOptions):
        self._images, self._options = images, _analysis_options(options)
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            for image in self._images:
                yield pb.AnalyzeStreamRequest(image=image.data, request_id=image.name, **self._options)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, see the class docstring
            self.error = exc


class GrpcTransport:
    """One channel per `Client`. Unary calls get `timeout` as their deadline and are retried on UNAVAILABLE;
    a stream has no deadline (it may feed a camera for hours) and is not retried. With `api_key`, every call
    (streams included) carries `authorization: Bearer <key>` metadata."""

    def __init__(self, target: str, timeout: float, retries: int, secure: bool = False, api_key: str | None = None):
        self.timeout, self.retries = timeout, retries
        self._api_key = api_key
        self._metadata = auth_metadata(api_key)
        self._target = target
        # gRPC's default receive limit is 4 MiB: a PNG or BMP of a photo is larger. The server bounds its answers
        # (IMGSERVE_MAX_REQUEST_BYTES, refused as too_large beyond), so the client takes what it sends.
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.ImageServiceStub(self._channel)

    def _unary(self, method: Any, request: Any) -> Any:
        def attempt() -> Any:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc, self._api_key) from exc

        return with_retries(attempt, self.retries)

    def classify(self, images: list[NamedImage], options: RequestOptions) -> list[Classification]:
        results = self._unary(self._stub.Classify, classify_request(images, options)).results
        _check_count(len(images), len(results))
        return [classification_from_proto(r) for r in results]

    def analyze(self, images: list[NamedImage], options: RequestOptions) -> list[Analysis]:
        results = self._unary(self._stub.Analyze, analyze_request(images, options)).results
        _check_count(len(images), len(results))
        return [analysis_from_proto(r) for r in results]

    def stream(self, images: Iterable[NamedImage], options: RequestOptions) -> Iterator[StreamResult]:
        """An item's error is its `StreamResult`'s, the stream going on (a rate-limited message's too), except a
        refusal of the caller's key or role (`CALLER_REFUSALS`), which is raised, as over HTTP: the server ends the
        stream with it (an older one answered it as each later item's error)."""
        feed = _RequestFeed(images, options)
        call = self._stub.AnalyzeStream(iter(feed), metadata=self._metadata)
        try:
            for response in call:
                if response.HasField("error"):
                    item = response.error  # retry_after_s 0: the server did not say; a float32, as a score is
                    retry_after = float32_score(item.retry_after_s) or None
                    error = make_error(item.code, item.kind, item.message, retry_after=retry_after)
                    if isinstance(error, CALLER_REFUSALS):
                        raise error
                    yield StreamResult(response.request_id, error=error)
                else:
                    yield StreamResult(response.request_id, analysis=analysis_from_proto(response.analysis))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self._api_key) from exc
        finally:
            call.cancel()  # a no-op once the stream is done; stops the server when the caller leaves early
        if feed.error is not None:
            raise feed.error

    def models(self) -> ModelList:
        return model_list_from_proto(self._unary(self._stub.ListModels, pb.ListModelsRequest()))

    def operate(self, operation: str, image: NamedImage, options: dict[str, str]) -> OperationResult:
        method = self._stub.Convert if operation == "convert" else self._stub.Enhance
        reply = self._unary(method, pb.ImageOperationRequest(image=image.data, options=options))
        return OperationResult(reply.image, reply.content_type, report_from_proto(reply.report))

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"GrpcTransport({self._target!r}, authenticated={self._api_key is not None})"


def report_from_proto(report: Any) -> dict[str, Any]:
    """A Convert/Enhance report (a protobuf Struct) with the types and key order HTTP's JSON report has:
    `REPORT_INTEGERS` as ints (a whole double is an int again), every other value as the Struct holds it; keys in the
    server's order (`REPORT_KEYS`), those it does not name (an operation's parameters) sorted after them."""
    values: dict[str, Any] = ordered(MessageToDict(report), REPORT_KEYS)
    for name in REPORT_INTEGERS & values.keys():
        values[name] = _whole(values[name])
    return values


def ordered(value: Any, first: tuple[str, ...] = ()) -> Any:
    """`value` (a Struct as dicts and lists) with every dict's keys in one fixed order, at any depth: the names in
    `first` in that order, then the others sorted. A Struct is a protobuf map: its keys come in the order of upb's
    hash, which differs from process to process (and the server's insertion order does not travel)."""
    rank = {name: position for position, name in enumerate(first)}

    def arrange(item: Any) -> Any:
        if isinstance(item, dict):
            keys = sorted(item, key=lambda key: (rank.get(key, len(rank)), key))
            return {key: arrange(item[key]) for key in keys}
        if isinstance(item, list):
            return [arrange(element) for element in item]
        return item

    return arrange(value)


def with_integers(value: Any, integers: frozenset[str]) -> Any:
    """`value` (a Struct as dicts and lists) with the whole numbers under the keys `integers` names, at any depth,
    as ints: the types HTTP's JSON has."""
    if isinstance(value, dict):
        return {k: _whole(v) if k in integers else with_integers(v, integers) for k, v in value.items()}
    if isinstance(value, list):
        return [with_integers(item, integers) for item in value]
    return value


def _whole(value: Any) -> Any:
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_count(sent: int, received: int) -> None:
    if sent != received:
        raise ImgServeError("INTERNAL", "bad_response", f"sent {sent} images, got {received} results")
