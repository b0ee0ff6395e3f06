"""Build-time preparation of the model repository: verify weights, export torchvision models to ONNX.

Exports go to the cache directory (a build output, never committed). Where torchvision or a weights
file is missing the model is skipped with the reason; it is never served with random weights.
"""

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from serving.config.settings import ServerSettings
from serving.quantize import build_int8, read_int8_report
from serving.repository import ModelEntry, ModelRepository, exported_onnx_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareResult:
    model: str
    status: str  # "ready", "exported", "built", "skipped"
    detail: str


def export_torchvision_onnx(entry: ModelEntry, target: Path) -> Path:
    """torchvision architecture + verified state dict -> ONNX with a dynamic batch axis."""
    import torch

    assert entry.config.export is not None and entry.artifacts.state_dict is not None
    models = importlib.import_module("torchvision.models")
    model = getattr(models, entry.config.export.architecture)(weights=None)
    model.load_state_dict(torch.load(entry.artifacts.state_dict, map_location="cpu", weights_only=True))
    model.eval()
    h, w = entry.config.input.size
    example = torch.zeros(1, entry.config.input.channels, h, w)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        input_names=[entry.config.input.name],
        output_names=[o.name for o in entry.config.outputs],
        dynamic_axes={entry.config.input.name: {0: "N"}, **{o.name: {0: "N"} for o in entry.config.outputs}},
        opset_version=entry.config.export.opset,
        dynamo=False,
    )
    tmp.replace(target)
    return target


def prepare_model(entry: ModelEntry, settings: ServerSettings) -> PrepareResult:
    # Heads (the quality model's, a trained classifier's) are grafted onto their base by the repository scan itself.
    if entry.config.weights.format in ("feature_head", "classifier_head"):
        if entry.artifacts.onnx is not None:
            return PrepareResult(entry.name, "ready", f"grafted ONNX at {entry.artifacts.onnx}")
        return PrepareResult(entry.name, "skipped", entry.unavailable_reason or "unavailable")
    if entry.config.export is None:
        if entry.available:
            return PrepareResult(
                entry.name, "ready", f"weights verified: {entry.artifacts.onnx or entry.artifacts.torchscript}"
            )
        return PrepareResult(entry.name, "skipped", entry.unavailable_reason or "unavailable")
    if entry.artifacts.state_dict is None:
        return PrepareResult(entry.name, "skipped", entry.unavailable_reason or "weights not found")
    target = exported_onnx_path(entry.config, settings)
    if target.is_file():
        return PrepareResult(entry.name, "ready", f"ONNX export cached at {target}")
    try:
        importlib.import_module("torchvision.models")
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises RuntimeError at import
        return PrepareResult(
            entry.name, "skipped", f"torchvision is not importable here ({type(exc).__name__}); not exported"
        )
    export_torchvision_onnx(entry, target)
    return PrepareResult(entry.name, "exported", f"ONNX written to {target}")


def prepare_int8(entry: ModelEntry, settings: ServerSettings) -> PrepareResult | None:
    """Build (once) and check the INT8 variant of a model that configures one; None when it does not."""
    config = entry.config
    if config.int8 is None:
        return None
    name = f"{entry.name} (int8)"
    if entry.artifacts.onnx is None:
        return PrepareResult(name, "skipped", "no float ONNX to quantise")
    report = read_int8_report(config, settings)
    if report is None:
        try:
            logger.info("building the INT8 variant of %s (about a minute)", entry.name)
            report = build_int8(config, entry.artifacts.onnx, settings)
        except Exception as exc:  # noqa: BLE001 - missing photos or a quantiser failure: float is served, not a crash
            return PrepareResult(name, "skipped", f"not built ({type(exc).__name__}: {exc}); float is served")
        status = "built"
    else:
        status = "ready"
    served = "served on CPU" if report.passed and config.int8.serve else "float is served"
    return PrepareResult(name, status, f"{report.summary()}; {served}")


def prepare_repository(settings: ServerSettings | None = None) -> list[PrepareResult]:
    """Prepare every model; never raises for a model that simply cannot be built here."""
    settings = settings or ServerSettings.from_env()
    repository = ModelRepository.scan(settings, check_backends=False)
    results = []
    for entry in repository.entries.values():
        results.append(prepare_model(entry, settings))
        if (int8 := prepare_int8(entry, settings)) is not None:
            results.append(int8)
    return results
