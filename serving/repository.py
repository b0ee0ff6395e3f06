"""The model repository: one folder per model with `config.yaml`, labels and a model card.

`ModelRepository.scan` validates every config and resolves each model's artefacts. A model whose
weights are missing, or that no preferred backend can load here, stays listed with the reason, so
`/v1/models` can say why it is not served instead of silently hiding it.
"""

import logging
from pathlib import Path

from serving.config.model_config import ModelConfig, load_model_config
from serving.config.model_entry import ModelArtifacts, ModelEntry
from serving.config.settings import ServerSettings
from serving.feature_head import GRAPH_VERSION, write_quality_graph
from serving.quantize import served_int8
from serving.weights import WeightsError, locate_weights, sha256_of

logger = logging.getLogger(__name__)
__all__ = ["ModelArtifacts", "ModelEntry", "ModelRepository", "UnknownModelError", "exported_onnx_path"]


class UnknownModelError(KeyError):
    """No model of that name in the repository (HTTP 404 / gRPC NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


def exported_onnx_path(config: ModelConfig, settings: ServerSettings) -> Path:
    """Cache location of a build-time ONNX export (a build output, never committed)."""
    return (
        settings.cache_dir
        / "onnx"
        / f"{config.name}-{config.weights.sha256[:8]}-opset{config.export.opset if config.export else 0}.onnx"
    )


def read_labels(config: ModelConfig, folder: Path) -> tuple[str, ...]:
    """Labels, one per output index; empty when the model has none."""
    if not config.labels:
        return ()
    lines = (folder / config.labels).read_text(encoding="utf-8").splitlines()
    expected = config.outputs[0].shape[-1]
    if len(lines) != expected:
        raise ValueError(
            f"{folder / config.labels}: {len(lines)} labels but output '{config.outputs[0].name}' has {expected}"
        )
    return tuple(line.strip() for line in lines)


def resolve_artifacts(config: ModelConfig, folder: Path, settings: ServerSettings) -> ModelArtifacts:
    """Verified weights -> artefacts; raises `WeightsError` when the weights are missing or wrong."""
    weights = locate_weights(config.name, config.weights, folder, settings.weights_dir)
    if config.weights.format == "onnx":
        return ModelArtifacts(onnx=weights, onnx_int8=served_int8(config, settings))
    if config.weights.format == "torchscript":
        return ModelArtifacts(torchscript=weights)
    if config.weights.format == "feature_head":
        return ModelArtifacts(onnx=grafted_onnx(config, weights, settings), state_dict=weights)
    exported = exported_onnx_path(config, settings)
    return ModelArtifacts(onnx=exported if exported.is_file() else None, state_dict=weights)


def grafted_onnx(config: ModelConfig, head: Path, settings: ServerSettings) -> Path:
    """The feature-head model's ONNX in the cache directory, built here (in about a second) when absent.

    The graph is a build output keyed by the head's sha256 and `GRAPH_VERSION`; the base model's weights are
    located and verified like any other (a missing base raises `WeightsError`: the model is listed unavailable).
    """
    assert config.export is not None and config.export.base
    target = settings.cache_dir / "onnx" / f"{config.name}-{config.weights.sha256[:8]}-g{GRAPH_VERSION}.onnx"
    if target.is_file():
        return target
    base_folder = settings.model_repository / config.export.base
    try:
        base = load_model_config(base_folder / "config.yaml")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"base model '{config.export.base}' of '{config.name}' is not usable: {exc}") from exc
    base_weights = locate_weights(base.name, base.weights, base_folder, settings.weights_dir)
    if not {"score", "probs"} <= {o.name for o in config.outputs}:
        raise WeightsError(f"'{config.name}': a feature-head model's outputs are 'score' and 'probs'")
    logger.info("building %s from %s + %s", target.name, base_weights.name, head.name)
    return write_quality_graph(base_weights, head, config.input.size[0], "score", "probs", target)


class ModelRepository:
    """All models under `settings.model_repository`, keyed by name."""

    def __init__(self, entries: dict[str, ModelEntry], settings: ServerSettings):
        self.entries = entries
        self.settings = settings

    @classmethod
    def scan(cls, settings: ServerSettings | None = None, check_backends: bool = True) -> "ModelRepository":
        """Read every `*/config.yaml`; invalid configs raise, missing weights mark the model unavailable."""
        from serving.backends.registry import backend_plan  # local import: backends import this module

        settings = settings or ServerSettings.from_env()
        entries: dict[str, ModelEntry] = {}
        for config_path in sorted(settings.model_repository.glob("*/config.yaml")):
            folder = config_path.parent
            config = load_model_config(config_path)
            if config.name != folder.name:
                raise ValueError(f"{config_path}: name '{config.name}' must equal the folder name '{folder.name}'")
            labels = read_labels(config, folder)
            try:
                artifacts = resolve_artifacts(config, folder, settings)
            except WeightsError as exc:
                entries[config.name] = ModelEntry(config, folder, labels, unavailable_reason=str(exc))
                continue
            entry = ModelEntry(config, folder, labels, artifacts)
            if check_backends:
                chosen, reasons = backend_plan(entry)
                if chosen is None:
                    entry = ModelEntry(
                        config, folder, labels, artifacts, "no backend can run it here: " + "; ".join(reasons)
                    )
            entries[config.name] = entry
        return cls(entries, settings)

    def get(self, name: str) -> ModelEntry:
        """The entry, or `UnknownModelError` listing the known names."""
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model '{name}'; known models: {', '.join(sorted(self.entries))}"
            ) from None

    def servable(self) -> list[ModelEntry]:
        """Entries that can be served on this machine."""
        return [entry for entry in self.entries.values() if entry.available]

    def onnx_digest(self, entry: ModelEntry) -> str:
        """sha256 of the ONNX artefact (keys TensorRT engine caches)."""
        if entry.artifacts.onnx is None:
            raise ValueError(f"model '{entry.name}' has no ONNX artefact")
        return sha256_of(entry.artifacts.onnx)
