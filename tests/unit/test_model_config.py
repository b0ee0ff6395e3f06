"""models/<name>/config.yaml: the committed configs validate, bad ones fail with a message that says why."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from serving.config.model_config import ModelConfig, load_model_config
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

MODELS_DIR = PROJECT_ROOT / "models"
COMMITTED = sorted(p.parent.name for p in MODELS_DIR.glob("*/config.yaml"))


def mobilenet_raw() -> dict[str, Any]:
    return yaml.safe_load((MODELS_DIR / "mobilenet_v2_imagenet" / "config.yaml").read_text())


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of the mobilenet config with the value at one dotted path replaced."""
    raw = mobilenet_raw()
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[leaf] = value
    return raw


def test_every_committed_model_is_present() -> None:
    assert COMMITTED == ["mobilenet_v2_embedding", "mobilenet_v2_imagenet", "quality_mos", "resnet50"]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_config_validates(name: str) -> None:
    config = load_model_config(MODELS_DIR / name / "config.yaml")
    assert config.name == name  # the repository requires name == folder name
    assert config.input.shape == [3, *config.input.size] and config.input.size[0] in (224, 256)
    assert config.preprocess_spec().output_size == tuple(config.input.size)
    assert max(config.batching.preferred_batch_sizes) <= config.batching.max_batch_size
    assert config.backends[-1] == "onnxruntime"  # the CPU fallback comes last in both


def test_mobilenet_preprocess_spec_maps_every_field(mobilenet_config: ModelConfig) -> None:
    spec = mobilenet_config.preprocess_spec()
    assert spec.resize_policy == "shorter_side"
    assert spec.resize_size == (256, 256)
    assert spec.crop_size == (224, 224)
    assert spec.interpolation == "bilinear"
    assert spec.scale == 1.0
    assert spec.mean == (128.0, 128.0, 128.0)
    assert spec.std == (128.0, 128.0, 128.0)
    assert spec.layout == "NCHW"
    assert spec.dtype == "float32"


def test_resnet_preprocess_spec_uses_torchvision_numbers() -> None:
    config = load_model_config(MODELS_DIR / "resnet50" / "config.yaml")
    spec = config.preprocess_spec()
    assert spec.resize_size == (232, 232)
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert spec.std == pytest.approx((0.229, 0.224, 0.225))
    assert config.weights.sha256 == "11ad3fa6"  # an 8-digit prefix is allowed
    assert config.export is not None and config.export.architecture == "resnet50"


def test_nhwc_uint8_input_maps_to_spec() -> None:
    raw = with_change("input.layout", "NHWC")
    raw["input"]["dtype"] = "UINT8"
    for key in ("scale", "mean", "std"):  # a UINT8 input takes the pixels as they are
        raw["preprocessing"].pop(key, None)
    config = ModelConfig.model_validate(raw)
    assert config.input.shape == [224, 224, 3]
    assert config.preprocess_spec().layout == "NHWC"
    assert config.preprocess_spec().dtype == "uint8"


def test_a_uint8_input_with_normalisation_is_refused() -> None:
    """scale, mean and std were ignored for a UINT8 input: the model loaded READY and answered as without them."""
    raw = with_change("input.layout", "NHWC")
    raw["input"]["dtype"] = "UINT8"
    with pytest.raises(ValueError, match="input dtype UINT8 takes the pixels as they are"):
        ModelConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("preprocessing.crop", [200, 200], "preprocessing produces (200, 200) but input.size is (224, 224)"),
        ("input.size", [256, 256], "preprocessing produces (224, 224) but input.size is (256, 256)"),
        ("batching.preferred_batch_sizes", [8, 64], "preferred_batch_sizes [64] must lie in 1..max_batch_size (32)"),
        ("batching.preferred_batch_sizes", [0, 8], "preferred_batch_sizes [0] must lie"),
        ("weights.sha256", "xyz12345", "sha256 must be 8 to 64 hex digits"),
        ("weights.sha256", "abc123", "sha256 must be 8 to 64 hex digits"),
        ("weights.sha256", "a" * 65, "sha256 must be 8 to 64 hex digits"),
        ("name", "MobileNet", "String should match pattern"),
        ("name", "-leading-dash", "String should match pattern"),
        ("backends", ["tensorflow"], "backends.0"),
        ("backends", [], "at least 1 item"),
        ("outputs", [], "at least 1 item"),
        ("batching.max_batch_size", 0, "greater than or equal to 1"),
        ("input.size", [0, 0], "input.size.0\n  Input should be greater than or equal to 1"),
        ("input.size", [-5, -5], "input.size.0\n  Input should be greater than or equal to 1"),
        ("preprocessing.crop", [224, 0], "preprocessing.crop.1\n  Input should be greater than or equal to 1"),
        ("preprocessing.resize.size", [0, 0], "preprocessing.resize.size.0\n  Input should be greater than or equal"),
        ("preprocessing.std", [0.0, 0.0, 0.0], "preprocessing.std.0\n  Input should be greater than 0"),
        ("preprocessing.std", [1.0, 1.0, -1.0], "preprocessing.std.2\n  Input should be greater than 0"),
        ("preprocessing.scale", 0, "preprocessing.scale\n  Input should be greater than 0"),
    ],
)
def test_invalid_config_is_rejected_with_reason(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig.model_validate(with_change(path, value))
    assert message in str(info.value)


@pytest.mark.parametrize("where", ["", "input", "preprocessing.resize", "batching", "weights"])
def test_unknown_field_is_rejected(where: str) -> None:
    raw = mobilenet_raw()
    node = raw
    for key in filter(None, where.split(".")):
        node = node[key]
    node["max_batch"] = 4  # a typo of a real field must not be silently ignored
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelConfig.model_validate(raw)


def test_resize_none_without_crop_is_rejected() -> None:
    raw = with_change("preprocessing.resize", {"policy": "none", "size": [224, 224]})
    raw["preprocessing"]["crop"] = None
    with pytest.raises(ValidationError, match="must fix the input size"):
        ModelConfig.model_validate(raw)


def test_sha256_is_lowercased() -> None:
    config = ModelConfig.model_validate(with_change("weights.sha256", "ABCDEF12"))
    assert config.weights.sha256 == "abcdef12"


def test_config_is_frozen(mobilenet_config: ModelConfig) -> None:
    with pytest.raises(ValidationError):
        mobilenet_config.name = "other"  # type: ignore[misc]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "config.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML") as info:
        load_model_config(bad_yaml)
    assert str(bad_yaml) in str(info.value)
    bad_field = tmp_path / "bad" / "config.yaml"
    bad_field.parent.mkdir()
    bad_field.write_text(yaml.safe_dump(with_change("input.size", [256, 256])))
    with pytest.raises(ValueError, match="input.size is") as info:
        load_model_config(bad_field)
    assert str(bad_field) in str(info.value)


def test_shorter_side_without_crop_is_rejected() -> None:
    raw = with_change("preprocessing.resize", {"policy": "shorter_side", "size": [224, 224]})
    raw["preprocessing"]["crop"] = None
    with pytest.raises(ValidationError):
        ModelConfig.model_validate(raw)


def test_crop_larger_than_resize_is_rejected() -> None:
    with pytest.raises(ValidationError):
        ModelConfig.model_validate(with_change("preprocessing.resize", {"policy": "shorter_side", "size": [200, 200]}))
