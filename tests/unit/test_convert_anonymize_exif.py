"""`anonymize=true` on conversion: the EXIF thumbnail (IFD1, a JPEG with its own GPS and artist) and the IFD0 tags
that name a device, a computer or carry free text are removed from every output; edited EXIF blocks carry one
`Exif\\0\\0` header (WebP and HEIF writers copy the blob as it is)."""

import io

import pytest
import pyvips
from PIL import Image

from pipelines.convert import ConvertOptions, available_formats, convert_image
from pipelines.convert.metadata_edit import PERSONAL_TAGS, anonymize_vips, anonymized_exif
from pipelines.convert.vips_io import upright_exif
from pipelines.limits import DecodeLimits
from pipelines.metadata import exif as metadata_exif
from pipelines.metadata.anonymize import anonymize_metadata

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()
EXIF_HEADER = b"Exif\x00\x00"  # the APP1 identifier, once at the start of an EXIF blob


def _skip_unless_available(output: str) -> None:
    if output not in {f.name for f in available_formats()}:
        pytest.skip(f"no {output} encoder installed here")


def _jpeg_with_personal_thumbnail() -> bytes:
    """A camera-style JPEG whose EXIF thumbnail is a JPEG carrying its own GPS position and artist (as exiftool's
    `-ThumbnailImage<=` writes one); libvips writes IFD1 from its `jpeg-thumbnail-data` field."""
    inner = Image.Exif()
    inner[0x013B] = "Thumb Artist"
    inner.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    thumb, photo = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (160, 120), (200, 50, 50)).save(thumb, "JPEG", exif=inner.tobytes())
    outer = Image.Exif()
    outer[0x010F] = "Canon"
    Image.new("RGB", (640, 480), (10, 100, 200)).save(photo, "JPEG", exif=outer.tobytes())
    image = pyvips.Image.new_from_buffer(photo.getvalue(), "").copy()
    image.set_type(pyvips.GValue.blob_type, "jpeg-thumbnail-data", thumb.getvalue())
    data = image.jpegsave_buffer()
    assert b"Thumb Artist" in data  # the thumbnail's EXIF is in the file: the checks below can fail
    return data


@pytest.mark.parametrize("output", ["jpeg", "png", "avif", "webp", "heif"])
def test_anonymize_drops_the_exif_thumbnail_and_its_own_gps_and_artist(output: str) -> None:
    """libvips' `jpeg-thumbnail-data` field was never removed: JPEG, PNG and AVIF outputs wrote the original
    thumbnail back, with its GPS position and artist."""
    _skip_unless_available(output)
    data = _jpeg_with_personal_thumbnail()
    out = convert_image(data, ConvertOptions.parse(format=output, anonymize=True), LIMITS).data
    assert b"Thumb Artist" not in out
    assert Image.open(io.BytesIO(out)).getexif().get(0x010F) == "Canon"  # the camera type stays
    kept = convert_image(data, ConvertOptions.parse(format=output), LIMITS).data
    if output in ("jpeg", "png", "avif"):  # libvips' savers keep the thumbnail: without anonymize it is there
        assert b"Thumb Artist" in kept


def test_anonymize_vips_removes_the_thumbnail_fields() -> None:
    image = pyvips.Image.new_from_buffer(_jpeg_with_personal_thumbnail(), "")
    assert "jpeg-thumbnail-data" in image.get_fields()
    fields = anonymize_vips(image).get_fields()
    assert "jpeg-thumbnail-data" not in fields
    assert not [name for name in fields if name.startswith("exif-ifd1-")]
    assert "exif-ifd0-Make" in fields


def _jpeg_with_device_and_free_text() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0xC62F] = "CSN-777"  # CameraSerialNumber
    exif[0x013C] = "Janes-MacBook"  # HostComputer
    exif[0x010E] = "Jane at home, 12 Elm St"  # ImageDescription
    exif[0x9C9F] = "xp subj".encode("utf-16-le") + b"\x00\x00"  # XPSubject
    exif[0x9C9E] = "xp keys".encode("utf-16-le") + b"\x00\x00"  # XPKeywords
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (100, 150, 200)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


_DEVICE_AND_TEXT = (b"CSN-777", b"Janes-MacBook", b"Jane at home", "xp subj".encode("utf-16-le"), b"x\x00p\x00 \x00k")


