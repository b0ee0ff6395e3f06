"""Full-size decodes convert a strip at a time (`pipelines.full_size`): the pixels are the whole-image route's, and
the peak memory of a decode stays near the decoder's buffer plus one HxWx3 array (~7-8 bytes a pixel; it was 10-20).

Memory is measured in a fresh process per image, as the rise of its peak resident size (what Pillow, libwebp and
numpy allocate in C, which tracemalloc does not see) after a small decode of the same format has loaded every codec.
The peak is Linux's VmHWM: ru_maxrss, the same high-water mark, also counts the pytest process the child was forked
from (Linux carries the larger one across exec), which hid every rise."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipelines.full_size as full_size
from pipelines.decode import decode_rgb, upright_image
from pipelines.full_size import rgb_array, stored_view
from pipelines.limits import DecodeLimits
from pipelines.orientation import upright_array
from pipelines.pixel_modes import tiff_sample_type, to_rgb
from pipelines.preprocess import PreprocessSpec
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit
SPEC = PreprocessSpec()

_PEAK_OF_ONE_DECODE = """
import io, json, re, sys
from PIL import Image
from pipelines.decode import decode_image
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec

def peak_bytes():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

data = open(sys.argv[1], "rb").read()
header = Image.open(io.BytesIO(data))
small = io.BytesIO()
Image.new(header.mode, (64, 48)).save(small, header.format)
decode_image(small.getvalue(), PreprocessSpec(), DecodeLimits(), working_max_side=512)
del header, small
before = peak_bytes()
decoded = decode_image(data, PreprocessSpec(), DecodeLimits(), working_max_side=512)
rise = peak_bytes() - before
print(json.dumps({"rise": rise, "pixels": decoded.width * decoded.height}))
"""


def _encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _test_card(width: int, height: int) -> np.ndarray:
    """HxWx3 uint8: two ramps and a checkerboard (compresses well, but is no constant image)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 255 // width, y * 255 // height, (x // 64 + y // 64) % 2 * 200]).astype(np.uint8)


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _large_cases() -> dict[str, bytes]:
    """8 MP images of the kinds that cost most; bytes a pixel before strip conversion -> after, measured."""
    width, height = 4000, 2000
    card = _test_card(width, height)
    y, x = np.mgrid[0:height, 0:width]
    rgba = Image.fromarray(np.dstack([card, ((x + y) % 256).astype(np.uint8)]), "RGBA")
    return {
        "rgba-png": _encoded(rgba, "PNG", compress_level=1),  # 12.8 -> 7.2: RGBA, a white RGBA, the composite, RGB
        "rgba-webp": _encoded(rgba, "WEBP", lossless=True, quality=0, method=0),  # 20 -> 8.1: Pillow's WebP decoder
        "16-bit-png": _encoded(Image.fromarray((x * 65535 // width).astype(np.uint16)), "PNG", compress_level=1),
        "turned-rgb-png": _encoded(Image.fromarray(card), "PNG", compress_level=1, exif=_orientation_exif(6)),
    }


# bytes a pixel a full-size decode (tensor, working image and native crop) may raise the peak resident size by
_PEAK_BOUND = {"rgba-png": 10.0, "rgba-webp": 11.0, "16-bit-png": 9.0, "turned-rgb-png": 9.0}


def test_a_full_size_decode_holds_one_array_besides_the_decoders_buffer(tmp_path: Path) -> None:
    if "VmHWM" not in (Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""):
        pytest.skip("needs Linux's /proc/self/status (VmHWM)")
    runs = {}
    for name, data in _large_cases().items():
        path = tmp_path / name
        path.write_bytes(data)
        command = [sys.executable, "-c", _PEAK_OF_ONE_DECODE, str(path)]
        runs[name] = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()[-2000:]
        measured = json.loads(out)
        per_pixel = measured["rise"] / measured["pixels"]
        assert per_pixel < _PEAK_BOUND[name], f"{name}: {per_pixel:.1f} bytes a pixel"


def _whole_image_rgb(data: bytes, orientation: int) -> np.ndarray:
    """The route before strips: turn the whole image upright, then convert it whole."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(to_rgb(upright_image(image, orientation), tiff_sample_type(image)))


def _small_images() -> dict[str, Image.Image]:
    card = _test_card(157, 103)
    y, x = np.mgrid[0:103, 0:157]
    alpha = np.where(x < 50, 255, (x * 7 + y * 3) % 256).astype(np.uint8)
    keyed = Image.fromarray(card)
    keyed.info["transparency"] = tuple(int(v) for v in card[5, 5])
    return {
        "RGB": Image.fromarray(card),
        "RGBA": Image.fromarray(np.dstack([card, alpha]), "RGBA"),
        "LA": Image.fromarray(np.dstack([card[..., 0], alpha]), "LA"),
        "P": Image.fromarray(card).quantize(32),
        "RGB-keyed": keyed,
        "I;16": Image.fromarray((x * 65535 // 157).astype(np.uint16)),
        "F": Image.fromarray(np.where(x == 3, np.nan, x / 157 * 2.0).astype(np.float32)),
        "I": Image.fromarray((x * 1_000_000 - 5_000_000).astype(np.int32)),
    }


_SMALL_CASES = [
    ("PNG", "RGB"),
    ("PNG", "RGBA"),
    ("PNG", "LA"),
    ("PNG", "P"),
    ("PNG", "RGB-keyed"),
    ("PNG", "I;16"),
    ("TIFF", "F"),
    ("TIFF", "I"),
    ("TIFF", "RGBA"),
    ("WEBP", "RGBA"),
    ("WEBP", "RGB"),
    ("JPEG", "RGB"),
]


@pytest.mark.parametrize("orientation", [1, 2, 6, 7])
@pytest.mark.parametrize(("fmt", "kind"), _SMALL_CASES, ids=[f"{f}-{k}" for f, k in _SMALL_CASES])
def test_strips_give_the_whole_image_routes_pixels(
    monkeypatch: pytest.MonkeyPatch, fmt: str, kind: str, orientation: int
) -> None:
    monkeypatch.setattr(full_size, "STRIP_PIXELS", 2_000)  # a dozen strips (rows or columns) of a 157x103 image
    params: dict[str, object] = {"tiffinfo": {274: orientation}} if fmt == "TIFF" else {}
    if fmt != "TIFF" and orientation != 1:
        params["exif"] = _orientation_exif(orientation)
    data = _encoded(_small_images()[kind], fmt, **params)
    decoded = decode_rgb(data, SPEC, DecodeLimits(), reduced=False)
    expected = _whole_image_rgb(data, orientation)
    assert np.array_equal(np.asarray(decoded.rgb), expected)
    assert decoded.pixels is None or np.array_equal(decoded.pixels, expected)
    assert expected.shape[:2] == ((157, 103) if orientation in (6, 7) else (103, 157))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_stored_view_is_the_inverse_of_turning_upright(orientation: int) -> None:
    upright = np.arange(5 * 7 * 3).reshape(5, 7, 3)
    stored = stored_view(upright, orientation)
    assert np.shares_memory(stored, upright)
    assert np.array_equal(upright_array(stored, orientation), upright)


def test_an_rgb_image_is_copied_to_an_array_a_strip_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(full_size, "STRIP_PIXELS", 1_000)
    image = Image.fromarray(_test_card(157, 103))
    assert np.array_equal(rgb_array(image), np.asarray(image))
