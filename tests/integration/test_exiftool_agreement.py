"""imgserve's metadata against `exiftool -n -j` over every file of ../shared/data/exif-samples.

Two tables are printed (run with `-s` to see them):

- **standard tags** (asserted, >= 99% per field): exiftool's value from the group whose meaning matches the
  field: EXIF (IFD0/Exif/GPS IFDs), XMP for an orientation EXIF lacks, Composite for signed GPS, File (JPEG
  SOF, HEIF ispe) or EXIF IFD0 (TIFF) for the main image's size. This is what our fields promise.
- **exiftool's pick** (asserted >= 99% over all fields together): the value plain `exiftool -n -j` prints, which
  may come from maker notes, Canon CIFF, Olympus APP12 or a Composite ISO computed from Canon maker notes. imgserve
  reads those blocks when standard EXIF lacks the field (pipelines/metadata/camera_facts.py); where both state a
  value it keeps the standard one, which is where the remaining differences are (Kodak DC240).

No server is needed, so the module is a unit test despite its folder.
"""

import json
import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.metadata import ImageMetadata, exif, extract_metadata

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLES = DATA / "exif-samples"
TARGET = 0.99
GPS_TOLERANCE_DEG = 1e-6
RELATIVE_TOLERANCE = 1e-6  # exiftool -n prints 10 significant digits


@dataclass(frozen=True)
class Field:
    """One exiftool tag, where its comparable value lives in ours, how to compare, which groups are in scope."""

    ours: Callable[[ImageMetadata], Any]
    kind: str  # text | number | integer | datetime | degrees
    groups: tuple[str, ...]


def _exif(name: str) -> Callable[[ImageMetadata], Any]:
    return lambda m: getattr(m.exif, name) if m.exif else None


def _gps(name: str) -> Callable[[ImageMetadata], Any]:
    return lambda m: getattr(m.gps, name) if m.gps else None


def _image(name: str) -> Callable[[ImageMetadata], Any]:
    return lambda m: getattr(m.image, name) if m.image else None


FIELDS: dict[str, Field] = {
    "Make": Field(_exif("make"), "text", ("EXIF",)),
    "Model": Field(_exif("model"), "text", ("EXIF",)),
    "LensModel": Field(_exif("lens_model"), "text", ("EXIF",)),
    "DateTimeOriginal": Field(_exif("datetime_original"), "datetime", ("EXIF",)),
    "ExposureTime": Field(_exif("exposure_time_s"), "number", ("EXIF",)),
    "FNumber": Field(_exif("f_number"), "number", ("EXIF",)),
    "ISO": Field(_exif("iso"), "iso", ("EXIF",)),
    "FocalLength": Field(_exif("focal_length_mm"), "number", ("EXIF",)),
    "Orientation": Field(_image("orientation"), "integer", ("EXIF", "XMP")),
    "GPSLatitude": Field(_gps("latitude_deg"), "degrees", ("Composite",)),
    "GPSLongitude": Field(_gps("longitude_deg"), "degrees", ("Composite",)),
    "GPSAltitude": Field(_gps("altitude_m"), "number", ("Composite", "EXIF")),
    "ImageWidth": Field(_image("width"), "integer", ("File", "EXIF")),
    "ImageHeight": Field(_image("height"), "integer", ("File", "EXIF")),
}


def _enum_code(name: str, names: dict[int, str]) -> Callable[[ImageMetadata], Any]:
    codes = {value: code for code, value in names.items()}
    return lambda m: codes.get(getattr(m.exif, name)) if m.exif else None


def _section(section: str, name: str) -> Callable[[ImageMetadata], Any]:
    return lambda m: getattr(getattr(m, section), name) if getattr(m, section) else None


