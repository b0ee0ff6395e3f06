"""Metadata values every consumer can hold: implausible EXIF numbers, overlong dates, NaN/infinity and control
characters are dropped or cleaned at extraction (pipelines.metadata.plausible), and what is printed or answered from
a collection stays safe."""

import argparse
import io
import json
import struct
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from pipelines.collections.record import ImageRecord
from pipelines.metadata import ImageMetadata, extract_metadata
from pipelines.metadata.legacy_blocks import read_picture_info
from pipelines.metadata.result import ExifInfo, FileInfo, XmpInfo
from pipelines.metadata.xmp import parse_xmp, xmp_datetime
from serving.cli_collections import _cmd_report
from serving.collections.export import jsonl_lines
from serving.collections.filters import ImageFilter
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import open_job_database
from serving.jobs.serialize import to_jsonable

pytestmark = pytest.mark.unit

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b]8;;http://evil.example/\x07Canon\x1b]8;;\x07"


def _jpeg(exif: Image.Exif | None = None, xmp: bytes | None = None, app12: bytes | None = None) -> bytes:
    out = io.BytesIO()
    params: dict[str, object] = {}
    if exif is not None:
        params["exif"] = exif
    if xmp is not None:
        params["xmp"] = xmp
    Image.new("RGB", (16, 12), "gray").save(out, "JPEG", **params)
    data = out.getvalue()
    if app12 is not None:
        data = data[:2] + b"\xff\xec" + struct.pack(">H", len(app12) + 2) + app12 + data[2:]
    return data


def _camera(make: str = "Cam", **exif_ifd: object) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[ExifTags.IFD.Exif] = {int(tag, 16): value for tag, value in exif_ifd.items()}
    return exif


def _xmp(attributes: str) -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        + attributes.encode()
        + b"/></rdf:RDF></x:xmpmeta>"
    )


def _json_strict(value: object) -> str:
    return json.dumps(value, allow_nan=False)  # raises on NaN / Infinity, as Starlette's JSONResponse does


@pytest.mark.parametrize("iso", [4_000_000_000, 1e30, 10_000_001])
def test_an_implausible_iso_is_dropped_with_a_message_and_the_rest_kept(iso: float) -> None:
    meta = extract_metadata(_jpeg(_camera(**{"0x8827": iso, "0x9003": "2024:05:01 23:30:00"})))
    assert meta.exif is not None and meta.exif.iso is None
    assert meta.exif.make == "Cam" and meta.exif.datetime_original == "2024-05-01T23:30:00"
    assert any(error.startswith("exif.iso:") for error in meta.errors)


def test_a_plausible_iso_is_kept() -> None:
    meta = extract_metadata(_jpeg(_camera(**{"0x8827": 3_200})))
    assert meta.exif is not None and meta.exif.iso == 3_200 and meta.errors == ()


def test_sub_seconds_longer_than_nanoseconds_are_left_out_of_the_capture_time() -> None:
    meta = extract_metadata(_jpeg(_camera(**{"0x9003": "2024:05:01 23:30:00", "0x9291": "1" * 60})))
    assert meta.exif is not None and meta.exif.datetime_original == "2024-05-01T23:30:00"
    assert any("sub-seconds of 60 digits" in error for error in meta.errors)
    kept = extract_metadata(
        _jpeg(_camera(**{"0x9003": "2024:05:01 23:30:00", "0x9291": "123456789", "0x9011": "+05:30"}))
    )
    assert kept.exif is not None and kept.exif.datetime_original == "2024-05-01T23:30:00.123456789+05:30"
    assert len(kept.exif.datetime_original) <= 35  # plausible.MAX_DATETIME_CHARS, within VARCHAR(40)


def test_an_xmp_offset_with_seconds_is_refused() -> None:
    taken, error = xmp_datetime("2024-05-01T10:00:00.123456+05:30:15.123456")
    assert taken is None and error is not None and "whole minutes" in error
    assert xmp_datetime("2024-05-01T10:00:00.123456-05:30") == ("2024-05-01T10:00:00.123456-05:30", None)
    assert xmp_datetime("2024-05-01T10:00:00Z") == ("2024-05-01T10:00:00+00:00", None)


@pytest.mark.parametrize("rating", ["NaN", "Infinity", "-inf", "1e999"])
def test_a_non_finite_xmp_rating_is_dropped(rating: str) -> None:
    info, errors = parse_xmp(_xmp(f'xmp:Rating="{rating}" xmp:Label="Red"'))
    assert info is not None and info.rating is None and info.label == "Red"
    assert any(error.startswith("xmp.rating: not a finite number") for error in errors)
    meta = extract_metadata(_jpeg(xmp=_xmp(f'xmp:Rating="{rating}" xmp:Label="Red"')))
    _json_strict(to_jsonable(meta.to_dict()))


def test_an_infinite_olympus_aperture_is_not_a_fact() -> None:
    assert read_picture_info(b"[picture info]\r\nShutter=10000\r\nFNumber=inf\r\n") == {"exposure_time_s": 0.01}
    assert "f_number" not in read_picture_info(b"[picture info]\r\nFNumber=nan\r\n")
    payload = b"[picture info]\r\nTimeDate=1100000000\r\nShutter=10000\r\nFNumber=inf\r\n"
    meta = extract_metadata(_jpeg(_camera("OLYMPUS", **{"0x8827": 100}), app12=payload))
    assert meta.exif is not None and meta.exif.f_number is None and meta.exif.exposure_time_s == 0.01
    _json_strict(to_jsonable(meta.to_dict()))


