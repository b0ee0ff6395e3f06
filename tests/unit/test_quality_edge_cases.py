"""Quality edge cases: blank frames, aligned edges of lossless graphics, 1-px strips, stack-decided tags, versions of
calibrated thresholds."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from pipelines.quality import analyze_quality, quality_verdict
from pipelines.quality.metrics import compute_metrics
from pipelines.quality.noise import blockiness
from pipelines.quality.tags import assign_tags
from pipelines.quality.thresholds import (
    DEFAULT_THRESHOLDS_PATH,
    ModelCombination,
    StackTerm,
    TagCombination,
    TagStack,
    Thresholds,
    default_thresholds,
    load_thresholds,
)
from pipelines.quality.working_image import native_crop, working_image
from tests.paths import DATA, require
from tests.unit.textures import dead_leaves_texture
from tooling.quality.biq import held_out
from tooling.quality.calibrate import calibrate, main, metrics_of_folder
from tooling.quality.distortions import apply_distortion
from tooling.quality.photo_files import load_photo
from tooling.quality.served import served_quality

pytestmark = pytest.mark.unit

BLUR_METRICS = ("sharpness", "sharpness_min_direction", "coarse_sharpness", "blur_anisotropy", "blur_direction_deg")


def _tags(rgb: np.ndarray) -> set[str]:
    return {t.name for t in analyze_quality(rgb).tags}


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


# 1. blank frames


@pytest.mark.parametrize("level", [60, 128, 170])
def test_a_blank_frame_is_not_well_exposed(level: int) -> None:
    rng = np.random.default_rng(level)
    constant = np.full((480, 640, 3), level, np.uint8)
    nearly = np.clip(level + rng.normal(0, 1, constant.shape), 0, 255).astype(np.uint8)
    for frame in (constant, nearly):
        tags = _tags(frame)
        assert "low_information" in tags and not {"well_exposed", "sharp"} & tags, tags


def test_no_positive_tag_praises_a_blank_frame() -> None:
    thresholds = default_thresholds()
    for name, rule in thresholds.tags.items():
        if rule.kind == "positive":
            assert "low_information" in rule.excludes, name
    # a texture keeps well_exposed, and its rule says what suppresses it
    tag = next(t for t in analyze_quality(dead_leaves_texture()).tags if t.name == "well_exposed")
    assert tag.rule.endswith("not low_contrast, not low_information)")
    # a black frame is still dark
    assert {"low_information", "low_light"} <= _tags(np.zeros((480, 640, 3), np.uint8))


# 2. aligned edges of lossless graphics are not a JPEG grid


def _rectangle(width: int = 640, height: int = 480) -> np.ndarray:
    rgb = np.full((height, width, 3), 255, np.uint8)
    rgb[96:320, 160:400] = 0  # every edge on the 8-px grid, in the native crop too
    return rgb


def _bars(count: int) -> np.ndarray:
    rgb = np.full((256, 256, 3), 255, np.uint8)
    for x in range(count):
        rgb[:, 16 + 32 * x : 32 + 32 * x] = 0  # two edges a bar, each on the 8-px grid
    return rgb


@pytest.mark.parametrize(
    "graphic",
    [_rectangle(), _bars(1), _bars(3), _rectangle()[:, :, 0].copy()],
    ids=["rectangle", "one bar", "three bars", "gray rectangle"],
)
def test_a_few_aligned_edges_are_not_a_block_grid(graphic: np.ndarray, tmp_path: Path) -> None:
    gray = graphic if graphic.ndim == 2 else graphic[:, :, 0]
    assert blockiness(native_crop(gray)[:, :, 0]) == 1.0
    path = tmp_path / "graphic.png"
    Image.fromarray(graphic).save(path)  # lossless
    photo = load_photo(path)
    report = quality_verdict(compute_metrics(photo.working, photo.original_size, photo.native_rgb))
    assert report.metrics.blockiness == 1.0
    assert "compression_artifacts" not in {t.name for t in report.tags}


@pytest.mark.parametrize("quality", [10, 15, 20])
def test_jpeg_blocks_are_still_found_also_in_a_png_converted_from_the_jpeg(quality: int, tmp_path: Path) -> None:
    compressed = _jpeg(dead_leaves_texture(seed=3), quality)
    path = tmp_path / "converted.png"
    Image.fromarray(compressed).save(path)  # a PNG with a JPEG history: the grid is in its pixels
    for source in (compressed, np.asarray(Image.open(path).convert("RGB"))):
        report = analyze_quality(source)
        assert report.metrics.blockiness is not None and report.metrics.blockiness > 1.45
        assert "compression_artifacts" in {t.name for t in report.tags}


def test_training_photos_reencoded_at_low_quality_keep_their_grid() -> None:
    images = require(DATA / "biq2021-train" / "images")
    names = sorted(p.name for p in images.iterdir() if p.suffix.lower() == ".jpg" and not held_out(p.name))[:12]
    for name in names:
        rgb = np.asarray(Image.open(images / name).convert("RGB"))
        for quality in (10, 15):
            gray = native_crop(_jpeg(rgb, quality))[:, :, 0]
            assert blockiness(gray) > 1.45, (name, quality)


# 3. strips too thin for 2-D sharpness


@pytest.mark.parametrize("size", [(512, 1), (3400, 10), (20, 4000)], ids=["1px", "10px", "tall"])
def test_a_thin_strip_has_no_blur_verdict(size: tuple[int, int]) -> None:
    width, height = size
    texture = dead_leaves_texture((512, 512), seed=1)
    strip = np.ascontiguousarray(np.resize(texture, (height, width, 3)))
    report = analyze_quality(strip)
    for name in BLUR_METRICS:
        assert getattr(report.metrics, name) is None, name
    assert report.metrics.sharpest_region == (0.0, 0.0, 1.0, 1.0)
    tags = {t.name for t in report.tags}
    assert not {"blurry", "motion_blur", "sharp"} & tags and "odd_aspect_ratio" in tags
    assert "blur" not in report.detail.severities  # no sharpness, no blur penalty
    json.dumps(report.to_dict())  # None travels as null


@pytest.mark.parametrize("size", [(600, 17), (15, 15), (4000, 10)])
def test_a_served_model_gives_a_strip_no_blur_tag_either(size: tuple[int, int]) -> None:
    """The served model reads a strip blown up to its 256-px input as blurry (p 1.0): it gave `blurry` alone,
    source "model", with sharpness_min_direction null (a review helper's 600x17, 15x15 and 4000x10 noise images)."""
    width, height = size
    strip = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    metrics = compute_metrics(working_image(strip), size)
    tags = {t.name for t in assign_tags(metrics, None, {"blurry": 1.0, "motion_blur": 1.0, "sharp": 1.0})}
    assert not {"blurry", "motion_blur", "sharp"} & tags, tags
    textured = dead_leaves_texture((512, 512), seed=1)  # a photo with its metrics: the model alone still tags it
    measured = compute_metrics(working_image(textured), (512, 512))
    assert "blurry" in {t.name for t in assign_tags(measured, None, {"blurry": 1.0})}


def test_a_strip_of_16_px_is_still_judged() -> None:
    texture = dead_leaves_texture((512, 512), seed=1)
    metrics = compute_metrics(working_image(texture[:16]), (512, 16))
    assert all(getattr(metrics, name) is not None for name in BLUR_METRICS)


# 4. a tag the learned stack decided says so


def test_a_stack_decided_tag_names_the_stack_and_keeps_the_classical_evidence() -> None:
    dark = (dead_leaves_texture().astype(np.float32) * 0.15).astype(np.uint8)
    metrics = compute_metrics(working_image(dark), (4000, 3000))
    stack = TagStack(
        bias=-2.0,
        model_weight=1.0,
        terms=(StackTerm(metric="brightness_p50", mean=0.4, scale=0.1, weight=-1.0),),
        fire_at=0.5,
    )
    limits = default_thresholds().model_copy(
        update={"model": ModelCombination(tags={"low_light": TagCombination(stack=stack)})}
    )
    tag = {t.name: t for t in assign_tags(metrics, limits, {"low_light": 0.3})}["low_light"]
    p = stack.probability(metrics.as_dict(), 0.3)
    assert tag.rule.startswith(f"learned stack: p {p:.4f} >= fire_at 0.5 ")
    assert "brightness_p50" in tag.rule and "classical rule, not deciding here: brightness_mean < 0.23" in tag.rule
    assert tag.evidence["fire_at"] == 0.5 and tag.evidence["combined_probability"] == pytest.approx(p, abs=1e-4)
    assert tag.evidence["brightness_mean"] == metrics.brightness_mean  # the classical measurement stays
    assert tag.evidence["brightness_p50"] == metrics.brightness_p50 and tag.evidence["model_probability"] == 0.3
    # the classical path (no probability) keeps the classical rule text
    classical = {t.name: t for t in assign_tags(metrics, limits)}["low_light"]
    assert classical.rule.startswith("brightness_mean < 0.23") and "fire_at" not in classical.evidence


# 5. calibrated thresholds have a version of their own


def _write(folder: Path, name: str, rgb: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / f"{name}.png")


def test_two_calibrations_of_one_base_have_different_versions_that_results_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        clean = dead_leaves_texture(seed=i + 20)
        _write(tmp_path / "a" / "good", f"g{i}", clean)
        _write(tmp_path / "b" / "good", f"g{i}", clean)
        _write(tmp_path / "a" / "low_light", f"d{i}", apply_distortion(clean, "darken", 2, rng))
        _write(tmp_path / "b" / "low_light", f"d{i}", apply_distortion(clean, "darken", 4, rng))
    base = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    base["tags"]["low_light"]["conditions"][0]["threshold"] = 0.95  # everything dark: calibration must move it
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    outs = []
    for folder in ("a", "b"):
        out = tmp_path / f"{folder}.yaml"
        assert main([str(tmp_path / folder), "--out", str(out), "--base", str(tmp_path / "base.yaml")]) == 0
        outs.append(load_thresholds(out))
    first, second = outs
    assert first.tags["low_light"] != second.tags["low_light"]
    assert first.version != second.version
    for calibrated in outs:
        number, digest = str(calibrated.version).split("+")
        assert int(number) == default_thresholds().version_number + 1 == calibrated.version_number
        assert digest == calibrated.content_digest() and len(digest) == 8
        report = analyze_quality(dead_leaves_texture(), thresholds=calibrated)
        assert report.thresholds_version == calibrated.version == report.to_dict()["thresholds_version"]
    # the same calibration twice: the same thresholds, the same version
    again, _ = calibrate(tmp_path / "a", load_thresholds(tmp_path / "base.yaml"))
    assert again.version == first.version
    # calibrating a calibrated file counts on from its number
    assert calibrate(tmp_path / "b", first)[0].version_number == first.version_number + 1


@pytest.mark.parametrize("version", ["4+xyz", "four", "0", "+1f3a9c0e", "4+1f3a"])
def test_a_malformed_version_is_refused(version: str) -> None:
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    raw["version"] = version
    with pytest.raises(ValidationError, match="version"):
        Thresholds.model_validate(raw)
    raw["version"] = "7"
    assert Thresholds.model_validate(raw).version == 7


def test_calibration_measures_photos_as_the_server_does(tmp_path: Path) -> None:
    """Calibration decoded photos at full size while the server decodes large JPEGs at a reduced scale: a camera
    photo's noise estimates differed (chroma noise 0.044 against the served 0.0), so a calibrated `noisy`
    threshold was compared with values the server never measures."""
    rng = np.random.default_rng(7)
    base = np.linspace(40, 200, 2400, dtype=np.float32)[None, :, None] * np.ones((1800, 1, 3), np.float32)
    noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "camera.jpg"
    Image.fromarray(noisy).save(path, quality=92)
    thresholds = default_thresholds()
    (calibrated,) = metrics_of_folder(tmp_path, thresholds)
    (served,) = served_quality([path], use_model=False, workers=1)
    assert served.decode_scale > 1  # the server's reduced decode is what this is about
    for name in ("noise_sigma", "chroma_noise_sigma", "sharpness", "blockiness", "brightness_mean"):
        assert calibrated[name] == pytest.approx(served.metrics[name], abs=1e-9), name