# Beyond the list: the rest of what we extract that exiftool also reports.
EXTRA_FIELDS: dict[str, Field] = {
    "SubSecDateTimeOriginal": Field(_exif("datetime_original"), "timestamp", ("Composite",)),
    "LensMake": Field(_exif("lens_make"), "text", ("EXIF",)),
    "Software": Field(_exif("software"), "text", ("EXIF",)),
    "FocalLengthIn35mmFormat": Field(_exif("focal_length_35mm_equiv_mm"), "integer", ("EXIF",)),
    "ExposureCompensation": Field(_exif("exposure_bias_ev"), "number", ("EXIF",)),
    "Flash": Field(_exif("flash"), "integer", ("EXIF",)),
    "WhiteBalance": Field(_enum_code("white_balance", exif.WHITE_BALANCES), "integer", ("EXIF",)),
    "MeteringMode": Field(_enum_code("metering_mode", exif.METERING_MODES), "integer", ("EXIF",)),
    "ExposureProgram": Field(_enum_code("exposure_program", exif.EXPOSURE_PROGRAMS), "integer", ("EXIF",)),
    "ExposureMode": Field(_enum_code("exposure_mode", exif.EXPOSURE_MODES), "integer", ("EXIF",)),
    "GPSDateTime": Field(_gps("timestamp_utc"), "timestamp", ("Composite",)),
    "GPSImgDirection": Field(_gps("img_direction_deg"), "number", ("EXIF",)),
    "BitsPerSample": Field(_image("bit_depth"), "integer", ("File", "EXIF")),
    "ProfileDescription": Field(_image("icc_profile"), "text", ("ICC_Profile",)),
    "Rating": Field(_section("xmp", "rating"), "number", ("XMP",)),
    "CreatorTool": Field(_section("xmp", "creator_tool"), "text", ("XMP",)),
    "Creator": Field(_section("xmp", "creators"), "list", ("XMP",)),
    "Title": Field(_section("xmp", "title"), "text", ("XMP",)),
    "Description": Field(_section("xmp", "description"), "text", ("XMP",)),
    "Subject": Field(_section("xmp", "keywords"), "list", ("XMP",)),
    "ObjectName": Field(_section("iptc", "object_name"), "text", ("IPTC",)),
    "Keywords": Field(_section("iptc", "keywords"), "list", ("IPTC",)),
    "By-line": Field(_section("iptc", "by_line"), "list", ("IPTC",)),
    "Caption-Abstract": Field(_section("iptc", "caption"), "text", ("IPTC",)),
    "CopyrightNotice": Field(_section("iptc", "copyright_notice"), "text", ("IPTC",)),
}


def _normalise_text(value: Any) -> str:
    return " ".join(str(value).replace("\x00", " ").split())


def _datetime_prefix(value: Any) -> str:
    """'YYYY-MM-DD HH:MM:SS' from exiftool's 'YYYY:MM:DD HH:MM:SS' or our ISO 8601 (fraction/offset dropped)."""
    text = str(value).strip()
    return f"{text[0:4]}-{text[5:7]}-{text[8:10]} {text[11:19]}"


def _timestamp(value: Any) -> datetime | None:
    """exiftool's 'YYYY:MM:DD HH:MM:SS[.f][Z|+HH:MM]' or our ISO 8601 as a datetime."""
    text = str(value).strip()
    try:
        return datetime.fromisoformat(f"{text[0:4]}-{text[5:7]}-{text[8:10]}T{text[11:]}")
    except ValueError:
        return None


def agree(kind: str, theirs: Any, ours: Any) -> bool:
    """Whether two values are equal after normalising units, whitespace and number formatting."""
    if ours is None:
        return False
    if kind == "text" and isinstance(theirs, int | float):  # exiftool's JSON turns "1.00" into 1.0
        try:
            return float(ours) == theirs
        except ValueError:
            return False
    if kind == "text":
        return _normalise_text(theirs) == _normalise_text(ours)
    if kind == "list":
        expected = theirs if isinstance(theirs, list) else [theirs]
        return [_normalise_text(v) for v in expected] == [_normalise_text(v) for v in ours]
    if kind == "datetime":
        return _datetime_prefix(theirs) == _datetime_prefix(ours)
    if kind == "timestamp":
        return _timestamp(theirs) is not None and _timestamp(theirs) == _timestamp(ours)
    try:
        expected = float(str(theirs).split()[0])
    except (ValueError, IndexError):
        return False
    if kind == "integer":
        return expected == float(ours)
    if kind == "iso":  # an integer in EXIF; ExifTool's Canon Composite ISO is unrounded with -n (64.84, prints 65)
        return round(expected) == ours
    if kind == "degrees":
        return abs(expected - float(ours)) <= GPS_TOLERANCE_DEG
    return math.isclose(expected, float(ours), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9)


def _exiftool(*flags: str) -> dict[str, dict[str, Any]]:
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        pytest.skip("exiftool is not installed (Debian/Ubuntu: apt-get install libimage-exiftool-perl)")
    done = subprocess.run(
        [exiftool, "-n", "-j", "-r", *flags, "."], cwd=SAMPLES, capture_output=True, timeout=120, check=False
    )
    records = json.loads(done.stdout.decode("utf-8", errors="replace") or "[]")
    return {str(Path(r["SourceFile"])): r for r in records}


@pytest.fixture(scope="module")
def exiftool_plain() -> dict[str, dict[str, Any]]:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent: real photos are read from ../shared/data, not the repo")
    return _exiftool()


