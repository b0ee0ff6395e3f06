"""Camera facts from maker notes, Canon CIFF, Olympus APP12 and XMP when standard EXIF lacks them.

The byte layouts are built here from the vendors' formats (as ExifTool documents them); the agreement with
ExifTool on real files is tests/integration/test_exiftool_agreement.py.
"""

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.metadata import extract_metadata
from pipelines.metadata.legacy_blocks import read_ciff, read_legacy_blocks, read_picture_info
from pipelines.metadata.makernotes import read_maker_note
from pipelines.metadata.xmp import parse_xmp

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "exif-samples"


def _ifd(entries: list[tuple[int, int, int, bytes]], at: int, endian: str = "<") -> bytes:
    """An IFD placed at offset `at`: entries (tag, type, count, value bytes); long values follow the IFD."""
    data_at = at + 2 + 12 * len(entries) + 4
    head, tail = struct.pack(endian + "H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            head += struct.pack(endian + "HHL", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            head += struct.pack(endian + "HHLL", tag, kind, count, data_at + len(tail))
            tail += value
    return head + struct.pack(endian + "L", 0) + tail


def _shorts(values: list[int]) -> tuple[int, int, int, bytes]:
    return 0, 3, len(values), struct.pack(f"<{len(values)}H", *values)


def _exif_with_note(note_at_offset: Callable[[int], bytes], footer_shift: int = 0) -> bytes:
    """'Exif\\0\\0' + a little-endian TIFF: IFD0 -> Exif IFD -> MakerNote built by `note_at_offset(offset)`."""
    ifd0 = _ifd([(0x8769, 4, 1, struct.pack("<L", 26))], 8)  # 8 + 18 = 26
    note_offset = 26 + 18
    note = note_at_offset(note_offset + footer_shift)
    if footer_shift:  # the note was written at another offset, then moved by an editor: its footer says where
        note += b"II*\x00" + struct.pack("<L", note_offset + footer_shift)
    exif_ifd = _ifd([(0x927C, 7, len(note), note)], 26)
    return b"Exif\x00\x00II*\x00" + struct.pack("<L", 8) + ifd0 + exif_ifd[:18] + note


def _canon_note(camera_iso: int, auto_iso: int, base_iso: int) -> Callable[[int], bytes]:
    def build(offset: int) -> bytes:
        settings = [92] + [0] * 45
        settings[16] = camera_iso
        shot = [68] + [0] * 33
        shot[1], shot[2] = auto_iso, base_iso
        tag1, tag4 = _shorts(settings), _shorts(shot)
        return _ifd([(0x0001, *tag1[1:]), (0x0004, *tag4[1:])], offset)

    return build


def test_canon_iso_from_camera_settings_or_base_times_auto() -> None:
    assert read_maker_note(_exif_with_note(_canon_note(17, 0, 0)), "Canon") == ({"iso": 100}, "canon_makernote")
    assert read_maker_note(_exif_with_note(_canon_note(0x4000 | 320, 0, 0)), "Canon")[0] == {"iso": 320}
    # CameraISO "Auto" (15): ExifTool's Composite ISO = BaseISO * AutoISO / 100 from their APEX-like codes.
    assert read_maker_note(_exif_with_note(_canon_note(15, 0, 128)), "Canon")[0] == {"iso": 50}
    assert read_maker_note(_exif_with_note(_canon_note(15, 32, 128)), "Canon")[0] == {"iso": 100}
    assert read_maker_note(_exif_with_note(_canon_note(15, 0, 140)), "Canon")[0] == {"iso": 65}  # 64.84
    assert read_maker_note(_exif_with_note(_canon_note(15, 0, 0)), "Canon")[0] == {}  # BaseISO 0: unknown


def test_canon_note_moved_by_an_editor_is_read_through_its_footer() -> None:
    for shift in (54, -20):
        block = _exif_with_note(_canon_note(15, 0, 128), footer_shift=shift)
        assert read_maker_note(block, "Canon")[0] == {"iso": 50}


def test_notes_of_other_makes_or_without_a_note_give_nothing() -> None:
    block = _exif_with_note(_canon_note(17, 0, 0))
    assert read_maker_note(block, "NIKON CORPORATION") == ({}, None)
    assert read_maker_note(block, None) == ({}, None)
    assert read_maker_note(b"Exif\x00\x00II*\x00" + struct.pack("<L", 8) + _ifd([], 8), "Canon") == ({}, None)
    assert read_maker_note(b"not a tiff", "Canon") == ({}, None)


def _ciff_heap(records: list[tuple[int, bytes]], endian: str = "<") -> bytes:
    """A CIFF heap: values, then the table (count + 10-byte records), then the table's offset."""
    values, table = b"", b""
    for tag, value in records:
        if tag & 0xC000 == 0x4000:
            table += struct.pack(endian + "H", tag) + value.ljust(8, b"\x00")
        else:
            table += struct.pack(endian + "HLL", tag, len(value), len(values))
            values += value
    return values + struct.pack(endian + "H", len(records)) + table + struct.pack(endian + "L", len(values))


def _ciff_segment(heap: bytes) -> bytes:
    return b"II" + struct.pack("<L", 26) + b"HEAPJPGM" + bytes(12) + heap


def test_ciff_make_model_time_and_focal_length_from_nested_heaps() -> None:
    camera = _ciff_heap([(0x080A, b"Canon\x00Canon PowerShot A5\x00\x00\x00")])
    exif_info = _ciff_heap([(0x5029, struct.pack("<4H", 1, 5, 199, 146))])
    root = _ciff_heap([(0x180E, struct.pack("<3L", 972687386, 0, 0)), (0x2807, camera), (0x300B, exif_info)])
    assert read_ciff(_ciff_segment(root)) == {
        "make": "Canon",
        "model": "Canon PowerShot A5",
        "datetime_original": "2000-10-27T22:56:26",
        "focal_length_mm": 5.0,
    }
    assert read_legacy_blocks([("APP0", b"JFIF\x00\x01\x02"), ("APP0", _ciff_segment(root))])[1] == "canon_ciff"


def test_hostile_ciff_gives_no_facts_and_no_exception() -> None:
    root = _ciff_heap([(0x080A, b"Canon\x00Model\x00")])
    segment = _ciff_segment(root)
    assert read_ciff(segment[:-3]) == {}  # truncated: the table offset is garbage
    assert read_ciff(segment[:20]) == {}
    # A subdirectory that is its own heap: the walk stops at its depth limit.
    looping = struct.pack("<H", 1) + struct.pack("<HLL", 0x2807, 16, 0) + struct.pack("<L", 0)
    assert read_ciff(_ciff_segment(looping)) == {}
    rng = random.Random(7)
    for _ in range(300):
        mutated = bytearray(segment)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(14, len(mutated))] = rng.randrange(256)
        facts = read_ciff(bytes(mutated))
        assert set(facts) <= {"make", "model", "datetime_original", "focal_length_mm"}


