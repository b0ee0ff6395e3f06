"""Metadata colours of float and 32-bit TIFFs follow the project's one 8-bit rule (`pixel_modes.eight_bit_scale`)
as the decode stage and conversion do: they were stretched between the image's extremes, so a uniform mid-grey
float TIFF reported #000000 and a dark one came out bright."""

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import decode_rgb
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()


def _tiff(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "TIFF")
    return out.getvalue()


def test_uniform_mid_grey_float_tiff_is_mid_grey() -> None:
    colors = extract_metadata(_tiff(Image.new("F", (50, 50), 0.5)), LIMITS).colors
    assert colors is not None and colors.mean_hex == "#808080"
    assert colors.dominant is not None and colors.dominant.hex == "#808080"


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(np.tile(np.linspace(0, 0.25, 200, dtype=np.float32), (100, 1)), "F"),  # dark float
        Image.fromarray(np.tile(np.linspace(0, 1 << 29, 200).astype(np.int32), (100, 1)), "I"),  # dark 32-bit
        Image.fromarray(np.tile(np.linspace(0, 300.0, 200, dtype=np.float32), (600, 1)), "F"),  # float above 1
    ],
    ids=["float-dark", "int32-dark", "float-large-shrunk"],
)
def test_deep_tiff_colours_match_the_decode_and_conversion(image: Image.Image) -> None:
    data = _tiff(image)
    colors = extract_metadata(data, LIMITS).colors
    assert colors is not None and colors.mean_rgb is not None
    decoded = float(np.asarray(decode_rgb(data, [], LIMITS).rgb).mean())
    converted = float(
        np.asarray(Image.open(io.BytesIO(convert_image(data, ConvertOptions.parse(format="png"), LIMITS).data))).mean()
    )
    assert abs(colors.mean_rgb[0] - decoded) <= 1.5
    assert abs(converted - decoded) <= 1.5
