"""Weights lookup and verification: where files are searched, and what the errors tell the operator."""

import hashlib
from pathlib import Path

import pytest

from serving.config.model_config import WeightsSpec
from serving.weights import WeightsError, locate_weights, sha256_of, weight_candidates

pytestmark = pytest.mark.unit

CONTENT = b"not really weights, but bytes with a known digest\n" * 100
DIGEST = hashlib.sha256(CONTENT).hexdigest()
SOURCE = "https://example.org/models/tiny.onnx"


def spec(sha256: str = DIGEST, committed: bool = False, source_url: str | None = SOURCE) -> WeightsSpec:
    return WeightsSpec(file="tiny.onnx", format="onnx", sha256=sha256, source_url=source_url, committed=committed)


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    model_dir, weights_dir = tmp_path / "models" / "tiny", tmp_path / "weights"
    model_dir.mkdir(parents=True)
    weights_dir.mkdir()
    return model_dir, weights_dir


def test_sha256_of_streams_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(CONTENT)
    assert sha256_of(path, chunk=7) == DIGEST


def test_finds_file_in_model_subfolder_first(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny").mkdir()
    (weights_dir / "tiny" / "tiny.onnx").write_bytes(CONTENT)
    (weights_dir / "tiny.onnx").write_bytes(b"a different, wrong file")
    assert locate_weights("tiny", spec(), model_dir, weights_dir) == weights_dir / "tiny" / "tiny.onnx"


def test_finds_file_directly_in_weights_dir(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").write_bytes(CONTENT)
    assert locate_weights("tiny", spec(), model_dir, weights_dir) == weights_dir / "tiny.onnx"


def test_committed_weights_are_only_looked_up_in_the_model_folder(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").write_bytes(CONTENT)
    assert weight_candidates("tiny", spec(committed=True), model_dir, weights_dir) == [model_dir / "tiny.onnx"]
    with pytest.raises(WeightsError):
        locate_weights("tiny", spec(committed=True), model_dir, weights_dir)
    (model_dir / "tiny.onnx").write_bytes(CONTENT)
    assert locate_weights("tiny", spec(committed=True), model_dir, weights_dir) == model_dir / "tiny.onnx"


def test_missing_file_error_says_what_where_and_how_to_fix(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    with pytest.raises(WeightsError) as info:
        locate_weights("tiny", spec(), model_dir, weights_dir)
    message, detail = str(info.value), info.value.detail  # the API's words, and the server log's with the paths
    assert "'tiny.onnx'" in message and str(weights_dir) not in message
    assert str(weights_dir / "tiny" / "tiny.onnx") in detail
    assert str(weights_dir / "tiny.onnx") in detail
    assert SOURCE in message and SOURCE in detail
    assert "IMGSERVE_WEIGHTS_DIR" in message


def test_missing_file_without_source_url_still_explains(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    with pytest.raises(WeightsError, match="obtain it from the model's publisher"):
        locate_weights("tiny", spec(source_url=None), model_dir, weights_dir)


def test_a_directory_with_the_file_name_is_not_a_weights_file(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").mkdir()
    with pytest.raises(WeightsError, match="not found"):
        locate_weights("tiny", spec(), model_dir, weights_dir)


def test_wrong_digest_names_expected_and_actual(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").write_bytes(CONTENT + b"tampered")
    actual = hashlib.sha256(CONTENT + b"tampered").hexdigest()
    with pytest.raises(WeightsError) as info:
        locate_weights("tiny", spec(), model_dir, weights_dir)
    message = str(info.value)
    assert f"has sha256 {actual}" in message
    assert f"expected {DIGEST}" in message
    assert "'tiny.onnx'" in message and str(weights_dir) not in message
    assert str(weights_dir / "tiny.onnx") in info.value.detail  # the path: in the server log only
    assert SOURCE in message


@pytest.mark.parametrize("prefix_length", [8, 12, 63, 64])
def test_digest_prefix_is_accepted(tmp_path: Path, prefix_length: int) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").write_bytes(CONTENT)
    assert locate_weights("tiny", spec(DIGEST[:prefix_length].upper()), model_dir, weights_dir).is_file()


def test_wrong_prefix_is_rejected(tmp_path: Path) -> None:
    model_dir, weights_dir = dirs(tmp_path)
    (weights_dir / "tiny.onnx").write_bytes(CONTENT)
    wrong = ("0" if DIGEST[0] != "0" else "1") + DIGEST[1:8]
    with pytest.raises(WeightsError, match=f"expected {wrong}"):
        locate_weights("tiny", spec(wrong), model_dir, weights_dir)
