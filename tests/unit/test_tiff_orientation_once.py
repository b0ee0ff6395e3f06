"""A TIFF with an EXIF orientation reads as the same picture does in any other format: Pillow reports an oriented
TIFF's size upright already and turns its pixels as it loads them, and imgserve turned them a second time
(metadata stored/upright size, phash, thumbnail colours, the decode's upright size)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import decode_image, decode_rgb
from pipelines.image_header import open_validated, stored_size, upright_size
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()


def _picture() -> Image.Image:
    """300x200 stored, with a corner mark, so every turn and flip gives other pixels."""
    image = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(image).rectangle([0, 0, 120, 60], fill="red")
    ImageDraw.Draw(image).rectangle([250, 150, 299, 199], fill="blue")
    return image


def _encoded(image: Image.Image, fmt: str, orientation: int) -> bytes:
    """`image` in `fmt` with EXIF `orientation` (PNG: its eXIf chunk, which Pillow leaves to the reader)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, fmt, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_oriented_tiff_metadata_matches_the_same_png(orientation: int) -> None:
    tiff, png = (_encoded(_picture(), fmt, orientation) for fmt in ("TIFF", "PNG"))
    from_tiff, from_png = extract_metadata(tiff, LIMITS), extract_metadata(png, LIMITS)
    assert from_tiff.image is not None and from_png.image is not None
    assert (from_tiff.image.width, from_tiff.image.height) == (300, 200)  # as stored (exiftool's ImageWidth)
    sideways = orientation >= 5
    assert (from_tiff.image.upright_width, from_tiff.image.upright_height) == ((200, 300) if sideways else (300, 200))
    assert from_tiff.image.orientation == orientation
    assert from_tiff.file.phash == from_png.file.phash
    assert from_tiff.colors is not None and from_png.colors is not None
    assert from_tiff.colors.mean_hex == from_png.colors.mean_hex
    assert from_tiff.errors == from_png.errors == ()


@pytest.mark.parametrize("orientation", [2, 5, 6, 8])
def test_oriented_tiff_decodes_and_converts_to_the_same_upright_pixels(orientation: int) -> None:
    """The decode stage (models, quality: its width and height) and conversion see the PNG's upright pixels."""
    tiff, png = (_encoded(_picture(), fmt, orientation) for fmt in ("TIFF", "PNG"))
    decoded_tiff, decoded_png = decode_rgb(tiff, [], LIMITS), decode_rgb(png, [], LIMITS)
    assert (decoded_tiff.width, decoded_tiff.height) == (decoded_png.width, decoded_png.height)
    assert np.array_equal(np.asarray(decoded_tiff.rgb), np.asarray(decoded_png.rgb))
    analysed = decode_image(tiff, {}, LIMITS, working_max_side=1024)
    assert (analysed.width, analysed.height) == decoded_png.rgb.size
    assert analysed.working is not None and analysed.working.shape[:2] == decoded_png.rgb.size[::-1]
    converted = [convert_image(data, ConvertOptions.parse(format="png"), LIMITS) for data in (tiff, png)]
    assert converted[0].width == converted[1].width and converted[0].height == converted[1].height
    pixels = [np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")) for result in converted]
    assert np.array_equal(pixels[0], pixels[1])
    assert np.array_equal(pixels[0], np.asarray(decoded_png.rgb))


def test_header_sizes_of_an_oriented_tiff() -> None:
    header = open_validated(_encoded(_picture(), "TIFF", 6), LIMITS)
    assert stored_size(header) == (300, 200)
    assert upright_size(header, 6) == (200, 300)
    jpeg_like = open_validated(_encoded(_picture(), "PNG", 6), LIMITS)
    assert stored_size(jpeg_like) == (300, 200) and upright_size(jpeg_like, 6) == (200, 300)


def test_deep_oriented_tiff_thumbnail_is_turned_once() -> None:
    """16-bit and float TIFFs go through the thumbnail's 8-bit step, which loads (and so turns) them first."""
    grey = np.zeros((200, 300), np.float32)
    grey[:60, :120] = 1.0
    reference = extract_metadata(_encoded(Image.fromarray((grey * 255).astype(np.uint8), "L"), "PNG", 6), LIMITS)
    for image in (Image.fromarray(grey, "F"), Image.fromarray((grey * 65535).astype(np.uint16))):
        assert extract_metadata(_encoded(image, "TIFF", 6), LIMITS).file.phash == reference.file.phash
