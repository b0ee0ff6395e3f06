"""A missing or wrong weights file's error names the file, never the server's paths, in what reaches an API answer
(the model's unavailable reason: the 503 of `/v2/models/{m}/infer` and of a batch naming the model, the
`/v2/repository/index` reason). A hostile-client walkthrough read `looked in /work/shared/models/resnet50/...` in
those answers with a viewer key. The paths are in the server log, where the operator looks at start."""

import hashlib
import logging
from pathlib import Path

import pytest
import yaml

from serving.config.model_config import WeightsSpec
from serving.weights import WeightsError, locate_weights
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

CONTENT = b"weights bytes\n" * 64
DIGEST = hashlib.sha256(CONTENT).hexdigest()
FILE = "absent-11ad3fa6.onnx"
SOURCE = "https://example.org/absent.onnx"


def _spec(sha256: str = DIGEST, committed: bool = False) -> WeightsSpec:
    return WeightsSpec(file=FILE, format="onnx", sha256=sha256, source_url=SOURCE, committed=committed)


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    model_dir, weights_dir = tmp_path / "secret-layout" / "models" / "absent", tmp_path / "secret-layout" / "weights"
    model_dir.mkdir(parents=True)
    weights_dir.mkdir()
    return model_dir, weights_dir


@pytest.mark.parametrize("committed", [False, True])
def test_a_missing_file_is_named_by_name_and_its_paths_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, committed: bool
) -> None:
    model_dir, weights_dir = _folders(tmp_path)
    with caplog.at_level(logging.WARNING, logger="serving.weights"), pytest.raises(WeightsError) as info:
        locate_weights("absent", _spec(committed=committed), model_dir, weights_dir)
    message = str(info.value)
    assert f"'{FILE}'" in message and "not found" in message and SOURCE in message
    assert "IMGSERVE_WEIGHTS_DIR" in message and "server log" in message
    assert str(tmp_path) not in message and "secret-layout" not in message
    looked = model_dir / FILE if committed else weights_dir / "absent" / FILE
    assert str(looked) in info.value.detail and str(looked) in caplog.text


def test_a_wrong_file_is_named_by_name_and_its_path_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir, weights_dir = _folders(tmp_path)
    (weights_dir / FILE).write_bytes(CONTENT + b"tampered")
    actual = hashlib.sha256(CONTENT + b"tampered").hexdigest()
    with caplog.at_level(logging.WARNING, logger="serving.weights"), pytest.raises(WeightsError) as info:
        locate_weights("absent", _spec(), model_dir, weights_dir)
    message = str(info.value)
    assert f"'{FILE}' has sha256 {actual}, expected {DIGEST}" in message and SOURCE in message
    assert "secret-layout" not in message
    assert str(weights_dir / FILE) in info.value.detail and str(weights_dir / FILE) in caplog.text


def test_the_models_unavailable_reason_names_no_server_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reason a repository scan gives a model without its weights is what the API answers carry."""
    from serving.repository import ModelRepository

    settings = tiny_settings(tmp_path)
    tiny = settings.model_repository / "tiny"
    absent = settings.model_repository / "absent"
    absent.mkdir()
    config = yaml.safe_load((tiny / "config.yaml").read_text())
    config |= {"name": "absent", "weights": {"file": FILE, "format": "onnx", "sha256": DIGEST, "source_url": SOURCE}}
    (absent / "config.yaml").write_text(yaml.safe_dump(config))
    (absent / "labels.txt").write_text((tiny / "labels.txt").read_text())
    with caplog.at_level(logging.WARNING, logger="serving.weights"):
        entry = ModelRepository.scan(settings).get("absent")
    reason = entry.unavailable_reason or ""
    assert not entry.available and f"'{FILE}'" in reason
    assert str(tmp_path) not in reason and str(settings.weights_dir) not in reason
    assert str(settings.weights_dir / "absent" / FILE) in caplog.text


def test_a_head_models_unusable_base_is_named_without_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A head model (quality_mos: a feature head on the classifier) whose base model's config cannot be read: the
    error carried the OSError's text, the base's config.yaml path among it (found by the review of c63a9ba)."""
    from serving.config.model_config import load_model_config
    from serving.repository import grafted_onnx
    from tests.paths import PROJECT_ROOT

    folder = PROJECT_ROOT / "models" / "quality_mos"
    config = load_model_config(folder / "config.yaml")
    settings = tiny_settings(tmp_path)  # a repository without the base model
    with caplog.at_level(logging.WARNING, logger="serving.weights"), pytest.raises(WeightsError) as info:
        grafted_onnx(config, folder / config.weights.file, settings)
    message = str(info.value)
    assert "is not usable" in message and "No such file or directory" in message, message
    assert str(tmp_path) not in message and "config.yaml'" not in message, message
    assert str(settings.model_repository) in info.value.detail and str(settings.model_repository) in caplog.text
