"""Every output is upright and says so: a photo stored sideways with an EXIF orientation comes out turned, with
orientation 1, whatever path wrote it. Enhancement (metadata copied onto new pixels) and anonymisation (an edited
EXIF block) used to carry the input's orientation back into the output, so viewers turned it a second time."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.convert import ConvertOptions, convert_image
from pipelines.enhance.image import enhance_image
from pipelines.enhance.plan import EnhanceOptions
from pipelines.limits import DecodeLimits

pytestmark = pytest.mark.unit


def _sideways(fmt: str, orientation: int) -> bytes:
    """64x40 stored, a red left edge; orientation 6 or 8 shows it 40x64."""
    pixels = np.zeros((40, 64, 3), np.uint8)
    pixels[:, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera maker"
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, exif=exif.tobytes())
    return out.getvalue()


def _shown(data: bytes) -> Image.Image:
    """The output as a viewer shows it (its own orientation applied)."""
    image = Image.open(io.BytesIO(data))
    assert image.getexif().get(0x0112, 1) == 1, "the output's pixels are upright: its orientation must be 1"
    return ImageOps.exif_transpose(image)


def _expected(data: bytes) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


@pytest.mark.parametrize("source", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("out", ["jpeg", "png", "webp"])
def test_enhanced_and_anonymised_outputs_are_upright_once(source: str, orientation: int, out: str) -> None:
    data = _sideways(source, orientation)
    expected = np.asarray(_expected(data), dtype=int)
    outputs = {
        "enhance": enhance_image(
            data, EnhanceOptions.parse(brightness=1.1), ConvertOptions.parse(format=out), DecodeLimits()
        )[0].data,
        "convert anonymize": convert_image(data, ConvertOptions.parse(format=out, anonymize=True), DecodeLimits()).data,
        "convert": convert_image(data, ConvertOptions.parse(format=out), DecodeLimits()).data,
    }
    for path, encoded in outputs.items():
        shown = np.asarray(_shown(encoded).convert("RGB"), dtype=int)
        assert shown.shape == expected.shape, f"{path}: shown {shown.shape[1::-1]}, expected {expected.shape[1::-1]}"
        assert np.abs(shown - expected).mean() < 25, f"{path}: turned the wrong way"
        if out == "jpeg":  # the rest of the block is kept: only the orientation changed
            assert Image.open(io.BytesIO(encoded)).getexif().get(0x010F) == "Camera maker", path
