"""Request/response models of the image API (`/v1`), one module for both edges to agree on."""

from typing import Any

from pydantic import BaseModel, Field


class PredictionOut(BaseModel):
    label: str = Field(description="Class label text.")
    index: int = Field(description="Output index of the class.")
    score: float = Field(description="Probability (softmax applied to logits).")


class ClassifyResult(BaseModel):
    model: str = Field(description="Model that answered.")
    model_version: str = Field(default="", description="Its version that answered (canary splits route some).")
    predictions: list[PredictionOut] = Field(description="Top-k, best first.")
    timing_ms: float = Field(description="Server time for this image: decode, queue, model, post-processing.")
    stage_ms: dict[str, float] = Field(default_factory=dict, description="Where the time went: decode, queue, model.")


class ClassifyResponse(BaseModel):
    results: list[ClassifyResult] = Field(description="One result per image, in request order.")


class AnalysisResult(BaseModel):
    classification: ClassifyResult | None = Field(default=None, description="Present when 'classification' ran.")
    quality: dict[str, Any] | None = Field(
        default=None, description="score 0-100, level, tags with evidence, metrics (docs/QUALITY.md)."
    )
    anomaly: dict[str, Any] | None = Field(
        default=None, description="learned model: anomaly score 0-1 and per-distortion probabilities."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Present when 'metadata' ran; fields and units in docs/METADATA.md."
    )


class MetadataResponse(BaseModel):
    results: list[dict[str, Any]] = Field(description="Metadata per image, in request order (docs/METADATA.md).")


class AnalyzeResponse(BaseModel):
    results: list[AnalysisResult] = Field(description="One result per image, in request order.")


class ModelOut(BaseModel):
    name: str
    version: str
    task: str
    state: str = Field(description="READY or UNAVAILABLE.")
    reason: str | None = Field(default=None, description="Why an UNAVAILABLE model is not served here.")
    backend: dict[str, Any] = Field(default_factory=dict, description="Chosen backend, device and batching.")
    versions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every version on disk: version, state (READY, UNAVAILABLE), reason, and the validation "
        "accuracy a training job recorded for it (null for models that were not trained here).",
    )


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ModelOut]


class Category(BaseModel):
    index: int
    label: str


class CategoriesResponse(BaseModel):
    model: str
    categories: list[Category]


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, for humans.")
    kind: str = Field(description="Machine-readable error kind (invalid_image, too_large, unknown_model, ...).")