def test_olympus_picture_info_text() -> None:
    segment = b"OLYMPUS OPTICAL CO.,LTD.\x00 713\r\n[picture info]\r\n"
    segment += b"TimeDate=909698819\r\nShutter=33363\r\nFNumber=F2.8\r\n"
    assert read_picture_info(segment) == {
        "datetime_original": "1998-10-29T22:06:59",
        "exposure_time_s": 0.033363,
        "f_number": 2.8,
    }
    assert read_picture_info(b"[picture info]\r\nTimeDate=x\r\nShutter=-1\r\nFNumber=Fx\r\n") == {}
    assert read_picture_info(b"Ducky\x00\x01") == {}


def test_xmp_capture_time_keeps_its_offset() -> None:
    packet = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:DateTimeOriginal="2013-07-05T03:18:27Z"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    info, errors = parse_xmp(packet)
    assert info is not None and info.datetime_original == "2013-07-05T03:18:27+00:00" and not errors
    info, errors = parse_xmp(packet.replace(b"2013-07-05T03:18:27Z", b"2013-07-05"))
    assert info is None and not errors  # a date without a time of day is not a capture time


EXPECTED_SOURCES = {
    "jpg/exif-org/sony-powershota5.jpg": {"make": "canon_ciff", "model": "canon_ciff"},
    "jpg/exif-org/olympus-d320l.jpg": {"f_number": "olympus_picture_info"},
    "jpg/exif-org/canon-ixus.jpg": {"iso": "canon_makernote"},
    "jpg/tests/28-hex_value.jpg": {"iso": "canon_makernote"},  # a moved note, in the other byte order
    "jpg/tests/35-empty.jpg": {"iso": "casio_makernote"},
    "jpg/tests/42_IndexError.jpg": {"lens_model": "olympus_makernote"},
    "jpg/Reconyx_HC500_Hyperfire.jpg": {"datetime_original": "reconyx_makernote"},
    "jpg/tests/30-type_error.jpg": {"datetime_original": "xmp"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SOURCES))
def test_real_files_name_where_each_fact_came_from(name: str) -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent: real photos are read from ../shared/data, not the repo")
    meta = extract_metadata((SAMPLES / name).read_bytes(), colors=False)
    assert meta.exif is not None
    assert EXPECTED_SOURCES[name].items() <= meta.exif.sources.items()
    assert not [e for e in meta.errors if e.startswith("camera_facts")]


def test_standard_exif_wins_and_mutated_maker_notes_never_raise() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent: real photos are read from ../shared/data, not the repo")
    meta = extract_metadata((SAMPLES / "jpg/exif-org/kodak-dc240.jpg").read_bytes(), colors=False)
    assert meta.exif is not None and meta.exif.exposure_time_s == pytest.approx(1 / 30)  # not Kodak's 1/32.1
    assert "exposure_time_s" not in meta.exif.sources
    data = (SAMPLES / "jpg/tests/22-canon_tags.jpg").read_bytes()
    note = data.find(b"II*\x00\xa6\x02\x00\x00")  # the Canon footer: mutate the note just before it
    assert note > 1100
    rng = random.Random(11)
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(note - 1100, note + 8)] = rng.randrange(256)
        result = extract_metadata(bytes(mutated), colors=False)
        assert result.exif is None or result.exif.iso is None or 0 <= result.exif.iso < 10_000_000
