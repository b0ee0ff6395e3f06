"""EXIF values that do not read as what they claim are left out with an `errors` entry, never passed through or
dropped silently: an OffsetTimeOriginal that is no UTC offset, a rational n/0; an undefined (0/0) seconds part of
GPSTimeStamp reads as 0, as exiftool reads it."""

import io

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata

pytestmark = pytest.mark.unit
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def _jpeg(exif_ifd: dict[int, object] | None = None, gps_ifd: dict[int, object] | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    if exif_ifd:
        exif.get_ifd(EXIF_IFD).update(exif_ifd)
    if gps_ifd:
        exif.get_ifd(GPS_IFD).update(gps_ifd)
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("offset", ["+25:99", "+05:60", "-24:00", "+0200"])
def test_an_offset_that_is_no_utc_offset_is_left_out_with_an_error(offset: str) -> None:
    """'+25:99' went into `datetime_original` as it was: not ISO 8601 (the XMP reader refuses such offsets)."""
    metadata = extract_metadata(_jpeg({0x9003: "2021:06:01 10:00:00", 0x9011: offset}), DecodeLimits())
    assert metadata.exif is not None and metadata.exif.datetime_original == "2021-06-01T10:00:00"
    assert [e for e in metadata.errors if e.startswith("exif.datetime_original:") and repr(offset) in e]


@pytest.mark.parametrize("offset", ["+14:00", "-09:30", "+00:00"])
def test_a_utc_offset_is_kept(offset: str) -> None:
    metadata = extract_metadata(_jpeg({0x9003: "2021:06:01 10:00:00", 0x9011: offset}), DecodeLimits())
    assert metadata.exif is not None and metadata.exif.datetime_original == f"2021-06-01T10:00:00{offset}"
    assert metadata.errors == ()


def test_gps_time_with_undefined_seconds_reads_as_whole_minutes() -> None:
    """12:30:(0/0) gave `gps: null` and no error; exiftool reads 12:30:00."""
    time = (IFDRational(12, 1), IFDRational(30, 1), IFDRational(0, 0))
    metadata = extract_metadata(_jpeg(gps_ifd={7: time, 29: "2020:02:03"}), DecodeLimits())
    assert metadata.gps is not None and metadata.gps.timestamp_utc == "2020-02-03T12:30:00Z"
    assert metadata.errors == ("gps.timestamp_utc: seconds 0/0 (undefined) read as 0",)


def test_gps_time_that_does_not_read_is_an_error() -> None:
    time = (IFDRational(12, 1), IFDRational(30, 1), IFDRational(5, 0))
    metadata = extract_metadata(_jpeg(gps_ifd={7: time, 29: "2020:02:03"}), DecodeLimits())
    assert metadata.gps is None
    assert [e for e in metadata.errors if e.startswith("gps.timestamp_utc: unreadable time")]


def test_a_rational_over_zero_is_an_error_and_zero_over_zero_is_unknown() -> None:
    """ExposureTime 1/0 was None with no `errors` entry; 0/0 is EXIF's "unknown" (None, nothing to say)."""
    metadata = extract_metadata(
        _jpeg({0x829A: IFDRational(1, 0), 0x829D: IFDRational(0, 0), 0x920A: IFDRational(50, 0)}), DecodeLimits()
    )
    assert metadata.exif is not None
    assert (metadata.exif.exposure_time_s, metadata.exif.f_number, metadata.exif.focal_length_mm) == (None, None, None)
    assert metadata.errors == (
        "exif.exposure_time_s: 1/0 is not a finite number",
        "exif.focal_length_mm: 50/0 is not a finite number",
    )
