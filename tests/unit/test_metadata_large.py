"""Metadata of images over the full-decode pixel budget (a docs walkthrough, item 4). docs/METADATA.md promises header
and EXIF even above the pixel limit, their pixels not decoded; that held for JPEG only: a PNG or TIFF over
`max_full_decode_pixels` (40 MP by default, well under `max_pixels`) was refused whole, by the metadata stage (413)
and by `extract_metadata` (`image` None, error `file: PNG image is ...`). Small images with a small budget stand in
for 50 MP scans."""

import io

import pytest
from PIL import Image

from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from serving.stages.metadata import MetadataStage

pytestmark = pytest.mark.unit

BUDGET = DecodeLimits(max_full_decode_pixels=200 * 100)  # a 200x200 image is "over 40 MP" here


def _image(image_format: str, side: int = 200) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "ScanCo"  # Make
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 160)).save(buffer, format=image_format, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_header_and_exif_of_a_full_size_format_over_the_budget_are_read(image_format: str) -> None:
    result = extract_metadata(_image(image_format), BUDGET)
    assert result.image is not None and (result.image.width, result.image.height) == (200, 200), result.errors
    assert result.exif is not None and result.exif.make == "ScanCo"
    assert result.file.format == image_format
    not_decoded = [e for e in result.errors if e.startswith("pixels:")]
    assert len(not_decoded) == 1 and "not decoded" in not_decoded[0] and "20000" in not_decoded[0], result.errors
    assert result.colors is None and result.file.phash is None  # no thumbnail: its pixels were not decoded


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_the_metadata_stage_answers_instead_of_refusing(image_format: str) -> None:
    result = MetadataStage(BUDGET).extract(_image(image_format))  # was ImageTooLargeError (413)
    assert result["image"]["width"] == 200 and result["exif"]["make"] == "ScanCo"
    assert any(e.startswith("pixels:") and "not decoded" in e for e in result["errors"])


def test_under_the_budget_and_for_jpeg_the_thumbnail_is_still_decoded() -> None:
    assert extract_metadata(_image("PNG", side=100), BUDGET).colors is not None  # 10,000 pixels: within
    jpeg = extract_metadata(_image("JPEG"), BUDGET)  # JPEG decodes at a reduced scale: not held to the budget
    assert jpeg.colors is not None and not [e for e in jpeg.errors if e.startswith("pixels:")], jpeg.errors
