"""Classical quality metrics: the working scale, known synthetic answers, resolution independence, score."""

import io
from dataclasses import fields

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.quality import analyze_quality
from pipelines.quality.metrics import METRIC_NAMES, REGION_METRICS, compute_metrics
from pipelines.quality.noise import blockiness, impulse_fraction, noise_sigma
from pipelines.quality.scoring import quality_level, score_quality
from pipelines.quality.sharpness import measure_sharpness
from pipelines.quality.thresholds import default_thresholds
from pipelines.quality.working_image import native_crop, working_image, working_size
from tests.paths import DATA
from tests.unit.textures import dead_leaves_texture
from tooling.quality.photo_files import load_photo

pytestmark = pytest.mark.unit

BLUR = DATA / "blur-samples"
needs_blur_samples = pytest.mark.skipif(
    not BLUR.is_dir(), reason=f"real photos not found at {BLUR} (../shared/data is not part of the repo)"
)


def test_working_image_shrinks_long_side_and_never_enlarges() -> None:
    big = np.zeros((1500, 3000, 3), np.uint8)
    assert working_image(big).shape == (256, 512, 3)
    small = np.zeros((100, 80, 3), np.uint8)
    assert working_image(small).shape == (100, 80, 3)
    assert working_image(np.zeros((600, 20), np.uint8)).shape == (512, 17, 3)  # gray promoted to RGB
    assert working_size(4000, 3000) == (512, 384)
    with pytest.raises(ValueError):
        working_image(np.zeros((10, 10, 3), np.float32))


def test_metrics_have_documented_ranges_on_a_texture() -> None:
    rgb = dead_leaves_texture()
    m = compute_metrics(working_image(rgb), (rgb.shape[1], rgb.shape[0]))
    assert set(METRIC_NAMES) | REGION_METRICS == {f.name for f in fields(m)}
    x0, y0, x1, y1 = m.sharpest_region  # where sharpness was judged: a box inside the frame
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert m.native_region == (0.0, 0.0, 1.0, 1.0)  # the working image is the original: measured on all of it
    assert 0 <= m.sharpness_min_direction <= m.sharpness <= 1
    assert 0 <= m.brightness_p05 <= m.brightness_p50 <= m.brightness_p95 <= 1
    assert 0 <= m.entropy_bits <= 8 and 0 <= m.contrast_rms <= 0.5
    assert 0 <= m.blur_direction_deg < 180 and m.blur_anisotropy >= 0
    assert m.blockiness is not None and m.blockiness < 1.2  # working image is the original: grid measurable
    assert (m.width, m.height, m.aspect_ratio) == (512, 384, pytest.approx(4 / 3))


def test_noise_sigma_recovers_known_gaussian_noise() -> None:
    clean = cv2.cvtColor(dead_leaves_texture(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    rng = np.random.default_rng(3)
    assert noise_sigma(clean) < 1.0  # texture alone does not read as noise
    for sigma in (3.0, 6.0, 12.0):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.float32)
        assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.2)


def test_impulse_fraction_counts_salt_and_pepper() -> None:
    gray = cv2.cvtColor(dead_leaves_texture(), cv2.COLOR_RGB2GRAY)
    assert impulse_fraction(gray) < 0.001
    rng = np.random.default_rng(0)
    hit = rng.random(gray.shape) < 0.02
    salted = gray.copy()
    salted[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)
    assert 0.008 < impulse_fraction(salted) < 0.025


def test_blockiness_finds_the_jpeg_grid_at_any_crop_offset() -> None:
    rgb = dead_leaves_texture()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=10)
    jpeg = np.asarray(Image.open(buf).convert("L"))
    clean = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for top, left in ((0, 0), (3, 5), (7, 2)):  # the grid phase is searched: the crop offset does not matter
        window = (slice(top, top + 256), slice(left, left + 256))
        assert blockiness(jpeg[window]) > 1.5
        assert blockiness(jpeg[window]) > blockiness(clean[window]) + 0.3
    assert native_crop(jpeg, 64).shape == (64, 64, 3)


