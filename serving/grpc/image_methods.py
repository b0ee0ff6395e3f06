"""`imgserve.v1.ImageService` and `grpc.health.v1.Health` RPCs, called on the ingress by Ray Serve's proxy."""

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from grpc_health.v1 import health_pb2

from serving.access_log import new_request_id
from serving.admission import REPLICA_LIMIT
from serving.config.settings import ServerSettings
from serving.errors import RequestTooLargeError, ServiceError
from serving.grpc.edge import (
    CallerRefusedError,
    answer,
    attempt,
    call_facts,
    client_request_id,
    end_with_error,
    open_stream,
)
from serving.grpc.malformed import guarded_methods
from serving.grpc.proxy_services import service_descriptor
from serving.grpc.stubs import load
from serving.image_ops import ImageOperations, OperationOptions
from serving.metrics import count_images
from serving.model_status import model_statuses
from serving.requests import ImageOptions
from serving.service import Analysis, Classification, InferenceService
from serving.streaming import ordered_map

pb = load("image_service_pb2")
HEALTH_SERVICES = {"", "inference.GRPCInferenceService", "imgserve.v1.ImageService"}


def classification_proto(result: Classification) -> Any:
    return pb.Classification(
        model=result.model,
        predictions=[pb.Prediction(label=p.label, index=p.index, score=p.score) for p in result.predictions],
        timing_ms=result.timing_ms,
        stage_ms=result.stage_ms,
        model_version=result.model_version,
    )


def analysis_proto(result: Analysis) -> Any:
    message = pb.ImageAnalysis()
    if result.classification is not None:
        message.classification.CopyFrom(classification_proto(result.classification))
    document = result.to_dict()
    for name in ("quality", "anomaly", "metadata"):
        if name in document:
            getattr(message, name).update(json.loads(json.dumps(document[name])))  # tuples -> lists, JSON types only
    return message


def request_options(request: Any, fields: bool = False) -> ImageOptions:
    """The options of a Classify/Analyze/AnalyzeStream request (0 / empty fields mean the defaults)."""
    return ImageOptions.parse(
        model=request.model or None,
        model_version=request.model_version or None,
        top_k=request.top_k or None,
        confidence_threshold=request.confidence_threshold or None,
        fields=list(request.fields) if fields else None,
        anonymize=bool(getattr(request, "anonymize", False)) or None,
    )