@pytest.mark.parametrize("output", ["heif", "webp", "jpeg", "png"])
def test_anonymize_drops_serial_number_host_computer_and_free_text(output: str) -> None:
    """HEIF and WebP outputs (Pillow's and libwebp's writers copy the edited blob) kept IFD0 CameraSerialNumber,
    HostComputer, ImageDescription and the XP free-text tags; docs/IMAGE_OPERATIONS.md promises serial numbers go."""
    _skip_unless_available(output)
    data = _jpeg_with_device_and_free_text()
    out = convert_image(data, ConvertOptions.parse(format=output, anonymize=True), LIMITS).data
    assert [text for text in _DEVICE_AND_TEXT if text in out] == []
    assert Image.open(io.BytesIO(out)).getexif().get(0x010F) == "Canon"
    kept = convert_image(data, ConvertOptions.parse(format=output), LIMITS).data
    if output in ("heif", "webp"):  # these writers copy the block: without anonymize the serial is there
        assert b"CSN-777" in kept


def test_anonymized_exif_drops_every_personal_tag_and_keeps_one_header() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    for tag in PERSONAL_TAGS:  # in IFD0 and in the Exif IFD: writers put them in either
        exif[tag] = "x"
        exif.get_ifd(0x8769)[tag] = "y"
    blob = anonymized_exif(b"Exif\x00\x00" + exif.tobytes()[len(EXIF_HEADER) :])
    assert blob is not None and blob.startswith(EXIF_HEADER) and blob[6:8] in (b"II", b"MM")
    left = Image.Exif()
    left.load(blob[len(EXIF_HEADER) :])
    assert {tag: value for tag, value in left.items() if tag != 0x8769} == {0x010F: "Canon"}
    assert not set(left.get_ifd(0x8769)) & set(PERSONAL_TAGS)


def test_metadata_answer_reads_no_tag_that_conversion_anonymises() -> None:
    """One list of personal EXIF tags (`PERSONAL_TAGS`): the metadata answer reports none of them, so its
    anonymisation has no EXIF field to blank. A field read from one of them would need blanking there too."""
    read = {value for name, value in vars(metadata_exif).items() if name.isupper() and isinstance(value, int)}
    assert read and not read & set(PERSONAL_TAGS)
    blanked = anonymize_metadata({"exif": {"make": "Canon"}, "gps": None, "errors": []})
    assert blanked["exif"] == {"make": "Canon"}


def _webp_exif_chunk(data: bytes) -> bytes:
    """The payload of a WebP's EXIF chunk."""
    position = 12
    while position + 8 <= len(data):
        kind, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        if kind == b"EXIF":
            return data[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)
    raise AssertionError("no EXIF chunk")


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (96, 64), (100, 150, 200)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize(
    ("source", "options"),
    [
        ("rotated", {"quality": 80, "max_side": 2048}),  # README's example: the orientation is rewritten to 1
        ("plain", {"anonymize": True}),
        ("plain", {"lossless": True, "anonymize": True}),
        ("rotated", {"lossless": True}),
    ],
)
def test_webp_exif_has_one_header_and_libvips_reads_it(source: str, options: dict[str, object]) -> None:
    """`upright_exif` and `anonymized_exif` put `Exif\\0\\0` before Pillow's `tobytes()`, which starts with it
    already; libwebp's writer copied the blob as it is (`Exif\\0\\0Exif\\0\\0II*`): exiftool and libvips read
    nothing."""
    _skip_unless_available("webp")
    data = _rotated_jpeg() if source == "rotated" else _jpeg_with_device_and_free_text()
    out = convert_image(data, ConvertOptions.parse(format="webp", **options), LIMITS).data
    chunk = _webp_exif_chunk(out)
    assert chunk[: len(EXIF_HEADER)] == EXIF_HEADER and chunk[len(EXIF_HEADER) : len(EXIF_HEADER) + 2] in (b"II", b"MM")
    read = pyvips.Image.new_from_buffer(out, "")
    assert "exif-ifd0-Make" in read.get_fields() and read.get("exif-ifd0-Make").startswith("Canon")
    assert Image.open(io.BytesIO(out)).getexif().get(0x0112, 1) == 1


def test_upright_exif_keeps_one_header() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    for blob in (exif.tobytes(), exif.tobytes()[len(EXIF_HEADER) :]):
        upright = upright_exif(blob)
        assert upright is not None and upright.startswith(EXIF_HEADER)
        assert not upright[len(EXIF_HEADER) :].startswith(EXIF_HEADER)


def test_heif_output_exif_is_readable() -> None:
    """Pillow's HEIF writer takes the blob: the edited block (orientation 1, anonymised) must parse back."""
    _skip_unless_available("heif")
    for options in ({}, {"anonymize": True}):
        out = convert_image(_rotated_jpeg(), ConvertOptions.parse(format="heif", **options), LIMITS).data
        written = Image.open(io.BytesIO(out))
        assert written.getexif().get(0x010F) == "Canon"
