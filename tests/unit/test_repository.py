"""ModelRepository.scan over a tiny model repository built in tmp_path, and ServerSettings.from_env."""

import hashlib
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from serving.config.settings import ServerSettings
from serving.repository import ModelRepository, UnknownModelError, exported_onnx_path
from tests.paths import MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.unit

LABELS = ["cat", "dog", "fish", "bird", "frog"]


def tiny_onnx(path: Path) -> str:
    """A 3x32x32 -> 5 classifier (global average pool + matmul); returns its sha256."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 5], [0.1 * i for i in range(15)])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_config(name: str, sha256: str, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "input": {"name": "input", "layout": "NCHW", "dtype": "FP32", "size": [32, 32]},
        "preprocessing": {"resize": {"policy": "exact", "size": [32, 32]}},
        "outputs": [{"name": "logits", "shape": [5], "kind": "logits"}],
        "labels": "labels.txt",
        "backends": ["onnxruntime"],
        "weights": {"file": "tiny.onnx", "format": "onnx", "sha256": sha256, "source_url": "https://example.org/t"},
    }
    config.update(changes)
    return config


def add_model(repo: Path, folder: str, config: dict[str, Any], labels: list[str] = LABELS) -> None:
    (repo / folder).mkdir(parents=True)
    (repo / folder / "config.yaml").write_text(yaml.safe_dump(config))
    (repo / folder / "labels.txt").write_text("\n".join(labels) + "\n")


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    """A repository with a servable model, one without weights and one no configured backend can run."""
    weights = tmp_path / "weights"
    digest = tiny_onnx(weights / "tiny" / "tiny.onnx")
    repo = tmp_path / "models"
    add_model(repo, "tiny", tiny_config("tiny", digest))
    missing = {"file": "gone.onnx", "format": "onnx", "sha256": "deadbeef"}
    add_model(repo, "gone", tiny_config("gone", "deadbeef", weights=missing))
    (weights / "torchonly").mkdir()
    (weights / "torchonly" / "tiny.onnx").write_bytes((weights / "tiny" / "tiny.onnx").read_bytes())
    add_model(repo, "torchonly", tiny_config("torchonly", digest, backends=["torch"]))
    return ServerSettings(model_repository=repo, weights_dir=weights, cache_dir=tmp_path / "cache")


def test_scan_resolves_available_model(settings: ServerSettings) -> None:
    repo = ModelRepository.scan(settings)
    assert sorted(repo.entries) == ["gone", "tiny", "torchonly"]
    tiny = repo.get("tiny")
    assert tiny.available and tiny.unavailable_reason is None
    assert tiny.artifacts.onnx == settings.weights_dir / "tiny" / "tiny.onnx"
    assert tiny.artifacts.torchscript is None
    assert tiny.labels == tuple(LABELS)
    assert repo.onnx_digest(tiny) == tiny.config.weights.sha256
    assert [e.name for e in repo.servable()] == ["tiny"]


def test_missing_weights_mark_model_unavailable_with_reason(settings: ServerSettings) -> None:
    gone = ModelRepository.scan(settings).get("gone")
    assert not gone.available
    assert gone.unavailable_reason is not None
    assert "'gone.onnx'" in gone.unavailable_reason and "not found" in gone.unavailable_reason
    assert str(settings.weights_dir) not in gone.unavailable_reason  # API answers carry it: no server paths
    assert gone.labels == tuple(LABELS)  # still listed with its metadata
    with pytest.raises(ValueError, match="has no ONNX artefact"):
        ModelRepository.scan(settings).onnx_digest(gone)


def test_no_usable_backend_marks_model_unavailable(settings: ServerSettings) -> None:
    entry = ModelRepository.scan(settings).get("torchonly")
    assert entry.unavailable_reason is not None
    assert entry.unavailable_reason.startswith("no backend can run it here: torch: ")
    assert ModelRepository.scan(settings, check_backends=False).get("torchonly").available


def test_unknown_model_lists_known_names(settings: ServerSettings) -> None:
    repo = ModelRepository.scan(settings)
    with pytest.raises(UnknownModelError) as info:
        repo.get("resnet")
    assert str(info.value) == "unknown model 'resnet'; known models: gone, tiny, torchonly"
    assert isinstance(info.value, KeyError)


def test_label_count_must_match_output(settings: ServerSettings) -> None:
    add_model(settings.model_repository, "short", tiny_config("short", "deadbeef"), labels=LABELS[:4])
    with pytest.raises(ValueError, match="4 labels but output 'logits' has 5"):
        ModelRepository.scan(settings)


def test_name_must_equal_folder(settings: ServerSettings) -> None:
    add_model(settings.model_repository, "folder", tiny_config("other", "deadbeef"))
    with pytest.raises(ValueError, match="name 'other' must equal the folder name 'folder'"):
        ModelRepository.scan(settings)


def test_invalid_config_fails_the_scan(settings: ServerSettings) -> None:
    add_model(settings.model_repository, "bad", tiny_config("bad", "deadbeef", surprise=True))
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        ModelRepository.scan(settings)


def test_state_dict_model_uses_cached_export(settings: ServerSettings) -> None:
    (settings.weights_dir / "tiny.pth").write_bytes(b"state dict")
    digest = hashlib.sha256(b"state dict").hexdigest()
    weights = {"file": "tiny.pth", "format": "torchvision_state_dict", "sha256": digest}
    export = {"source": "torchvision", "architecture": "tiny"}
    add_model(settings.model_repository, "sd", tiny_config("sd", digest, weights=weights, export=export))
    entry = ModelRepository.scan(settings, check_backends=False).get("sd")
    assert entry.artifacts.state_dict == settings.weights_dir / "tiny.pth" and entry.artifacts.onnx is None
    exported = exported_onnx_path(entry.config, settings)
    assert exported == settings.cache_dir / "onnx" / f"sd-{digest[:8]}-opset17.onnx"
    exported.parent.mkdir(parents=True)
    exported.write_bytes(b"onnx")
    assert ModelRepository.scan(settings, check_backends=False).get("sd").artifacts.onnx == exported


def test_committed_repository_scans(tmp_path: Path) -> None:
    weights = require(MOBILENET_DIR).parent
    settings = ServerSettings(model_repository=PROJECT_ROOT / "models", weights_dir=weights, cache_dir=tmp_path)
    repo = ModelRepository.scan(settings, check_backends=False)
    mobilenet = repo.get("mobilenet_v2_imagenet")
    assert mobilenet.available and len(mobilenet.labels) == 1001 and mobilenet.labels[0] == "background"
    resnet = repo.get("resnet50")
    if not resnet.available:  # no torchvision weights in ../shared/models
        assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in (resnet.unavailable_reason or "")


def test_settings_from_env_reads_imgserve_variables(tmp_path: Path) -> None:
    env = {
        "IMGSERVE_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "IMGSERVE_WEIGHTS_DIR": str(tmp_path / "w"),
        "IMGSERVE_CACHE_DIR": str(tmp_path / "c"),
        "IMGSERVE_MAX_IMAGE_BYTES": "1234",
        "IMGSERVE_MAX_PIXELS": "5678",
        "MAX_PIXELS": "1",  # no prefix: ignored
    }
    settings = ServerSettings.from_env(env)
    assert settings.model_repository == tmp_path / "repo"
    assert settings.weights_dir == tmp_path / "w"
    assert settings.cache_dir == tmp_path / "c"
    limits = settings.decode_limits()
    assert (limits.max_bytes, limits.max_pixels) == (1234, 5678)
    assert settings.max_images_per_request == 256  # default kept


def test_settings_from_process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMGSERVE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("IMGSERVE_MAX_IMAGES_PER_REQUEST", "3")
    settings = ServerSettings.from_env()
    assert settings.weights_dir == tmp_path and settings.max_images_per_request == 3
    monkeypatch.setenv("IMGSERVE_MAX_PIXELS", "many")
    with pytest.raises(ValueError, match="IMGSERVE_MAX_PIXELS"):  # named by the variable to change
        ServerSettings.from_env()