def test_non_finite_values_from_any_block_are_dropped_at_the_end() -> None:
    raw = ImageMetadata(
        FileInfo(1, "0" * 64),
        exif=ExifInfo(f_number=float("inf"), iso=5 * 10**9, sources={"iso": "casio_makernote"}),
        xmp=XmpInfo(rating=float("nan"), keywords=("a", "\x1b", "b\x07c"), description="one\r\ntwo\tthree\x1b"),
    )
    from pipelines.metadata.plausible import plausible_metadata

    meta = plausible_metadata(raw)
    assert meta.exif == ExifInfo()  # and the ISO's source went with it
    assert meta.xmp == XmpInfo(keywords=("a", "bc"), description="one\r\ntwo\tthree")  # whitespace is kept
    assert [error.split(":")[0] for error in meta.errors] == ["exif.f_number", "xmp.rating", "exif.iso"]


def test_control_characters_are_removed_from_metadata_text() -> None:
    meta = extract_metadata(_jpeg(_camera(ESCAPES), xmp=_xmp('xmp:Label="a\u009bb"')))
    assert meta.exif is not None and meta.exif.make == "]0;owned[2J]8;;http://evil.example/Canon]8;;"
    assert meta.xmp is not None and meta.xmp.label == "ab"


def test_the_cli_prints_insights_without_terminal_escapes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from serving.spreadsheet import terminal_text

    assert terminal_text("a\x1b[2J\x07b\u202ec caf\u00e9") == "a\\x1b[2J\\x07b\\u202ec caf\u00e9"
    url = f"sqlite:///{tmp_path}/jobs.sqlite"
    store = CollectionStore(open_job_database(url))
    info = store.open("cards", ["quality", "metadata"], ["/x"])
    records = []
    for i in range(40):  # a stored Make with escapes (stored before they were removed at extraction)
        blurry = ("blurry",) if i < 30 else ()
        records.append(
            ImageRecord(f"e{i}", sha256=f"e{i}", make=ESCAPES + "\x9b", model="X1", quality_level="LOW", tags=blurry)
        )
        records.append(ImageRecord(f"o{i}", sha256=f"o{i}", make="Nikon", model="D1", quality_level="LOW"))
    store.add(info.id, [RecordedImage(record, {}, "/x") for record in records])
    store.finish(info.id)
    args = argparse.Namespace(database_url=url, tenant="default", collection="cards", json=str(tmp_path / "r.json"))
    args.out = None
    assert _cmd_report(args) == 0
    printed = capsys.readouterr().err
    assert "Canon" in printed and not any(c in printed for c in "\x1b\x07\x9b")


def test_a_stored_non_finite_value_is_exported_as_strict_json(tmp_path: Path) -> None:
    store = CollectionStore(open_job_database(f"sqlite:///{tmp_path}/jobs.sqlite"))
    info = store.open("cards", ["metadata"], ["/x"])
    document = {"metadata": {"xmp": {"rating": float("nan")}, "exif": {"f_number": float("inf")}}}
    store.add(info.id, [RecordedImage(ImageRecord("a.jpg", f_number=float("inf")), document, "/x/a.jpg")])
    line = json.loads("".join(jsonl_lines(store, info.id, ImageFilter())), parse_constant=_refuse)
    assert line["f_number"] is None and line["analysis"]["metadata"]["xmp"]["rating"] is None


def _refuse(token: str) -> None:
    raise ValueError(f"non-standard JSON token {token}")


def _gps_meta(latitude: tuple, longitude: tuple) -> ImageMetadata:
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        1: "N",
        2: tuple(IFDRational(*part) for part in latitude),
        3: "E",
        4: tuple(IFDRational(*part) for part in longitude),
    }
    return extract_metadata(_jpeg(exif))


def test_an_undefined_gps_seconds_part_counts_as_zero_as_exiftool_reads_it() -> None:
    meta = _gps_meta(((48, 1), (51, 1), (0, 0)), ((2, 1), (21, 1), (0, 0)))
    assert meta.gps is not None
    assert (meta.gps.latitude_deg, meta.gps.longitude_deg) == (pytest.approx(48.85), pytest.approx(2.35))
    assert "gps.latitude_deg: seconds 0/0 (undefined) read as 0" in meta.errors
    minutes_unset = _gps_meta(((48, 1), (0, 0)), ((2, 1), (21, 1), (30, 1)))
    assert minutes_unset.gps is not None and minutes_unset.gps.latitude_deg == pytest.approx(48.0)


def test_undefined_degrees_or_an_infinite_part_stay_unreadable() -> None:
    meta = _gps_meta(((0, 0), (51, 1), (0, 1)), ((2, 1), (21, 1), (5, 0)))
    assert meta.gps is None or (meta.gps.latitude_deg, meta.gps.longitude_deg) == (None, None)
    assert sum("unreadable value" in error for error in meta.errors) == 2


def test_gps_minutes_of_60_or_more_are_summed_with_a_note() -> None:
    meta = _gps_meta(((48, 1), (75, 1), (0, 1)), ((2, 1), (21, 1), (0, 1)))
    assert meta.gps is not None and meta.gps.latitude_deg == pytest.approx(49.25)
    assert any(error.startswith("gps.latitude_deg: minutes 75 is not below 60") for error in meta.errors)
