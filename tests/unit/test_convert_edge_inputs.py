"""Conversion and enhancement of unusual but valid inputs: 1x1 images of every band layout, float and 32-bit samples,
and truncated files (`pipelines.convert`, `pipelines.enhance.image`)."""

import io

import numpy as np
import pytest
import pyvips
from PIL import Image

from pipelines.convert import ConvertOptions, available_formats, convert_image
from pipelines.decode import decode_image
from pipelines.enhance import EnhanceOptions
from pipelines.enhance.image import enhance_image
from pipelines.errors import InvalidOptionError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()
AS_IS = PreprocessSpec(resize_policy="none", crop_size=None, dtype="uint8")
WRITTEN = {f.name for f in available_formats()}
ONE_PIXEL = {"L": 77, "LA": (77, 200), "RGB": (10, 120, 230), "RGBA": (10, 120, 230, 200)}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["bmp", "heif", "png", "jpeg"])
@pytest.mark.parametrize("mode", list(ONE_PIXEL))
def test_a_one_pixel_image_converts(mode: str, fmt: str) -> None:
    """A 1x1 one-band image came back from libvips' numpy() as a 0-d array: IndexError, a 500 (BMP, HEIF)."""
    if fmt not in WRITTEN:
        pytest.skip(f"no {fmt} encoder installed here")
    data = encode(Image.new(mode, (1, 1), ONE_PIXEL[mode]), "PNG")
    result = convert_image(data, ConvertOptions.parse(format=fmt), LIMITS)
    out = opened(result.data)
    assert out.size == (1, 1) == (result.width, result.height)
    if fmt in ("bmp", "png") and "A" not in mode:  # lossless: the first band's value survives
        assert out.convert("RGB").getpixel((0, 0))[0] in (10, 77)


@pytest.mark.parametrize("fmt", ["bmp", "heif"])
def test_grey_shrunk_to_one_pixel_converts(fmt: str) -> None:
    if fmt not in WRITTEN:
        pytest.skip(f"no {fmt} encoder installed here")
    grey16 = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
    result = convert_image(encode(grey16, "TIFF"), ConvertOptions.parse(format=fmt, max_side=1), LIMITS)
    assert opened(result.data).size == (1, 1)


@pytest.mark.parametrize("mode", list(ONE_PIXEL))
@pytest.mark.parametrize("enhance", [{"ops": "gamma"}, {"auto": True}])
def test_a_one_pixel_image_enhances(mode: str, enhance: dict) -> None:
    data = encode(Image.new(mode, (1, 1), ONE_PIXEL[mode]), "PNG")
    result, _ = enhance_image(data, EnhanceOptions.parse(**enhance), ConvertOptions(format="png"), LIMITS, [])
    assert opened(result.data).size == (1, 1)


def deep_tiff(values: np.ndarray) -> bytes:
    return pyvips.Image.new_from_array(np.ascontiguousarray(values)).tiffsave_buffer()


RAMP = np.tile(np.arange(256, dtype=np.float64), (8, 1))  # 8 rows of 0..255
DEEP = {
    "float 0..1": RAMP / 255.0,
    "float 0..255": RAMP,
    "uint32": RAMP * (2**32 - 1) / 255.0,
    "int16": RAMP * 32767 / 255.0,
}
DEEP_TYPES = {"float 0..1": np.float32, "float 0..255": np.float32, "uint32": np.uint32, "int16": np.int16}


@pytest.mark.parametrize("name", list(DEEP))
def test_deep_samples_convert_scaled_as_the_decode_stage_scales_them(name: str) -> None:
    """A cast clipped: float 0..1 came out black, uint32 black and white, int16 at half brightness (all 200s)."""
    data = deep_tiff(
        np.rint(DEEP[name]).astype(DEEP_TYPES[name])
        if DEEP_TYPES[name] != np.float32
        else DEEP[name].astype(np.float32)
    )
    converted = np.asarray(opened(convert_image(data, ConvertOptions.parse(format="png"), LIMITS).data).convert("L"))
    assert np.abs(converted.astype(int) - RAMP.astype(int)).max() <= 1, converted[0, ::32]
    working = decode_image(data, AS_IS, LIMITS, working_max_side=512).working
    assert working is not None
    assert np.array_equal(working[:, :, 0], converted)  # analysis and conversion see the same pixels


@pytest.mark.parametrize("fmt", ["bmp", "gif"])
def test_icc_keep_is_refused_for_formats_without_a_profile(fmt: str) -> None:
    """BMP and GIF were written with the Display-P3 pixels as they were and no profile: colours shifted, a 200."""
    with pytest.raises(InvalidOptionError, match=rf"icc=keep: format={fmt} cannot carry.*png, webp"):
        ConvertOptions.parse(format=fmt, icc="keep")
    with pytest.raises(InvalidOptionError, match="icc=keep"):  # the input's own format, when none is asked for
        ConvertOptions.parse(icc="keep").resolved(fmt.upper())
    assert ConvertOptions.parse(format=fmt).icc == "srgb"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff", "avif", "heif"])
def test_icc_keep_is_accepted_where_the_profile_is_written(fmt: str) -> None:
    if fmt not in WRITTEN:
        pytest.skip(f"no {fmt} encoder installed here")
    assert ConvertOptions.parse(format=fmt, icc="keep").icc == "keep"
