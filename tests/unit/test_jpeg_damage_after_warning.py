"""A harmless libjpeg warning no longer hides lost data after it: libjpeg-turbo's strict decode stops at the first
warning of any kind, and after a harmless one (stray bytes between header segments, an unknown JFIF revision or Adobe
colour transform) the file went to Pillow unchecked, so a scan cut short behind it was a 200 with grey pixels and a
phash of grey fill. Bytes left over after coded data anywhere but before the end marker (a damaged restart interval
or progressive scan) are damage too; stray bytes between header segments are not, however many."""

import io
import struct
import time
from itertools import pairwise

import numpy as np
import pytest
import simplejpeg
from PIL import Image

import pipelines.jpeg_markers as jpeg_markers
from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import DecoderName, decode_image, decode_rgb
from pipelines.errors import InvalidImageError
from pipelines.jpeg_markers import START_OF_SCAN, TRUNCATED, decode_jpeg_checked, lost_data
from pipelines.limits import DecodeLimits
from pipelines.metadata.extract import extract_metadata
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit

SPEC = PreprocessSpec()
DECODERS: list[DecoderName] = ["pillow", "opencv"]


def _jpeg(**params: object) -> bytes:
    """A 640x480 photo-like JPEG: gradients plus noise, every block coded."""
    x = np.linspace(0, 255, 640)[None, :].repeat(480, 0)
    y = np.linspace(0, 255, 480)[:, None].repeat(640, 1)
    noise = np.random.default_rng(0).normal(0, 24, (480, 640, 3))
    pixels = np.clip(np.stack([x, y, 255 - (x + y) / 2], axis=2) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **params)
    return buffer.getvalue()


GOOD = _jpeg()


def _libjpeg_warning(data: bytes) -> str:
    with pytest.raises(ValueError) as info:
        simplejpeg.decode_jpeg(data, strict=True)
    return str(info.value)


def _app0_length(data: bytes) -> int:
    assert data[2:4] == b"\xff\xe0"
    return struct.unpack(">H", data[4:6])[0]


def _harmless() -> dict[str, bytes]:
    """GOOD with one defect libjpeg warns of and reads past, losing nothing."""
    dqt, sos, jfif = GOOD.index(b"\xff\xdb"), GOOD.index(b"\xff\xda"), GOOD.index(b"JFIF\x00")
    adobe = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe\x00\x64\x00\x00\x00\x00\x05"  # transform 5: unknown
    return {
        "2 stray bytes before DQT": GOOD[:dqt] + b"\x00\x00" + GOOD[dqt:],
        "20 stray bytes before SOS": GOOD[:sos] + bytes(range(1, 21)) + GOOD[sos:],
        "APP0 length 3 short": GOOD[:4] + struct.pack(">H", _app0_length(GOOD) - 3) + GOOD[6:],
        "JFIF revision 3": GOOD[: jfif + 5] + b"\x03" + GOOD[jfif + 6 :],
        "Adobe transform 5": GOOD[:2] + adobe + GOOD[4 + _app0_length(GOOD) :],
    }


HARMLESS_WARNINGS = {
    "2 stray bytes before DQT": "2 extraneous bytes before marker 0xdb",
    "20 stray bytes before SOS": "20 extraneous bytes before marker 0xda",
    "APP0 length 3 short": "3 extraneous bytes before marker 0xdb",
    "JFIF revision 3": "unknown JFIF revision number 3.01",
    "Adobe transform 5": "Unknown Adobe color transform code 5",
}


def _cut_short(data: bytes) -> bytes:
    """The scan cut 3000 bytes in, an end marker appended (libjpeg: "premature end of data segment")."""
    return data[: data.index(b"\xff\xda") + 3000] + b"\xff\xd9"


@pytest.mark.parametrize("name", sorted(HARMLESS_WARNINGS))
def test_each_defect_is_a_harmless_warning_libjpeg_stops_at_first(name: str) -> None:
    data = _harmless()[name]
    assert HARMLESS_WARNINGS[name] in _libjpeg_warning(data)
    assert HARMLESS_WARNINGS[name] in _libjpeg_warning(_cut_short(data))  # the damage behind it goes unreported
    assert lost_data(_libjpeg_warning(data), data) is None