@pytest.fixture(scope="module")
def exiftool_grouped(exiftool_plain: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return _exiftool("-G")


@pytest.fixture(scope="module")
def ours(exiftool_plain: dict[str, dict[str, Any]]) -> dict[str, ImageMetadata | Exception]:
    """Our metadata for every file exiftool read (colours off: they are not compared)."""
    results: dict[str, ImageMetadata | Exception] = {}
    for name in sorted(exiftool_plain):
        try:
            results[name] = extract_metadata((SAMPLES / name).read_bytes(), colors=False)
        except Exception as exc:  # noqa: BLE001 - a crash is a finding to count, not to stop on
            results[name] = exc
    return results


def _grouped_value(record: dict[str, Any], tag: str, groups: tuple[str, ...]) -> Any:
    for group in groups:
        if f"{group}:{tag}" in record:
            return record[f"{group}:{tag}"]
    return None


def _table(title: str, rows: dict[str, tuple[int, int]]) -> str:
    lines = [title, f"{'field':<25}{'exiftool':>9}{'match':>7}{'%':>8}"]
    total = (sum(reported for reported, _ in rows.values()), sum(matched for _, matched in rows.values()))
    for tag, (reported, matched) in {**rows, "all fields": total}.items():
        share = f"{100 * matched / reported:.1f}" if reported else "-"
        lines.append(f"{tag:<25}{reported:>9}{matched:>7}{share:>8}")
    return "\n".join(lines)


def _compare(
    ours: dict[str, ImageMetadata | Exception], fields: dict[str, Field], reference: Callable[[str, str], Any]
) -> tuple[dict[str, tuple[int, int]], list[str]]:
    rows: dict[str, tuple[int, int]] = {}
    misses: list[str] = []
    for tag, field in fields.items():
        reported = matched = 0
        for name, result in ours.items():
            theirs = reference(name, tag)
            if theirs is None or not _normalise_text(theirs) or isinstance(result, Exception):
                continue  # blank strings are "not stated": we report them as None
            reported += 1
            mine = field.ours(result)
            if agree(field.kind, theirs, mine):
                matched += 1
            else:
                misses.append(f"{tag} {name}: exiftool {theirs!r}, ours {mine!r}")
        rows[tag] = (reported, matched)
    return rows, misses


def test_no_file_crashes(ours: dict[str, ImageMetadata | Exception]) -> None:
    crashes = {name: repr(result) for name, result in ours.items() if isinstance(result, Exception)}
    assert not crashes
    assert len(ours) >= 100  # ~101 images; README files are not images and exiftool skips them


def test_standard_tags_agree_with_exiftool(
    ours: dict[str, ImageMetadata | Exception],
    exiftool_plain: dict[str, dict[str, Any]],
    exiftool_grouped: dict[str, dict[str, Any]],
) -> None:
    scoped, scoped_misses = _compare(
        ours, FIELDS, lambda name, tag: _grouped_value(exiftool_grouped[name], tag, FIELDS[tag].groups)
    )
    plain, plain_misses = _compare(ours, FIELDS, lambda name, tag: exiftool_plain[name].get(tag))
    print()
    print(_table("standard tags (asserted)", scoped))
    print("\n".join(scoped_misses))
    print()
    print(_table("exiftool's pick, maker notes included (asserted over all fields)", plain))
    print("\n".join(plain_misses))
    below = {tag: counts for tag, counts in scoped.items() if counts[0] and counts[1] / counts[0] < TARGET}
    assert not below, f"fields under {TARGET:.0%} agreement: {below}\n" + "\n".join(scoped_misses)
    reported, matched = sum(r for r, _ in plain.values()), sum(m for _, m in plain.values())
    assert matched >= TARGET * reported, f"{matched}/{reported} of exiftool's picks\n" + "\n".join(plain_misses)


def test_other_extracted_fields_agree_with_exiftool(
    ours: dict[str, ImageMetadata | Exception], exiftool_grouped: dict[str, dict[str, Any]]
) -> None:
    rows, misses = _compare(
        ours, EXTRA_FIELDS, lambda name, tag: _grouped_value(exiftool_grouped[name], tag, EXTRA_FIELDS[tag].groups)
    )
    print()
    print(_table("other fields we extract (asserted)", rows))
    print("\n".join(misses))
    below = {tag: counts for tag, counts in rows.items() if counts[0] and counts[1] / counts[0] < TARGET}
    assert not below, f"fields under {TARGET:.0%} agreement: {below}\n" + "\n".join(misses)
