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
from pipelines.orientation import UPRIGHT_TRANSPOSE

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


def _animated_sideways(orientation: int) -> tuple[bytes, list[np.ndarray]]:
    """A lossless 3-frame WebP, 60x30 stored, each frame its own colour with a green left third; and each frame
    as a viewer shows it (Pillow's exif_transpose of that frame)."""
    frames, shown = [], []
    for colour in ((255, 0, 0), (0, 0, 255), (255, 255, 0)):
        pixels = np.zeros((30, 60, 3), np.uint8)
        pixels[:] = colour
        pixels[:, :20] = (0, 255, 0)
        frames.append(Image.fromarray(pixels))
        shown.append(
            np.asarray(frames[-1].transpose(UPRIGHT_TRANSPOSE[orientation]) if orientation != 1 else frames[-1])
        )
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    frames[0].save(
        out, "WEBP", save_all=True, append_images=frames[1:], duration=100, exif=exif.tobytes(), lossless=True
    )
    return out.getvalue(), shown


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_animation_is_turned_upright_frame_by_frame(orientation: int) -> None:
    """libvips turned an animation's whole strip of frames: orientation 6 was not applied at all, 3 reversed the
    frame order and 8 mixed frames."""
    data, shown = _animated_sideways(orientation)
    result = convert_image(data, ConvertOptions.parse(format="webp", lossless=True), DecodeLimits())
    output = Image.open(io.BytesIO(result.data))
    assert output.getexif().get(0x0112, 1) == 1
    assert output.n_frames == 3 and result.frames == 3
    assert (result.width, result.height) == output.size == shown[0].shape[1::-1]
    for index, expected in enumerate(shown):
        output.seek(index)
        assert np.array_equal(np.asarray(output.convert("RGB")), expected), f"frame {index}"


@pytest.mark.parametrize("orientation", [6, 8])
def test_an_animation_stored_sideways_fits_the_box_upright(orientation: int) -> None:
    data, _ = _animated_sideways(orientation)
    result = convert_image(data, ConvertOptions.parse(format="webp", width=15), DecodeLimits())
    output = Image.open(io.BytesIO(result.data))
    assert output.size == (result.width, result.height) == (15, 30) and output.n_frames == 3
