"""`args:` of the imgserve application in serve_config.yaml (pure pydantic: importable without Ray Serve)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    metadata: bool = Field(default=True, description="Deploy the metadata stage (EXIF, GPS, XMP, colours).")
    quality: bool = Field(default=True, description="Deploy the quality stage (classical metrics, score, tags).")
    batch_jobs: bool = Field(default=True, description="Deploy the BatchWorker behind /v1/batch and /v1/jobs.")