@pytest.mark.parametrize("name", sorted(HARMLESS_WARNINGS))
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("reduced", [True, False])
def test_damage_behind_a_harmless_warning_is_refused(name: str, decoder: DecoderName, reduced: bool) -> None:
    data = _cut_short(_harmless()[name])
    with pytest.raises(InvalidImageError, match=f"^{TRUNCATED}$") as info:
        decode_image(data, SPEC, decoder=decoder, reduced=reduced, working_max_side=512)
    assert info.value.http_status == 400 and info.value.kind == "invalid_image"


@pytest.mark.parametrize("name", sorted(HARMLESS_WARNINGS))
def test_metadata_computes_no_phash_from_grey_fill_behind_a_harmless_warning(name: str) -> None:
    metadata = extract_metadata(_cut_short(_harmless()[name]))
    assert metadata.file.phash is None
    assert any(TRUNCATED in error for error in metadata.errors), metadata.errors


def test_two_harmless_kinds_in_one_file_are_both_read_past() -> None:
    jfif = _harmless()["JFIF revision 3"]
    dqt = jfif.index(b"\xff\xdb")
    both = jfif[:dqt] + b"\x12\xff\x00\x34" + jfif[dqt:]  # a stuffed pair among the stray bytes too
    assert decode_jpeg_checked(both) is None  # Pillow decodes it
    with pytest.raises(InvalidImageError, match=f"^{TRUNCATED}$"):
        decode_jpeg_checked(_cut_short(both))


@pytest.mark.parametrize("name", sorted(HARMLESS_WARNINGS))
def test_harmless_only_files_still_decode_to_pillows_pixels(name: str) -> None:
    data = _harmless()[name]
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(expected, np.asarray(Image.open(io.BytesIO(GOOD)).convert("RGB")))  # nothing was lost
    for decoder in DECODERS:
        decoded = decode_rgb(data, SPEC, DecodeLimits(), decoder=decoder, reduced=False)
        assert np.array_equal(np.asarray(decoded.rgb), expected), decoder
    assert extract_metadata(data).file.phash == extract_metadata(GOOD).file.phash is not None


