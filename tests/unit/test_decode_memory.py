"""Memory of full-size decodes stays near the image's own size: small crafted files (a constant 16-bit PNG, a float
TIFF, a transparent PNG, an RLE BMP) must not cost many times what `max_full_decode_pixels` implies.

numpy's allocations are traced by `tracemalloc` (Pillow's and libvips' are not), so these measure the copies made
by imgserve's own code, the ones these fixes removed."""

import gc
import io
import re
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import decode_image
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _traced_peak(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("array", "fmt"),
    [(np.full((1500, 1500), 40000, np.uint16), "PNG"), (np.full((1500, 1500), 0.5, np.float32), "TIFF")],
    ids=["16-bit-png", "float-tiff"],
)
def test_metadata_thumbnail_of_a_deep_image_makes_no_full_size_float_copies(array: np.ndarray, fmt: str) -> None:
    data = _encode(Image.fromarray(array), fmt)
    pixels = array.size
    peak = _traced_peak(lambda: extract_metadata(data))
    # was 32 bytes a pixel (float64 copies of the whole image): 1.3 GB for a 92 KB 40 MP 16-bit PNG
    assert peak < 2 * pixels, f"{peak / pixels:.1f} bytes a pixel"
    meta = extract_metadata(data)
    assert meta.colors is not None and meta.file.phash is not None, meta.errors


def test_metadata_thumbnail_of_a_16_bit_image_keeps_its_brightness() -> None:
    data = _encode(Image.fromarray(np.full((600, 900), 40000, np.uint16)), "PNG")
    meta = extract_metadata(data)
    assert meta.colors is not None, meta.errors
    assert meta.colors.mean_rgb is not None and all(abs(v - 40000 / 257) <= 1 for v in meta.colors.mean_rgb)


def test_decoding_a_float_tiff_converts_its_samples_in_place() -> None:
    array = np.linspace(0.0, 1.0, 1500 * 1500, dtype=np.float32).reshape(1500, 1500)
    data = _encode(Image.fromarray(array), "TIFF")
    spec = PreprocessSpec(crop_size=None)
    peak = _traced_peak(lambda: decode_image(data, spec, DecodeLimits()))
    # was 17 bytes a pixel (numpy's share): a float32 copy for each of nan_to_num, rint and clip
    assert peak < 15 * array.size, f"{peak / array.size:.1f} bytes a pixel"
    tensor = decode_image(data, spec, DecodeLimits()).tensor
    assert tensor.min() < 5 and tensor.max() > 250  # 0..1 floats scaled to the whole 8-bit range


def _peak_rss_growth(run: Callable[[], object]) -> int:
    """Bytes the process's peak resident size rose above its size before `run` (Linux: the peak is reset first)."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux's /proc/self/status and clear_refs")

    def kib(field: str) -> int:
        match = re.search(rf"{field}:\s+(\d+)", status.read_text())
        assert match is not None
        return int(match.group(1))

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = kib("VmRSS")
    run()
    return (kib("VmHWM") - before) * 1024


def test_a_transparent_png_is_flattened_without_extra_full_size_copies() -> None:
    width, height = 4000, 3000
    data = _encode(Image.new("RGBA", (width, height), (10, 200, 30, 128)), "PNG")
    grown = _peak_rss_growth(lambda: decode_image(data, PreprocessSpec(), DecodeLimits(), working_max_side=512))
    # was 21 bytes a pixel (copies of the RGBA image and of a white one, the composite, RGB, the working array)
    assert grown < 15 * width * height, f"{grown / (width * height):.1f} bytes a pixel"


def _rle8_bmp(width: int, height: int) -> bytes:
    """A palette BMP with RLE8 compression: every row runs of 255 pixels of colour 1 (a 40 MP one is 330 KB)."""
    row = b"".join(bytes([min(255, width - x), 1]) for x in range(0, width, 255)) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = b"\x00\x00\x00\x00" + b"\xff\x80\x00\x00" + bytes(4 * 254)
    offset = 14 + 40 + len(palette)
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return file_header + info + palette + pixels


def test_an_rle_bmp_converted_to_a_thumbnail_is_reduced_before_its_copies() -> None:
    width, height = 4000, 4000
    data = _rle8_bmp(width, height)
    assert len(data) < 150_000
    options = ConvertOptions.parse(format="jpeg", max_side=256)
    grown = _peak_rss_growth(lambda: convert_image(data, options, DecodeLimits()))
    # was 10 bytes a pixel (the palette image, RGB, numpy's copy of RGB): 420 MB for a 330 KB file of 40 MP
    assert grown < 7 * width * height, f"{grown / (width * height):.1f} bytes a pixel"
    result = convert_image(data, options, DecodeLimits())
    out = np.asarray(Image.open(io.BytesIO(result.data)))
    assert result.width == result.height == 256
    assert np.abs(out.astype(int) - (0, 128, 255)).max() < 8  # palette entry 1 (B 0xff, G 0x80, R 0)
