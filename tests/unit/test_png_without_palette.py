"""A PNG of palette colours (colour type 3) without its PLTE chunk: the PNG standard requires the palette, libpng and
libvips refuse the file, and Pillow opens it with an empty palette (every pixel black). /v1/convert and /v1/enhance
answered 400 `image could not be decoded: unable to call thumbnail_buffer`, libvips' internal words (found by a
hostile-client walkthrough); they now say what is wrong with the file."""

import re
import struct
import zlib

import pytest
import pyvips

from pipelines.convert import ConvertOptions, convert_image
from pipelines.convert.vips_io import vips_message
from pipelines.decode import decode_image
from pipelines.enhance import EnhanceOptions
from pipelines.enhance.image import enhance_image
from pipelines.errors import InvalidImageError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()
REFUSAL = re.escape("PNG image uses a palette (colour type 3) but has no PLTE chunk")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def palette_png(with_palette: bool) -> bytes:
    """4x4, colour type 3, indices 0..3 on each row; with or without its PLTE chunk."""
    header = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes([0, 1, 2, 3]) for _ in range(4))
    palette = _chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])) if with_palette else b""
    chunks = _chunk(b"IHDR", header) + palette + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_convert_and_enhance_refuse_it_in_the_apis_words() -> None:
    data = palette_png(with_palette=False)
    with pytest.raises(InvalidImageError, match=REFUSAL) as converted:
        convert_image(data, ConvertOptions.parse(format="png"), LIMITS)
    with pytest.raises(InvalidImageError, match=REFUSAL) as enhanced:
        enhance_image(data, EnhanceOptions.parse(ops="gamma"), ConvertOptions.parse(format="png"), LIMITS)
    assert "thumbnail_buffer" not in str(converted.value) + str(enhanced.value)


def test_the_same_png_with_its_palette_converts() -> None:
    result = convert_image(palette_png(with_palette=True), ConvertOptions.parse(format="png"), LIMITS)
    assert (result.width, result.height) == (4, 4)


def test_a_libvips_error_of_wrappers_only_names_no_libvips_call() -> None:
    """Whatever else libvips refuses with nothing but "unable to call X" is said in the API's words too."""
    assert vips_message(pyvips.Error("unable to call thumbnail_buffer", "")) == "its data is invalid or incomplete"
    error = pyvips.Error("unable to call thumbnail_buffer", "pngload_buffer: libpng read error\n")
    assert vips_message(error) == "pngload_buffer: libpng read error"


def test_the_decode_stage_refuses_it_too() -> None:
    with pytest.raises(InvalidImageError, match=REFUSAL):
        decode_image(palette_png(with_palette=False), PreprocessSpec(), LIMITS)
