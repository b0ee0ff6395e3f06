"""pipelines.metadata colour statistics: palette, dominant and mean colour, colourfulness, alpha, sRGB."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipelines.metadata import extract_metadata
from pipelines.metadata.colors import color_info, colorfulness, palette
from pipelines.metadata.thumbnail import THUMBNAIL_SIZE

pytestmark = pytest.mark.unit


def _png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def _split(left: tuple[int, ...], right: tuple[int, ...], left_share: float = 0.75, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (100, 40), right)
    image.paste(left, (0, 0, int(100 * left_share), 40))
    return image


def test_solid_colour() -> None:
    info = color_info(Image.new("RGB", (30, 20), (10, 120, 240)))
    assert info.dominant is not None and info.dominant.rgb == (10, 120, 240) and info.dominant.hex == "#0a78f0"
    assert len(info.palette) == 1 and info.palette[0].fraction == 1.0
    assert info.mean_rgb == (10, 120, 240) and info.mean_hex == "#0a78f0"
    assert info.alpha is None and info.sample_size == (30, 20)


def test_two_colours_shares_and_order() -> None:
    info = color_info(_split((255, 0, 0), (0, 0, 255)))
    assert [(s.rgb, s.fraction) for s in info.palette] == [((255, 0, 0), 0.75), ((0, 0, 255), 0.25)]
    assert info.dominant is not None and info.dominant.rgb == (255, 0, 0)
    assert info.mean_rgb == (191, 0, 64)


def test_palette_is_bounded_deterministic_and_sums_to_one() -> None:
    pixels = np.random.default_rng(7).integers(0, 256, size=(5000, 3), dtype=np.uint8)
    first, second = palette(pixels), palette(pixels)
    assert first == second and 1 <= len(first) <= 8
    assert sum(s.fraction for s in first) == pytest.approx(1.0, abs=1e-3)
    assert [s.fraction for s in first] == sorted((s.fraction for s in first), reverse=True)


def test_colorfulness_orders_grey_muted_vivid() -> None:
    grey = np.array([[128, 128, 128], [60, 60, 60]] * 50, dtype=np.uint8)
    muted = np.array([[140, 120, 110], [90, 100, 120]] * 50, dtype=np.uint8)
    vivid = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]] * 25, dtype=np.uint8)
    assert colorfulness(grey) == 0.0
    assert 0.0 < colorfulness(muted) < colorfulness(vivid)
    assert colorfulness(vivid) > 100  # "extremely colourful" on Hasler & Suesstrunk's scale


def test_alpha_stats_and_transparent_pixels_do_not_vote() -> None:
    # Left 30%: fully transparent red; right 70%: opaque blue with a translucent stripe.
    image = Image.new("RGBA", (100, 10), (0, 0, 255, 255))
    image.paste((255, 0, 0, 0), (0, 0, 30, 10))
    image.paste((0, 0, 255, 128), (90, 0, 100, 10))
    info = color_info(image)
    assert info.alpha is not None
    assert info.alpha.transparent_fraction == pytest.approx(0.3)
    assert info.alpha.translucent_fraction == pytest.approx(0.1)
    assert info.alpha.mean_alpha == pytest.approx((0.6 * 255 + 0.1 * 128) / 255, abs=1e-3)
    assert [s.rgb for s in info.palette] == [(0, 0, 255)]  # red is invisible; alpha 128 counts as visible


def test_fully_transparent_image_has_no_colours() -> None:
    info = color_info(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))
    assert info.dominant is None and info.palette == () and info.mean_rgb is None and info.colorfulness is None
    assert info.alpha is not None and info.alpha.transparent_fraction == 1.0


def test_palette_image_with_transparency_through_extract() -> None:
    image = _split((255, 0, 0), (0, 255, 0), 0.5).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent_index = image.getpixel((0, 0))
    meta = extract_metadata(_png(image, transparency=transparent_index))
    assert meta.image is not None and meta.image.has_alpha and meta.image.mode == "P"
    assert meta.colors is not None and meta.colors.alpha is not None
    assert meta.colors.alpha.transparent_fraction == pytest.approx(0.5, abs=0.02)
    assert meta.colors.dominant is not None and meta.colors.dominant.rgb == (0, 255, 0)


def test_large_image_is_measured_on_a_bounded_thumbnail() -> None:
    meta = extract_metadata(_png(_split((250, 250, 250), (5, 5, 5), 0.5).resize((2400, 960))))
    assert meta.colors is not None and max(meta.colors.sample_size) <= THUMBNAIL_SIZE
    assert [s.fraction for s in meta.colors.palette[:2]] == pytest.approx([0.5, 0.5], abs=0.02)


def test_colours_are_optional() -> None:
    meta = extract_metadata(_png(Image.new("RGB", (8, 8), "red")), colors=False)
    assert meta.colors is None and meta.file.phash is not None


def test_embedded_srgb_profile_converts_cleanly() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    meta = extract_metadata(_png(Image.new("RGB", (16, 16), (200, 100, 50)), icc_profile=icc))
    assert meta.colors is not None and meta.colors.srgb
    assert meta.colors.mean_rgb is not None
    assert np.abs(np.subtract(meta.colors.mean_rgb, (200, 100, 50))).max() <= 2


def test_broken_icc_profile_is_reported_not_fatal() -> None:
    meta = extract_metadata(_png(Image.new("RGB", (16, 16), (200, 100, 50)), icc_profile=b"not an icc profile" * 8))
    assert meta.colors is not None and not meta.colors.srgb and meta.colors.mean_rgb == (200, 100, 50)
    assert any(e.startswith("colors:") for e in meta.errors)
    assert any(e.startswith("image.icc_profile:") for e in meta.errors)
