"""What the stages are built from: decided once by the composition root (`serving.placement.compose`)."""

from dataclasses import dataclass, field
from typing import Any

from pipelines.decode import DecoderName
from pipelines.limits import DecodeLimits
from pipelines.quality.thresholds import Thresholds
from serving.config.model_entry import ModelEntry


@dataclass(frozen=True)
class StageSettings:
    """Ready model entries (weights verified once at start-up) and the options of each stage."""

    models: dict[str, ModelEntry]  # the servable models by stage key: the name, "<name>@<version>" for a canary
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    thresholds: Thresholds | None = None  # quality thresholds (working image size, tags, score); None: packaged
    decoder: DecoderName = "pillow"
    reduced_decode: bool = True
    backend_options: dict[str, dict[str, Any]] | None = None  # per backend name, e.g. onnxruntime threads
    batching: dict[str, Any] | None = None  # overrides every model's config.yaml batching block
    quality: bool = True  # run the quality stage (classical metrics)
    metadata: bool = True  # run the metadata stage (EXIF, GPS, XMP, colours)