class UnknownServiceError(ServiceError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "not_found"


# Room left in a message for the report (a few kilobytes) beside the image.
REPORT_ALLOWANCE_BYTES = 64 * 1024


def operation_response(data: bytes, content_type: str, report: dict[str, Any], max_message_bytes: int) -> Any:
    """The answer of Convert/Enhance, or `too_large` when the image would not fit in one message (the transport
    would fail the call with a bare "Sent message larger than max" after all the work)."""
    if len(data) + REPORT_ALLOWANCE_BYTES > max_message_bytes:
        raise RequestTooLargeError(
            f"the output image is {len(data)} bytes, more than a gRPC answer of this server holds"
            f" ({max_message_bytes} bytes); ask for max_side or a compressed format, or use HTTP"
        )
    message = pb.ImageOperationResponse(image=data, content_type=content_type)
    message.report.update(json.loads(json.dumps(report)))
    return message


@guarded_methods(service_descriptor(pb, "ImageService"), service_descriptor(health_pb2, "Health"))
class ImageGrpcMethods:
    service: InferenceService
    image_operations: ImageOperations
    # the largest message this server's gRPC listeners send (Ray's proxy and the direct listener: max_request_bytes)
    max_message_bytes: int = ServerSettings.model_fields["max_request_bytes"].default

    async def Classify(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - RPC name
        async def call() -> Any:
            count_images("Classify", "grpc", list(request.images))
            results = await self.service.classify(list(request.images), request_options(request))
            return pb.ClassifyResponse(results=[classification_proto(r) for r in results])

        return await answer(
            "Classify", request.model or self.service.default_model, grpc_context, call, pb.ClassifyResponse
        )

    async def Analyze(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            count_images("Analyze", "grpc", list(request.images))
            results = await self.service.analyze(list(request.images), request_options(request, fields=True))
            return pb.AnalyzeResponse(results=[analysis_proto(r) for r in results])

        return await answer(
            "Analyze", request.model or self.service.default_model, grpc_context, call, pb.AnalyzeResponse
        )

    async def AnalyzeStream(self, requests: AsyncIterator[Any], grpc_context: Any = None) -> AsyncIterator[Any]:  # noqa: N802
        """One response per image, in order, with its request id; a bad image (or a rate-limited message) gets
        `error`, the stream goes on. A message refused for its caller (the key revoked or expired, its role) ends
        the stream with that status after the answers before it (`CallerRefusedError`)."""
        if not await open_stream("AnalyzeStream", grpc_context):
            return
        stream_id = client_request_id(grpc_context) or new_request_id()
        frames = itertools.count()
        facts = call_facts(grpc_context)  # what the messages read of the call: it may end while they are in flight

        async def one(request: Any) -> Any:
            async def call() -> Any:
                count_images("AnalyzeStream", "grpc", [request.image])
                results = await self.service.analyze([request.image], request_options(request, fields=True))
                return analysis_proto(results[0])

            model = request.model or self.service.default_model
            # the log (and an internal error's message) says which frame of which stream
            frame_id = f"{stream_id}/{request.request_id[:128] or next(frames)}"
            analysis, error = await attempt("AnalyzeStream", model, call, frame_id, facts, stream=True)
            if error is not None:
                failure = pb.Error(
                    code=error.grpc_code, kind=error.kind, message=error.message, retry_after_s=error.retry_after_s or 0
                )
                return pb.AnalyzeStreamResponse(request_id=request.request_id, error=failure)
            return pb.AnalyzeStreamResponse(request_id=request.request_id, analysis=analysis)

        try:
            async for response in ordered_map(requests, one, room=REPLICA_LIMIT.has_room):
                yield response
        except CallerRefusedError as refused:
            end_with_error(grpc_context, refused.error, [("request_id", stream_id)])
            return
        if grpc_context is not None:
            grpc_context.set_trailing_metadata([("request_id", stream_id)])

    async def ListModels(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            models = [
                pb.ModelState(
                    name=s.name,
                    version=s.version,
                    task=s.task,
                    state=s.state,
                    reason=s.reason or "",
                    backend=str(s.backend.get("backend", "")),
                )
                for s in await model_statuses(self.service)
            ]
            return pb.ListModelsResponse(default_model=self.service.default_model, models=models)

        return await answer("ListModels", "", grpc_context, call, pb.ListModelsResponse)

    async def Convert(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        """Options as /v1/convert takes them (`OperationOptions`); `report=json` is accepted and changes nothing: a
        gRPC answer always carries the image and the report, which HTTP's `report=json` moves into its body."""

        async def call() -> Any:
            count_images("Convert", "grpc", [request.image])
            options = OperationOptions.parse(request.options, enhancing=False)
            result = await self.image_operations.convert(request.image, options.convert)
            return operation_response(result.data, result.content_type, result.summary(), self.max_message_bytes)

        return await answer("Convert", "", grpc_context, call, pb.ImageOperationResponse)

    async def Enhance(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            count_images("Enhance", "grpc", [request.image])
            options = OperationOptions.parse(request.options, enhancing=True)
            assert options.enhance is not None
            outcome = await self.image_operations.enhance(request.image, options.enhance, options.convert)
            data, content_type = outcome.result.data, outcome.result.content_type
            return operation_response(data, content_type, outcome.summary(), self.max_message_bytes)

        return await answer("Enhance", "", grpc_context, call, pb.ImageOperationResponse)

    # ---- grpc.health.v1.Health -----------------------------------------------------------------------
    async def _health(self, service_name: str) -> Any:
        if service_name not in HEALTH_SERVICES:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        ready = await self.service.server_ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        """The health protocol: `Check` of a service this server does not know fails with NOT_FOUND (`Watch`
        answers SERVICE_UNKNOWN and keeps watching)."""

        async def call() -> Any:
            if request.service not in HEALTH_SERVICES:
                raise UnknownServiceError(f"no health status for service {request.service[:200]!r}")
            return await self._health(request.service)

        return await answer("Check", "", grpc_context, call, health_pb2.HealthCheckResponse)

    async def Watch(self, request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:  # noqa: N802
        """Sends the status now and again whenever it changes (checked every second) until the client leaves."""
        last = None
        while True:
            current = await self._health(request.service)
            if current.status != last:
                last = current.status
                yield current
            await asyncio.sleep(1.0)
