"""A tiny model repository generated in a temp folder: a 5-class classifier and a stand-in `quality_mos`.

Real ONNX graphs run by ONNX Runtime (global average pool + matmul), small enough to build in milliseconds, so
the service, the local placement and the edges can be tested without Ray and without third-party weights.
"""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import yaml
from onnx import TensorProto, helper

if TYPE_CHECKING:
    from serving.config.settings import ServerSettings
    from serving.service import InferenceService

CLASSES = ["cat", "dog", "fish", "bird", "frog"]
QUALITY_TAGS = (Path(__file__).parents[2] / "models" / "quality_mos" / "labels.txt").read_text().split()
SIZE = 32


def _save(graph: Any, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classifier_graph(size: int = SIZE, scale: float = 0.5, output: str = "logits") -> Any:
    """Global average pool + matmul, 3 x `size` x `size` -> 5 outputs named `output`; weights `scale` * (0..6)."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, len(CLASSES)], [scale * (i % 7) for i in range(15)])
    return helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], [output]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", len(CLASSES)])],
        [weights],
    )


def quality_graph() -> Any:
    n = len(QUALITY_TAGS)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, n], [0.3 * ((i % 5) - 2) for i in range(3 * n)])
    v = helper.make_tensor("v", TensorProto.FLOAT, [3, 1], [0.4, -0.2, 0.1])
    return helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probs"]),
            helper.make_node("MatMul", ["flat", "v"], ["y"]),
            helper.make_node("Sigmoid", ["y"], ["score"]),
        ],
        "tiny_quality",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
        ],
        [w, v],
    )


def _config(name: str, task: str, sha256: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "task": task,
        "input": {"name": "input", "layout": "NCHW", "dtype": "FP32", "size": [SIZE, SIZE]},
        "preprocessing": {
            "resize": {"policy": "shorter_side", "size": [SIZE, SIZE]},
            "crop": [SIZE, SIZE],
            "scale": 1 / 255,
        },
        "outputs": outputs,
        "labels": "labels.txt",
        "batching": {"max_batch_size": 8, "batch_wait_timeout_ms": 1},
        "backends": ["onnxruntime"],
        "weights": {"file": "model.onnx", "format": "onnx", "sha256": sha256, "committed": True},
    }


def write_tiny_repository(root: Path) -> Path:
    """`root/models` with `tiny` (the classifier) and `quality_mos`; returns the models folder."""
    models = root / "models"
    for name, task, graph, outputs, labels in (
        ("tiny", "classification", classifier_graph(), [{"name": "logits", "shape": [5], "kind": "logits"}], CLASSES),
        (
            "quality_mos",
            "quality",
            quality_graph(),
            [
                {"name": "probs", "shape": [len(QUALITY_TAGS)], "kind": "probabilities"},
                {"name": "score", "shape": [1], "kind": "raw"},
            ],
            QUALITY_TAGS,
        ),
    ):
        folder = models / name
        folder.mkdir(parents=True)
        digest = _save(graph, folder / "model.onnx")
        (folder / "config.yaml").write_text(yaml.safe_dump(_config(name, task, digest, outputs)))
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return models


def tiny_settings(root: Path) -> "ServerSettings":
    """Server settings over a tiny repository written under `root` (weights and build outputs there too)."""
    from serving.config.settings import ServerSettings

    return ServerSettings(
        model_repository=write_tiny_repository(root), weights_dir=root / "weights", cache_dir=root / "cache"
    )


def tiny_local_service(root: Path) -> tuple["InferenceService", "ServerSettings"]:
    """The local placement's `InferenceService` over the tiny models (default model "tiny"), and its settings."""
    from serving.config.app_args import AppArgs
    from serving.placement import build_service, compose

    settings = tiny_settings(root)
    return build_service(compose(AppArgs(placement="local", default_model="tiny"), settings)), settings


def versioned_copy(source: Path, root: Path, version: str) -> None:
    """A copy of the model folder `source` as version `version` of the versioned model at `root`."""
    import shutil

    folder = root / version
    shutil.copytree(source, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config.update(name=root.name, version=version)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
