"""The full-resolution centre crop of a large JPEG (pipelines.native_crop) and what the quality metrics do with it."""

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.decode import decode_image
from pipelines.native_crop import jpeg_centre_crop, jpeg_with_rows
from pipelines.quality import compute_metrics
from pipelines.quality.tags import tags_from_values
from pipelines.quality.working_image import native_crop
from tests.unit.textures import dead_leaves_texture

ORIENTATION_TAG = 0x0112


def _jpeg(rgb: np.ndarray, orientation: int = 1, **params: object) -> bytes:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    if orientation != 1:
        exif[ORIENTATION_TAG] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), **params)
    return out.getvalue()


def _upright_full_crop(data: bytes) -> np.ndarray:
    decoded = decode_image(data, {}, None, working_max_side=512, reduced=False)
    assert decoded.decode_scale == 1 and decoded.native_rgb is not None
    return decoded.native_rgb


@pytest.mark.parametrize(
    "params",
    [
        {"quality": 90},
        {"quality": 90, "progressive": True},
        {"quality": 40, "subsampling": 0},
        {"quality": 75, "subsampling": 2, "progressive": True},
    ],
)
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_partial_decode_crop_is_the_full_decode_crop(params: dict, orientation: int) -> None:
    rgb = dead_leaves_texture((1100, 1500), seed=3)
    data = _jpeg(rgb, orientation, **params)
    reduced = decode_image(data, {}, None, working_max_side=512)
    assert reduced.decode_scale == 2  # the draft decode is what makes the second, partial decode necessary
    assert reduced.native_rgb is not None and reduced.native_rgb.shape == (256, 256, 3)
    assert np.array_equal(reduced.native_rgb, _upright_full_crop(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_crop_is_centred_on_the_upright_photo_for_odd_sizes(orientation: int) -> None:
    data = _jpeg(dead_leaves_texture((1101, 1501), seed=6), orientation, quality=90)
    reduced = decode_image(data, {}, None, working_max_side=512)
    assert reduced.decode_scale == 2 and reduced.native_rgb is not None
    assert np.array_equal(reduced.native_rgb, _upright_full_crop(data))


def test_short_wide_photo_is_decoded_whole_for_its_crop() -> None:
    data = _jpeg(dead_leaves_texture((270, 3000), seed=7), quality=90)
    reduced = decode_image(data, {}, None, working_max_side=512)
    assert reduced.decode_scale > 1 and reduced.native_rgb is not None  # fewer rows than the crop needs: all of them
    assert np.array_equal(reduced.native_rgb, _upright_full_crop(data))


def test_crop_of_a_photo_smaller_than_the_crop_is_the_photo() -> None:
    rgb = dead_leaves_texture((200, 180), seed=1)
    data = _jpeg(rgb, quality=95)
    crop = jpeg_centre_crop(data, (180, 200), 1)
    assert crop is not None and np.array_equal(crop, native_crop(np.asarray(Image.open(io.BytesIO(data)))))
    assert crop.shape == (200, 180, 3)


def test_crop_is_skipped_when_the_rows_above_it_are_too_many_pixels() -> None:
    data = _jpeg(dead_leaves_texture((300, 400), seed=2), quality=90)
    # the stored size says how many pixels the partial decode would produce: a 200,000 px wide strip is too many
    assert jpeg_centre_crop(data, (200_000, 300), 1) is None


def test_files_without_a_frame_before_the_scan_are_not_shortened() -> None:
    assert jpeg_with_rows(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20, 16) is None
    assert jpeg_with_rows(b"\xff\xd8garbage", 16) is None
    png = io.BytesIO()
    Image.new("RGB", (600, 600)).save(png, "PNG")
    assert jpeg_centre_crop(png.getvalue(), (600, 600), 1) is None


def test_native_noise_sees_grain_the_working_image_averages_away() -> None:
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(dead_leaves_texture((384, 512), seed=2)).resize((2048, 1536), Image.BICUBIC))
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    for rgb, expect_noisy in ((base, False), (noisy, True)):
        decoded = decode_image(_jpeg(rgb, quality=95, subsampling=0), {}, None, working_max_side=512)
        metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
        assert metrics.working_scale < 1 and metrics.native_noise_sigma is not None
        assert metrics.noise_sigma < 4  # 12 per pixel is ~3 after a 4x shrink: the display-size view misses it
        assert (metrics.native_noise_sigma > 6) is expect_noisy
        assert metrics.native_region is not None
        # the model cannot see per-pixel grain on a 256-px input: its low probability must not veto native evidence
        tags = {t.name for t in tags_from_values(metrics.as_dict(), None, {"noisy": 0.001})}
        assert ("noisy" in tags) is expect_noisy


def test_native_metrics_are_none_when_the_working_image_is_the_photo() -> None:
    rgb = dead_leaves_texture((384, 512), seed=4)
    decoded = decode_image(_jpeg(rgb, quality=95), {}, None, working_max_side=512)
    metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
    assert metrics.working_scale == 1.0
    assert metrics.native_noise_sigma is None and metrics.native_impulse_fraction is None
    assert metrics.blockiness is not None  # the JPEG grid is measured at every size
