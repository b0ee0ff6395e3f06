"""Quality tags: real blur photos, synthetic special cases, config validation, model combination, calibration."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from pipelines.quality import analyze_quality
from pipelines.quality.metrics import compute_metrics
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
from pipelines.quality.working_image import working_image
from tests.paths import DATA
from tests.unit.textures import dead_leaves_texture
from tooling.quality.calibrate import calibrate, main
from tooling.quality.distortions import apply_distortion
from tooling.quality.photo_files import load_photo

pytestmark = pytest.mark.unit

BLUR = DATA / "blur-samples"
BLUR_PHOTOS = sorted(BLUR.glob("*.*")) if BLUR.is_dir() else []


def _tags(rgb: np.ndarray, original_size: tuple[int, int] | None = None) -> set[str]:
    return {t.name for t in analyze_quality(rgb, original_size).tags}


@pytest.mark.skipif(not BLUR_PHOTOS, reason=f"real photos not found at {BLUR} (../shared/data is not in the repo)")
@pytest.mark.parametrize("path", BLUR_PHOTOS, ids=lambda p: p.stem)
def test_blur_samples_sharp_is_not_blurry_defocus_and_motion_are(path: Path) -> None:
    photo = load_photo(path, draft_side=512)  # DCT-domain 1/2 decode of the 3-12 MP originals: fast
    report = analyze_quality(photo.working, photo.original_size)
    tags = {t.name for t in report.tags}
    variant = path.stem.rsplit("_", 1)[1]
    if variant == "S":
        assert "blurry" not in tags and "motion_blur" not in tags, tags
    else:
        assert "blurry" in tags, tags
        assert ("motion_blur" in tags) == (variant == "M"), tags  # defocus has no direction, shake has
        blurry = next(t for t in report.tags if t.name == "blurry")
        assert blurry.evidence["sharpness_min_direction"] == report.metrics.sharpness_min_direction


def test_grayscale_photo() -> None:
    gray = cv2.cvtColor(dead_leaves_texture(), cv2.COLOR_RGB2GRAY)
    tags = _tags(np.repeat(gray[:, :, None], 3, axis=2), (4000, 3000))
    assert "grayscale" in tags
    assert "undersaturated" not in tags and "color_cast" not in tags
    assert "grayscale" not in _tags(dead_leaves_texture(), (4000, 3000))


def test_odd_aspect_ratio_and_low_resolution_use_the_original_size() -> None:
    strip = dead_leaves_texture((120, 512))
    assert "odd_aspect_ratio" in _tags(strip, (4096, 960))
    assert "odd_aspect_ratio" not in _tags(dead_leaves_texture(), (4000, 3000))
    small = cv2.resize(dead_leaves_texture(), (200, 150), interpolation=cv2.INTER_AREA)
    tags = _tags(small)
    assert "low_resolution" in tags
    assert "low_resolution" not in _tags(dead_leaves_texture(), (4000, 3000))


def test_low_information() -> None:
    blank = np.full((300, 400, 3), 200, np.uint8)
    tags = _tags(blank, (4000, 3000))
    assert "low_information" in tags
    assert "blurry" not in tags and "low_contrast" not in tags  # nothing to judge
    two_tone = np.zeros((300, 400, 3), np.uint8)
    two_tone[:, 200:] = 255
    assert "low_information" in _tags(two_tone, (4000, 3000))
    assert "low_information" not in _tags(dead_leaves_texture(), (4000, 3000))


def test_tags_carry_evidence_and_confidence() -> None:
    dark = (dead_leaves_texture().astype(np.float32) * 0.15).astype(np.uint8)
    tag = next(t for t in analyze_quality(dark, (4000, 3000)).tags if t.name == "low_light")
    assert tag.evidence["brightness_mean"] < 0.1
    assert 0.5 < tag.confidence <= 1.0
    assert tag.source == "classical" and "brightness_mean <" in tag.rule


def test_model_probabilities_confirm_veto_and_add() -> None:
    rgb = cv2.GaussianBlur(dead_leaves_texture(), (0, 0), 4)
    metrics = compute_metrics(working_image(rgb), (4000, 3000))
    # The mechanism, with explicit combination values (the shipped ones are tuned and may disable the veto).
    limits = default_thresholds().model_copy(update={"model": ModelCombination(confirm=0.3, alone=0.85)})
    alone = {t.name: t for t in assign_tags(metrics, limits)}
    assert "blurry" in alone and "noisy" not in alone
    vetoed = {t.name for t in assign_tags(metrics, limits, model_probs={"blurry": 0.1})}
    assert "blurry" not in vetoed
    both = {t.name: t for t in assign_tags(metrics, limits, model_probs={"blurry": 0.95, "noisy": 0.9})}
    assert both["blurry"].source == "classical+model" and both["blurry"].confidence >= 0.95
    assert both["noisy"].source == "model" and both["noisy"].evidence["model_probability"] == 0.9
    assert "noisy" not in {t.name for t in assign_tags(metrics, limits, model_probs={"noisy": 0.5})}


def test_per_tag_combination_and_learned_stack() -> None:
    dark = (dead_leaves_texture().astype(np.float32) * 0.15).astype(np.uint8)
    metrics = compute_metrics(working_image(dark), (4000, 3000))
    stack = TagStack(
        bias=-2.0,
        model_weight=1.0,
        terms=(StackTerm(metric="brightness_mean", mean=0.4, scale=0.1, weight=-1.0),),
        fire_at=0.5,
    )
    combine = ModelCombination(confirm=0.0, alone=0.5, tags={"low_light": TagCombination(stack=stack)})
    limits = default_thresholds().model_copy(update={"model": combine})
    # Very dark (brightness ~0.07: the term adds ~3.3): fires even with a doubtful model; evidence shows the inputs.
    tag = next(t for t in assign_tags(metrics, limits, model_probs={"low_light": 0.3}) if t.name == "low_light")
    expected = stack.probability(metrics.as_dict(), 0.3)
    assert tag.source == "classical+model" and tag.confidence == pytest.approx(expected, abs=1e-4)
    assert tag.evidence["combined_probability"] == pytest.approx(expected, abs=1e-4) and expected >= 0.5
    assert tag.evidence["brightness_mean"] == metrics.brightness_mean and tag.evidence["region"] == [0, 0, 1, 1]
    # A confident "not dark" model outweighs the metric: the stack learned both.
    assert "low_light" not in {t.name for t in assign_tags(metrics, limits, model_probs={"low_light": 0.001})}
    # Without a probability for the tag (no model served), the classical rule decides as before.
    assert "low_light" in {t.name for t in assign_tags(metrics, limits)}
    with pytest.raises(ValidationError, match="combination for unknown tags"):
        Thresholds.model_validate({**default_thresholds().model_dump(), "model": {"tags": {"crisp": {}}}})


def test_blur_evidence_says_where_it_was_measured() -> None:
    rgb = dead_leaves_texture()
    left_sharp = rgb.copy()
    left_sharp[:, rgb.shape[1] // 2 :] = cv2.GaussianBlur(rgb, (0, 0), 6)[:, rgb.shape[1] // 2 :]
    report = analyze_quality(left_sharp)
    x0, y0, x1, y1 = report.metrics.sharpest_region
    assert x1 <= 0.55 and (y0, y1) != (0.0, 0.0)  # the sharpest tiles are in the sharp left half
    for tag in report.tags:
        assert len(tag.evidence["region"]) == 4


def test_default_thresholds_are_versioned_and_validated() -> None:
    thresholds = default_thresholds()
    assert thresholds.version >= 1
    vocabulary = {
        "blurry", "motion_blur", "noisy", "low_light", "overexposed", "low_contrast", "color_cast", "undersaturated",
        "oversaturated", "compression_artifacts", "low_resolution", "odd_aspect_ratio", "grayscale",
        "low_information", "sharp", "well_exposed",
    }  # fmt: skip
    assert vocabulary <= set(thresholds.tags)
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    raw["tags"]["blurry"]["conditions"][0]["metric"] = "sharpnes"
    with pytest.raises(ValidationError, match="unknown metric"):
        Thresholds.model_validate(raw)
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    raw["tags"]["blurry"]["requires"] = ["sharp"]  # sharp excludes blurry: neither can be decided first
    with pytest.raises(ValidationError, match="cycle"):
        Thresholds.model_validate(raw)
    raw["tags"]["blurry"]["requires"] = ["crisp"]
    with pytest.raises(ValidationError, match="unknown tags"):
        Thresholds.model_validate(raw)


def _write(folder: Path, name: str, rgb: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / f"{name}.png")


def test_calibration_separates_a_labelled_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        clean = dead_leaves_texture(seed=i + 10)
        _write(tmp_path / "good", f"g{i}", clean)
        _write(tmp_path / "blurry", f"b{i}", apply_distortion(clean, "gaussian_blur", 2 + i % 2, rng))
        _write(tmp_path / "low_light", f"d{i}", apply_distortion(clean, "darken", 2, rng))
    # a deliberately bad starting point: nothing is ever blurry, everything is dark
    base = default_thresholds()
    bad = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    bad["tags"]["blurry"]["conditions"][0]["threshold"] = 0.05
    bad["tags"]["low_light"]["conditions"][0]["threshold"] = 0.95
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    new, report = calibrate(tmp_path, load_thresholds(tmp_path / "bad.yaml"))
    # the base's number + 1 and the digest of what was calibrated (two calibrations that differ tell apart)
    assert new.version == f"{base.version_number + 1}+{new.content_digest()}"
    by_tag = {r.tag: r for r in report}
    assert by_tag["blurry"].new_f1 == 1.0 and by_tag["low_light"].new_f1 == 1.0
    for folder, tag in (("blurry", "blurry"), ("low_light", "low_light"), ("good", None)):
        for path in sorted((tmp_path / folder).iterdir()):
            photo = load_photo(path)
            tags = {t.name for t in assign_tags(compute_metrics(photo.working, photo.original_size), new)}
            assert (tag in tags) if tag else not tags & {"blurry", "low_light"}, (path.name, tags)


def test_calibrate_command_writes_bumped_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        clean = dead_leaves_texture(seed=i)
        _write(tmp_path / "data" / "good", f"g{i}", clean)
        _write(
            tmp_path / "data" / "noisy", f"n{i}", apply_distortion(clean, "white_noise", 4, np.random.default_rng(i))
        )
    out = tmp_path / "thresholds.yaml"
    assert main([str(tmp_path / "data"), "--out", str(out)]) == 0
    written = load_thresholds(out)
    assert written.version == f"{default_thresholds().version_number + 1}+{written.content_digest()}"
    assert "noisy" in capsys.readouterr().out
    (tmp_path / "data" / "not_a_tag").mkdir()
    assert main([str(tmp_path / "data"), "--out", str(out)]) == 2


def test_calibrating_a_tag_the_learned_model_decides_says_where_it_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With quality_mos served, low_light (and four more) are decided by the learned combination: the command
    printed "F1 0.750 -> 1.000" and nothing the server served changed."""
    rng = np.random.default_rng(1)
    for i in range(3):
        clean = dead_leaves_texture(seed=i + 20)
        _write(tmp_path / "data" / "good", f"g{i}", clean)
        _write(tmp_path / "data" / "low_light", f"d{i}", apply_distortion(clean, "darken", 3, rng))
    assert default_thresholds().model.stack_for("low_light") is not None
    assert main([str(tmp_path / "data"), "--out", str(tmp_path / "t.yaml")]) == 0
    note = capsys.readouterr().err
    assert "low_light" in note and "where no model is served" in note


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_thresholds_file_with_a_non_finite_number_is_refused(value: float) -> None:
    """A NaN threshold silently disabled its tag and an infinite one made it fire on every image."""
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    raw["tags"]["blurry"]["conditions"][0]["threshold"] = value
    with pytest.raises(ValidationError, match="finite"):
        Thresholds.model_validate(raw)
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    del raw["score"]["levels"]["MEDIUM"]
    with pytest.raises(ValidationError, match="missing"):
        Thresholds.model_validate(raw)


def test_calibration_folders_are_read_as_a_person_leaves_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file named .jpg that is not an image was a traceback; a hidden folder (.ipynb_checkpoints) was taken as a
    tag and failed the run; an empty good/ ran with no negatives and no word."""
    data = tmp_path / "data"
    for i in range(2):
        clean = dead_leaves_texture(seed=i + 30)
        _write(data / "good", f"g{i}", clean)
        _write(data / "noisy", f"n{i}", apply_distortion(clean, "white_noise", 4, np.random.default_rng(i)))
    (data / ".ipynb_checkpoints").mkdir()
    assert main([str(data), "--out", str(tmp_path / "a.yaml")]) == 0
    (data / "noisy" / "notes.jpg").write_text("not an image")
    assert main([str(data), "--out", str(tmp_path / "b.yaml")]) == 2
    assert "notes.jpg: not a readable image" in capsys.readouterr().err
    (data / "noisy" / "notes.jpg").unlink()
    for photo in (data / "good").iterdir():
        photo.unlink()
    assert main([str(data), "--out", str(tmp_path / "c.yaml")]) == 2
    assert "holds no photo" in capsys.readouterr().err
