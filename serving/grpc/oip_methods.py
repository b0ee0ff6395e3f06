"""`inference.GRPCInferenceService` RPCs, as methods Ray Serve's gRPC proxy calls on the ingress by name."""

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from serving import __version__
from serving.admission import REPLICA_LIMIT
from serving.grpc.edge import answer, attempt, call_facts, open_stream, peer_address
from serving.grpc.malformed import guarded_methods
from serving.grpc.oip_codec import model_config_to_proto, pb, request_from_proto, response_to_proto
from serving.grpc.proxy_services import service_descriptor
from serving.model_control import (
    HiddenModelError,
    check_control_parameters,
    controlled_versions,
    load_model,
    unload_model,
)
from serving.model_status import repository_index
from serving.oip import inference as oip
from serving.oip.inference import SERVER_EXTENSIONS
from serving.oip.model_config import model_config
from serving.oip.statistics import statistics
from serving.repository import UnknownModelError
from serving.security.audit import AuditEntry
from serving.security.gate import current_client, current_principal, replica_gate
from serving.service import InferenceService
from serving.streaming import ordered_map


@guarded_methods(service_descriptor(pb, "GRPCInferenceService"))
class OipGrpcMethods:
    service: InferenceService

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - RPC name
        async def call() -> Any:
            return pb.ServerLiveResponse(live=True)

        # counted as HTTP's /v2/health/live is (the probes pass the gate without a key and hold no slot)
        return await answer("ServerLive", "", grpc_context, call, pb.ServerLiveResponse)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            return pb.ServerReadyResponse(ready=await self.service.server_ready())

        return await answer("ServerReady", "", grpc_context, call, pb.ServerReadyResponse)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            # An unknown or unloaded model or version is `ready: false`, as Triton answers it (tritonclient's
            # is_model_ready after an unload polls for exactly that), not NOT_FOUND; HTTP's 404 is already a "no".
            try:
                self.service.check_loaded(request.name, request.version)
            except UnknownModelError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=await self.service.model_ready(request.name))

        return await answer("ModelReady", request.name, grpc_context, call, pb.ModelReadyResponse)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            return pb.ServerMetadataResponse(name="imgserve", version=__version__, extensions=SERVER_EXTENSIONS)

        return await answer("ServerMetadata", "", grpc_context, call, pb.ServerMetadataResponse)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            self.service.check_loaded(request.name, request.version)
            meta = await oip.model_metadata(self.service, request.name, request.version)
            tensors = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensors(**t) for t in meta["inputs"]],
                outputs=[tensors(**t) for t in meta["outputs"]],
            )

        return await answer("ModelMetadata", request.name, grpc_context, call, pb.ModelMetadataResponse)

    async def ModelConfig(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        """Triton's model configuration: what `GET /v2/models/{name}[/versions/{version}]/config` answers."""

        async def call() -> Any:
            return model_config_to_proto(await model_config(self.service, request.name, request.version))

        return await answer("ModelConfig", request.name, grpc_context, call, pb.ModelConfigResponse)

    async def _infer(self, request: Any) -> Any:
        self.service.check_loaded(request.model_name, request.model_version)
        parsed = request_from_proto(request)
        parsed.version = request.model_version
        return response_to_proto(await oip.infer(self.service, parsed))

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await answer(
            "ModelInfer", request.model_name, grpc_context, lambda: self._infer(request), pb.ModelInferResponse
        )

    async def ModelStreamInfer(self, requests: AsyncIterator[Any], grpc_context: Any = None) -> AsyncIterator[Any]:  # noqa: N802
        """One response per request, in order; a failed request answers with error_message, the stream goes on."""
        if not await open_stream("ModelStreamInfer", grpc_context):
            return
        facts = call_facts(grpc_context)  # what the messages read of the call: it may end while they are in flight

        async def one(request: Any) -> Any:
            call = lambda: self._infer(request)  # noqa: E731
            response, error = await attempt("ModelStreamInfer", request.model_name, call, context=facts)
            if error is not None:  # with the request's id, as Triton sends it: which of the stream's requests failed
                failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                return pb.ModelStreamInferResponse(
                    error_message=f"{error.grpc_code}: {error.message}", infer_response=failed
                )
            return pb.ModelStreamInferResponse(infer_response=response)

        async for response in ordered_map(requests, one, room=REPLICA_LIMIT.has_room):
            yield response

    async def ModelStatistics(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        """Triton's statistics: what `GET /v2/models[/{name}[/versions/{version}]]/stats` answers."""

        async def call() -> Any:
            figures = await statistics(self.service, request.name, request.version)
            return json_format.ParseDict(figures, pb.ModelStatisticsResponse())

        return await answer("ModelStatistics", request.name, grpc_context, call, pb.ModelStatisticsResponse)

    async def RepositoryIndex(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            index = pb.RepositoryIndexResponse.ModelIndex
            rows = await repository_index(self.service, request.ready)
            return pb.RepositoryIndexResponse(models=[index(**row) for row in rows])

        return await answer("RepositoryIndex", "", grpc_context, call, pb.RepositoryIndexResponse)

    def _check_no_parameters(self, request: Any) -> None:
        check_control_parameters(set(request.parameters))

    async def _check_tenant(self, method: str, model: str, grpc_context: Any) -> None:
        """Model control's tenant rule, as over HTTP (`serving.http.model_routes.tenant_rule`): another tenant's
        trained model is NOT_FOUND and audited as the refusal it is; a repository model is the server's own
        tenant's (PERMISSION_DENIED for the others). Who trained what is in the store of the Ingress's training
        service, where it has one."""
        training = getattr(getattr(getattr(self, "http_app", None), "state", None), "training", None)
        store = await training.store() if training is not None else None
        try:
            await controlled_versions(self.service.repository.settings, store, model, current_principal().tenant)
        except HiddenModelError as exc:
            replica_gate().audit_refusal(exc.refusal, peer_address(grpc_context), method)
            raise

    async def RepositoryModelLoad(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            await self._check_tenant("RepositoryModelLoad", request.model_name, grpc_context)
            self._check_no_parameters(request)
            version = await load_model(self.service, request.model_name)
            audit_model_control("model.load", request.model_name, {"version": version})
            return pb.RepositoryModelLoadResponse()

        return await answer(
            "RepositoryModelLoad", request.model_name, grpc_context, call, pb.RepositoryModelLoadResponse
        )

    async def RepositoryModelUnload(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def call() -> Any:
            await self._check_tenant("RepositoryModelUnload", request.model_name, grpc_context)
            self._check_no_parameters(request)
            await unload_model(self.service, request.model_name)
            audit_model_control("model.unload", request.model_name, {})
            return pb.RepositoryModelUnloadResponse()

        return await answer(
            "RepositoryModelUnload", request.model_name, grpc_context, call, pb.RepositoryModelUnloadResponse
        )


def audit_model_control(action: str, model: str, detail: dict[str, Any]) -> None:
    """Model control over gRPC in the audit log, by the caller the gate admitted."""
    replica_gate().audit(AuditEntry.by(current_principal(), action, current_client(), target=model, detail=detail))
