"""Synthetic distortions: shape, determinism, and that each one moves its metric the right way on real photos."""

from functools import cache

import numpy as np
import pytest
from PIL import Image

from pipelines.quality import analyze_quality
from pipelines.quality.thresholds import default_thresholds
from tests.paths import DATA
from tooling.quality.distortions import EXPECTED_TAGS, KINDS, LEVELS, apply_distortion, expected_tags
from tooling.quality.evaluate import label, tag_table

pytestmark = pytest.mark.unit

IMAGENET = DATA / "imagenet-samples"
needs_photos = pytest.mark.skipif(
    not IMAGENET.is_dir(), reason=f"real photos not found at {IMAGENET} (../shared/data is not part of the repo)"
)
# Clean, sharp, well exposed photos from the fitting range (sorted index < 500); each gets no defect tag.
CLEAN_PHOTOS = ("n01440764_tench", "n02093754_Border_terrier", "n02115641_dingo")

# kind -> (metric that must move, +1 up / -1 down with the level)
MOVES = {
    "gaussian_blur": ("sharpness_min_direction", -1),
    "lens_blur": ("sharpness_min_direction", -1),
    "motion_blur": ("blur_anisotropy", +1),
    "white_noise": ("noise_sigma", +1),
    "color_noise": ("chroma_noise_sigma", +1),
    "impulse_noise": ("impulse_fraction", +1),
    "multiplicative_noise": ("noise_sigma", +1),
    "jpeg": ("blockiness", +1),
    "jpeg2000": ("sharpness_min_direction", -1),
    "darken": ("brightness_mean", -1),
    "brighten": ("brightness_mean", +1),
    "contrast_change": ("contrast_spread", -1),
    "desaturate": ("colourfulness", -1),
    "oversaturate": ("colourfulness", +1),
    "color_cast": ("cast_strength", +1),
    "pixelate": ("laplacian_var", -1),
    "quantization": ("entropy_bits", -1),
}


@cache
def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGENET / f"{name}.JPEG").convert("RGB"))


@cache
def _sweep(name: str, kind: str) -> tuple:
    """Quality reports of a photo clean (index 0) and at levels 1..5; the same seed at every level."""
    rgb = _photo(name)
    degraded = [rgb] + [apply_distortion(rgb, kind, level, np.random.default_rng(7)) for level in range(1, 6)]
    return tuple(analyze_quality(x) for x in degraded)


def _gradient_photo(h: int = 96, w: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    return rgb.astype(np.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_shape_and_dtype_and_is_deterministic(kind: str) -> None:
    rgb = _gradient_photo()
    for level in (1, 5):
        a = apply_distortion(rgb, kind, level, np.random.default_rng(1))
        b = apply_distortion(rgb, kind, level, np.random.default_rng(1))
        assert a.shape == rgb.shape and a.dtype == np.uint8
        assert np.array_equal(a, b)


def test_random_kinds_depend_on_the_seed() -> None:
    rgb = _gradient_photo()
    for kind in ("white_noise", "impulse_noise", "color_noise", "motion_blur", "color_cast"):
        a = apply_distortion(rgb, kind, 4, np.random.default_rng(1))
        b = apply_distortion(rgb, kind, 4, np.random.default_rng(2))
        assert not np.array_equal(a, b), kind


def test_bad_arguments_are_rejected() -> None:
    rgb = _gradient_photo()
    with pytest.raises(ValueError, match="unknown distortion"):
        apply_distortion(rgb, "sepia", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="level"):
        apply_distortion(rgb, "jpeg", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        apply_distortion(rgb.astype(np.float32), "jpeg", 1, np.random.default_rng(0))


def test_tables_cover_every_kind_with_five_levels() -> None:
    assert set(LEVELS) == set(EXPECTED_TAGS) == set(KINDS)
    assert all(len(levels) == 5 for levels in LEVELS.values())
    assert expected_tags("motion_blur", 5) == {"blurry", "motion_blur"}
    assert expected_tags("motion_blur", 3) == {"blurry", "motion_blur"}
    assert expected_tags("gaussian_blur", 2) == set()


def test_labels_exclude_weak_levels_and_side_effects() -> None:
    assert label("clean", 0, "blurry") is False
    assert label("gaussian_blur", 4, "blurry") is True
    assert label("gaussian_blur", 1, "blurry") is None  # too weak to promise the tag
    assert label("darken", 3, "low_contrast") is None  # allowed side effect
    assert label("white_noise", 5, "blurry") is False


def test_tag_table_counts_inherited_tags_once() -> None:
    dark = {"brightness_mean": 0.1}
    samples = [
        ("a.jpg", "clean", 0, dark),
        ("a.jpg", "white_noise", 5, dark),  # still dark: not a new false positive
        ("b.jpg", "clean", 0, {"brightness_mean": 0.5}),
        ("b.jpg", "darken", 5, dark),
    ]
    defaults = default_thresholds()
    only_low_light = defaults.model_copy(update={"tags": {"low_light": defaults.tags["low_light"]}})
    row = next(r for r in tag_table(samples, only_low_light) if r["tag"] == "low_light")
    assert (row["tp"], row["fp"], row["positives"]) == (1, 1, 1)
    assert row["clean_tagged"] == 0.5


@needs_photos
@pytest.mark.parametrize("kind", KINDS)
def test_metric_moves_with_level_on_real_photos(kind: str) -> None:
    metric, sign = MOVES[kind]
    for name in CLEAN_PHOTOS:
        reports = _sweep(name, kind)
        values = np.array([getattr(r.metrics, metric) for r in reports], float)
        if kind == "color_cast":  # a cast may first cancel the photo's own tint: measure how far it moved
            a0, b0 = reports[0].metrics.cast_a, reports[0].metrics.cast_b
            values = np.array([np.hypot(r.metrics.cast_a - a0, r.metrics.cast_b - b0) for r in reports])
        steps = np.sign(np.diff(values)) * sign
        # monotone, allowing one flat or reversed step between two adjacent levels
        assert (steps > 0).sum() >= 4, f"{kind} {name} {metric}: {values.round(4).tolist()}"
        assert (values[5] - values[0]) * sign > 0, f"{kind} {name} {metric}: {values.round(4).tolist()}"


@needs_photos
@pytest.mark.parametrize("name", CLEAN_PHOTOS)
def test_clean_photos_get_no_defect_tag(name: str) -> None:
    report = _sweep(name, "jpeg")[0]
    assert {t.name for t in report.tags} <= {"sharp", "well_exposed"}
    assert report.level in ("HIGH", "ULTRA")


@needs_photos
@pytest.mark.parametrize("kind", [k for k, tags in EXPECTED_TAGS.items() if tags])
def test_expected_tag_fires_at_the_strongest_level(kind: str) -> None:
    for name in CLEAN_PHOTOS:
        reports = _sweep(name, kind)
        got = {t.name for t in reports[5].tags}
        want = expected_tags(kind, 5)
        if kind == "desaturate":  # 8% of the chroma left reads as black-and-white: either tag is right
            assert got & {"undersaturated", "grayscale"}, f"{name}: {got}"
            continue
        assert want <= got, f"{kind} {name}: want {want}, got {got}"
        assert reports[5].score < reports[0].score
