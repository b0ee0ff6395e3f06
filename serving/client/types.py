"""Typed results of the imgserve SDK: the same frozen dataclasses whichever transport answered."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.client.errors import ImgServeError


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k answer."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Classification:
    """Top-k for one image, best first."""

    model: str
    predictions: tuple[Prediction, ...]
    timing_ms: float
    model_version: str = ""  # the version that answered (a canary split routes some requests to another)

    @property
    def top(self) -> Prediction | None:
        return self.predictions[0] if self.predictions else None


@dataclass(frozen=True)
class Analysis:
    """What the selected stages say about one image; stages this SDK does not know yet land in `extra`."""

    classification: Classification | None = None
    metadata: dict[str, Any] | None = None  # file, image, EXIF, GPS, XMP, IPTC, colours (docs/METADATA.md)
    quality: dict[str, Any] | None = None  # score 0-100, level, tags with evidence, metrics (docs/QUALITY.md)
    anomaly: dict[str, Any] | None = None  # learned model: anomaly score 0-1, per-distortion probabilities
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamResult:
    """One item of `Client.stream`: either `analysis` or `error` is set."""

    request_id: str
    analysis: Analysis | None = None
    error: "ImgServeError | None" = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ModelInfo:
    """A model in the server's repository; `backend_info` is the full backend report (HTTP only)."""

    name: str
    version: str
    task: str
    state: str  # READY or UNAVAILABLE
    reason: str | None = None
    backend: str | None = None
    backend_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelList:
    default_model: str
    models: tuple[ModelInfo, ...]

    def get(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)


# The keys of an `OperationResult.report` in the order the server writes them (pipelines.convert
# `ConvertResult.summary`, serving.image_ops `EnhanceOutcome.summary`), which HTTP's report keeps: its top level, a
# quality verdict's keys and an operation step's first keys (a step's parameters, which differ by operation, follow).
# gRPC's Struct loses the order (a map), so the gRPC transport puts the keys back in this order.
REPORT_KEYS = (
    "input_format",
    "format",
    "content_type",
    "input_size",
    "size",
    "frames",
    "input_bytes",
    "output_bytes",
    "compression_ratio",
    "operations",
    "reverted",
    "quality_before",
    "quality_after",
    "operation",
    "reason",
    "score",
    "level",
    "tags",
)


@dataclass(frozen=True)
class OperationResult:
    """A converted or enhanced image: its bytes, content type, and the server's report (sizes, compression ratio;
    for enhance the operations applied and the quality before and after), the same over HTTP and gRPC."""

    data: bytes
    content_type: str
    report: dict[str, Any]
