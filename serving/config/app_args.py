"""`args:` of the imgserve application in serve_config.yaml (pure pydantic: importable without Ray Serve)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DirectIngressOptions(BaseModel):
    """Listeners each Ingress replica opens itself (serving.deployments.direct_ingress): HTTP and gRPC clients
    reach the replica without Ray Serve's proxy in between. Several replicas on one host share the ports
    (SO_REUSEPORT: the kernel spreads connections over them)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to listen on ('0.0.0.0' for all).")
    http_port: int | None = Field(default=8000, description="HTTP port (the FastAPI app); null = no HTTP listener.")
    grpc_port: int | None = Field(default=9000, description="gRPC port (OIP + ImageService + Health); null = none.")
    max_inflight: int = Field(
        default=1024,
        ge=1,
        description="Requests a replica works on at once over all its listeners; beyond, new ones are answered "
        "503 / RESOURCE_EXHAUSTED (kind 'overloaded') — the direct path's max_queued_requests.",
    )


class AppArgs(BaseModel):
    """`args:` of the application in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | Literal["all"] = Field(
        default="all", description="Models to deploy; 'all' = every servable one."
    )
    default_model: str = Field(default="mobilenet_v2_imagenet", description="Model used when a request names none.")
    decoder: Literal["pillow", "opencv"] = Field(default="pillow", description="CPU decoder of the decode stage.")
    reduced_decode: bool = Field(default=True, description="Decode JPEG at 1/2..1/8 scale when the model input allows.")
    decode_location: Literal["stage", "model"] = Field(
        default="stage",
        description="'stage': the Decoder deployment decodes (scales on its own, the cluster default); 'model': "
        "classification requests are decoded inside the model replica, one hop fewer (small machines).",
    )
    model_location: Literal["stage", "ingress"] = Field(
        default="stage",
        description="'stage': the Decoder and one batched deployment per model, each scaling on its own (the "
        "graph; clusters); 'ingress': every Ingress replica decodes and runs the batched models in-process, no "
        "actor call per image (single machines, where Ray's per-call CPU dominates); scale by Ingress replicas. "
        "The serve config must then not list Decoder or model-* deployments.",
    )
    batching: dict[str, Any] | None = Field(
        default=None,
        description="model_location 'ingress' only: overrides of every model's batching block (keys of "
        "config.yaml `batching`); per-model deployments take the same mapping as `user_config: {batching: ...}`.",
    )
    ort_threads: int | None = Field(default=None, description="ONNX Runtime intra-op threads per model replica.")
    direct_ingress: DirectIngressOptions | None = Field(
        default=None,
        description="Ingress replicas serve HTTP/gRPC on their own listeners (no proxy hop per request). Pair with "
        "`proxy_location: Disabled` to use the usual ports; null = clients go through Ray Serve's proxy.",
    )
    metadata: bool = Field(default=True, description="Deploy the metadata stage (EXIF, GPS, XMP, colours).")
    quality: bool = Field(default=True, description="Deploy the quality stage (classical metrics, score, tags).")
    batch_jobs: bool = Field(default=True, description="Deploy the BatchWorker behind /v1/batch and /v1/jobs.")
