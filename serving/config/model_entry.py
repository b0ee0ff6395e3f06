"""A model as the server sees it once the repository is scanned: config, folder, labels, verified artefacts."""

from dataclasses import dataclass, field
from pathlib import Path

from serving.config.model_config import ModelConfig


@dataclass(frozen=True)
class ModelArtifacts:
    """Files a backend may load. Which are present decides which backends are possible."""

    onnx: Path | None = None  # float
    onnx_int8: Path | None = None  # built, checked INT8 variant that ONNX Runtime serves on CPU (serving.quantize)
    torchscript: Path | None = None
    state_dict: Path | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A model as the server sees it: config, folder, labels, artefacts and (if not servable) why."""

    config: ModelConfig
    folder: Path
    labels: tuple[str, ...] = ()
    artifacts: ModelArtifacts = field(default_factory=ModelArtifacts)
    unavailable_reason: str | None = None
    stage_key: str | None = None  # where the stages hold it: the name, or "<name>@<version>" for a canary version

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def key(self) -> str:
        """The model stage's key in a pipeline: the name for the served version, name@version for a canary."""
        return self.stage_key or self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None
