"""Conversion of unusual inputs and outputs: every refusal is an `ImageInputError` (a 4xx), never a 500."""

import io

import pytest
from PIL import Image, PngImagePlugin

from pipelines.convert import ConvertOptions, available_formats, convert_image
from pipelines.errors import InvalidOptionError
from pipelines.limits import DecodeLimits

pytestmark = pytest.mark.unit


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 120, 220)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(8000, 2), (2, 8000), (16000, 16)])
def test_a_heif_output_the_encoder_cannot_write_is_an_invalid_option(size: tuple[int, int]) -> None:
    """x265 refuses thin images beyond its levels' limits: pillow-heif's RuntimeError was a 500."""
    if "heif" not in {f.name for f in available_formats()}:
        pytest.skip("no heif encoder installed here")
    with pytest.raises(InvalidOptionError, match=f"{size[0]}x{size[1]}.*max_side"):
        convert_image(_png(size), ConvertOptions.parse(format="heif"), DecodeLimits())
    smaller = convert_image(_png(size), ConvertOptions.parse(format="heif", max_side=2000), DecodeLimits())
    assert max(smaller.width, smaller.height) == 2000


def _personal_jpeg_and_png() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif.get_ifd(0x8769).update({0x927C: b"MAKERNOTE-SERIAL-123456", 0x9286: b"ASCII\x00\x00\x00Jane at home"})
    image = Image.new("RGB", (64, 48), (100, 150, 200))
    jpeg, png = io.BytesIO(), io.BytesIO()
    image.save(jpeg, "JPEG", exif=exif.tobytes())
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Doe")
    text.add_text("Comment", "taken at Jane's home")
    image.save(png, "PNG", exif=exif.tobytes(), pnginfo=text)
    return {"jpeg": jpeg.getvalue(), "png": png.getvalue()}


@pytest.mark.parametrize("output", ["jpeg", "png", "webp", "heif"])
@pytest.mark.parametrize("source", ["jpeg", "png"])
def test_anonymize_removes_the_maker_note_user_comment_and_png_text(source: str, output: str) -> None:
    """The HEIF writer kept the maker note (serial numbers), every format the EXIF UserComment, and PNG the text
    chunks (Author, Comment) of the input."""
    if output not in {f.name for f in available_formats()}:
        pytest.skip(f"no {output} encoder installed here")
    data = _personal_jpeg_and_png()[source]
    out = convert_image(data, ConvertOptions.parse(format=output, anonymize=True), DecodeLimits()).data
    assert b"Jane" not in out and b"SERIAL-123456" not in out
    written = Image.open(io.BytesIO(out))
    assert written.getexif().get(0x010F) == "Canon"  # the camera type stays
    assert not {0x927C, 0x9286} & set(written.getexif().get_ifd(0x8769))
    kept = convert_image(data, ConvertOptions.parse(format=output), DecodeLimits()).data
    assert b"Jane" in kept  # without anonymize the comment is kept: the check above can fail