def test_motion_blur_has_anisotropy_and_direction_defocus_has_none() -> None:
    gray = cv2.cvtColor(dead_leaves_texture(), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    line = np.zeros((15, 15), np.float32)
    line[7, :] = 1 / 15  # horizontal motion
    moved = measure_sharpness(cv2.filter2D(gray, -1, line))
    defocused = measure_sharpness(cv2.GaussianBlur(gray, (0, 0), 3))
    sharp = measure_sharpness(gray)
    assert sharp.sharpness_min_direction > 0.75  # anti-aliased disc edges: not quite photo-sharp
    assert defocused.sharpness_min_direction < 0.6 and defocused.blur_anisotropy < 0.1
    assert moved.blur_anisotropy > 0.15
    assert min(moved.blur_direction_deg, 180 - moved.blur_direction_deg) < 10  # ~0 degrees = horizontal


@needs_blur_samples
@pytest.mark.parametrize("stem", ["106_NIKON-D3400-35MM_S", "176_HONOR-7X_S", "180_HONOR-10_F"])
def test_metrics_do_not_depend_on_resolution(stem: str) -> None:
    path = next(BLUR.glob(f"{stem}.*"))
    full = load_photo(path, draft_side=1024)  # stored 2048 px wide: decoded at full size
    with Image.open(path) as image:
        half_rgb = np.asarray(image.convert("RGB").reduce(2))  # the same photo at 50 %
    half = compute_metrics(working_image(half_rgb), (half_rgb.shape[1], half_rgb.shape[0]))
    whole = compute_metrics(full.working, full.original_size)
    assert half.sharpness == pytest.approx(whole.sharpness, abs=0.03)
    assert half.sharpness_min_direction == pytest.approx(whole.sharpness_min_direction, abs=0.03)
    assert half.brightness_mean == pytest.approx(whole.brightness_mean, abs=0.01)
    assert half.colourfulness == pytest.approx(whole.colourfulness, rel=0.05)
    assert half.contrast_spread == pytest.approx(whole.contrast_spread, abs=0.02)
    assert half.laplacian_var == pytest.approx(whole.laplacian_var, rel=0.15)


def test_coarse_sharpness_keeps_still_when_the_photo_arrives_enlarged() -> None:
    # The top octave of the working image depends on resampling (an enlarged copy shrunk back is softer there);
    # one octave down, where `sharp` is decided, the two agree.
    rgb = cv2.GaussianBlur(dead_leaves_texture((512, 512), seed=5), (0, 0), 0.7)
    enlarged = np.asarray(Image.fromarray(rgb).resize((1536, 1536), Image.Resampling.BICUBIC))
    small = compute_metrics(working_image(rgb), (512, 512))
    big = compute_metrics(working_image(enlarged), (1536, 1536))
    fine_drift = abs(small.sharpness_min_direction - big.sharpness_min_direction)
    coarse_drift = abs(small.coarse_sharpness - big.coarse_sharpness)
    assert coarse_drift < 0.01 and coarse_drift < fine_drift / 2


def test_score_and_level() -> None:
    rgb = dead_leaves_texture()
    good = score_quality(compute_metrics(working_image(rgb), (4000, 3000)))
    blurred = cv2.GaussianBlur(rgb, (0, 0), 4)
    bad = score_quality(compute_metrics(working_image(blurred), (4000, 3000)))
    assert 0 <= bad.score < good.score <= 100
    assert "blur" in bad.severities
    blended = score_quality(compute_metrics(working_image(rgb), (4000, 3000)), model_score=0.0)
    weight = default_thresholds().model.score_weight
    assert blended.score == pytest.approx(good.classical_score * (1 - weight), abs=0.01)
    assert [quality_level(s) for s in (10, 50, 70, 95)] == ["LOW", "MEDIUM", "HIGH", "ULTRA"]
    with pytest.raises(ValueError):
        score_quality(compute_metrics(working_image(rgb), (512, 384)), model_score=120)


def test_analyze_quality_report() -> None:
    report = analyze_quality(dead_leaves_texture(), (4000, 3000))
    assert report.level in ("LOW", "MEDIUM", "HIGH", "ULTRA")
    assert report.thresholds_version >= 1
    assert report.metrics.megapixels == pytest.approx(12.0)
    assert report.metrics.blockiness is None  # working image is not the original: no grid to measure