def test_a_clean_file_costs_one_decode_a_harmless_one_a_second_at_one_eighth(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    real = simplejpeg.decode_jpeg

    def counting(data: bytes, **params: object) -> np.ndarray:
        calls.append(params)
        return real(data, **params)

    monkeypatch.setattr(jpeg_markers.simplejpeg, "decode_jpeg", counting)
    assert decode_jpeg_checked(GOOD) is not None and len(calls) == 1
    calls.clear()
    assert decode_jpeg_checked(_harmless()["2 stray bytes before DQT"]) is None
    assert len(calls) == 2 and calls[1]["min_factor"] == 8


def test_stray_bytes_before_the_end_marker_stay_accepted() -> None:
    """The webcam quirk (a few bytes) and padding: nothing follows them, nothing to check further."""
    end = GOOD.rindex(b"\xff\xd9")
    for stray in (b"\x00\x00\x00\x00", bytes(16), b"\xff" * 16, b"\x01\x02\x03"):
        decode_jpeg_checked(GOOD[:end] + stray + GOOD[end:])  # no InvalidImageError
    with pytest.raises(InvalidImageError, match="left over"):
        decode_jpeg_checked(GOOD[:end] + bytes(range(1, 17)) + GOOD[end:])


def _after_coded_data(data: bytes, code: int, inserted: bytes) -> bytes:
    """`inserted` before the first `code` marker that ends a scan's coded data (a restart marker: inside it)."""
    if code in range(0xD0, 0xD8):
        position = data.index(bytes([0xFF, code]), data.index(b"\xff\xda"))
    else:
        markers = list(jpeg_markers.jpeg_markers(data))
        position = next(m.position for s, m in pairwise(markers) if s.code == START_OF_SCAN and m.code == code)
    return data[:position] + inserted + data[position:]


def test_bytes_left_over_in_a_restart_interval_or_progressive_scan_are_damage() -> None:
    """A damaged byte in a restart interval or a progressive scan leaves bytes the decoder did not read before the
    next RSTn, or before the next scan's Huffman tables or SOS: the pixels were read wrongly. Measured, 300 random byte
    changes each: in a photo with restart markers 96 such files were accepted (any count before RSTn), in a
    progressive one 36 (before DHT, any count; before SOS, 8 or fewer)."""
    restart = _jpeg(restart_marker_blocks=4)
    progressive = _jpeg(progressive=True)
    damaged = {
        "30 before RST3": (_after_coded_data(restart, 0xD3, bytes(range(1, 31))), "30 bytes of a restart interval"),
        "3 before RST3": (_after_coded_data(restart, 0xD3, b"\x01\x02\x03"), "bytes of a restart interval"),
        "3 before DHT": (_after_coded_data(progressive, 0xC4, b"\x01\x02\x03"), "bytes of a scan were left over"),
        "12 before SOS": (
            _after_coded_data(progressive, START_OF_SCAN, bytes(range(1, 13))),
            "bytes of a scan were left",
        ),
    }
    for name, (data, words) in damaged.items():
        assert "extraneous bytes" in _libjpeg_warning(data), name
        for decoder in DECODERS:
            with pytest.raises(InvalidImageError, match=words):
                decode_image(data, SPEC, decoder=decoder)
    for data in (restart, progressive):
        decode_image(data, SPEC)  # intact: no error


def test_which_stray_bytes_are_between_segments() -> None:
    """The file's markers tell bytes between header segments (harmless, any number) from leftovers after coded data;
    without the file, the marker does: RSTn is inside coded data."""
    stray_before_sos = _harmless()["20 stray bytes before SOS"]
    assert lost_data("Corrupt JPEG data: 20 extraneous bytes before marker 0xda", stray_before_sos) is None
    assert lost_data("Corrupt JPEG data: 20 extraneous bytes before marker 0xda", GOOD) is not None
    assert lost_data("Corrupt JPEG data: 21 extraneous bytes before marker 0xda", stray_before_sos) is not None
    assert "restart interval" in (lost_data("Corrupt JPEG data: 2 extraneous bytes before marker 0xd5") or "")


def test_stray_bytes_behind_a_flood_of_segments_are_refused_without_walking_it() -> None:
    """Telling stray bytes between segments from leftovers walks the markers in Python: a file with more than
    10,000 of them before its stray bytes is refused at once instead (2.5 M empty comments: 3 s a walk)."""
    comments = b"\xff\xfe\x00\x02"
    few = GOOD[:2] + comments * 100 + b"\x00" + GOOD[2:]
    assert decode_jpeg_checked(few) is None  # harmless: Pillow decodes it
    flood = GOOD[:2] + comments * 500_000 + b"\x00" + GOOD[2:]
    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match="left over"):
        decode_jpeg_checked(flood)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("name", sorted(HARMLESS_WARNINGS))
def test_convert_refuses_the_same_files_on_its_fast_and_libvips_paths(name: str) -> None:
    for options in (ConvertOptions(format="png", max_side=64), ConvertOptions(format="webp")):
        assert convert_image(_harmless()[name], options, DecodeLimits()).width == (options.max_side or 640)
        with pytest.raises(InvalidImageError, match=f"^{TRUNCATED}$"):
            convert_image(_cut_short(_harmless()[name]), options, DecodeLimits())


@pytest.mark.parametrize("name", ["JFIF revision 3", "Adobe transform 5"])
def test_a_flood_of_empty_segments_is_not_walked_to_repair_a_header_field(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header repairs (JFIF revision, Adobe transform) look at the markers before the first scan, at most
    `_MAX_MARKERS_SEARCHED` of them: a file of one such warning and ~7.8 M empty COM segments (under the 32 MiB
    limit) cost 5 s of Python per decode check, and 10.7 s per /v1/metadata (found by the review)."""
    flood = b"\xff\xfe\x00\x02" * 200_000
    data = _harmless()[name]
    data = data[:2] + flood + data[2:]
    walked = 0
    markers = jpeg_markers.jpeg_markers

    def counted(blob: bytes):  # type: ignore[no-untyped-def]
        nonlocal walked
        for marker in markers(blob):
            walked += 1
            yield marker

    monkeypatch.setattr(jpeg_markers, "jpeg_markers", counted)
    decode_jpeg_checked(data)  # the flood is harmless stray-segment-wise: Pillow's job, whatever it answers
    assert walked <= 4 * jpeg_markers._MAX_MARKERS_SEARCHED, walked  # was every marker, 200,000+ per walk
