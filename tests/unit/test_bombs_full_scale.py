"""Issue #18's named probes at their full size, against the production limits (JobSettings / DecodeLimits defaults):
an 8 GiB pax header in an ~8 MB tar.gz, a tar.gz of 5 million directory entries, a zip64 whose central directory
lists 2 million entries, a 30 MB GIF of 2 million frames, a progressive JPEG of thousands of scans, and 8 concurrent
100 MP solid-colour PNGs. Each is answered with a 4xx within its time bound and without memory growing past
200 MB. The archives are built with a trick instead of compressing gigabytes: a deflate block of zeros ended with a
full flush is self-contained, so the same bytes repeated N times are the deflate stream of N times the zeros.
"""

import io
import resource
import struct
import tarfile
import threading
import time
import zlib
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.decode import decode_image
from pipelines.errors import ImageTooLargeError, InvalidImageError
from pipelines.jpeg_markers import jpeg_scan_count
from pipelines.preprocess import PreprocessSpec
from serving.config.app_args import AppArgs
from serving.errors import RequestTooLargeError
from serving.http.app import create_http_app
from serving.jobs.archives import ArchiveLimits, read_archive
from serving.jobs.settings import JobSettings
from serving.placement import build_service, compose
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit
MB = 1024 * 1024
_SETTINGS = JobSettings(database_url="sqlite://", object_store="/nonexistent")
LIMITS = ArchiveLimits(  # what serving.jobs.intake.Intake builds from the defaults
    max_entries=_SETTINGS.max_items,
    max_total_bytes=_SETTINGS.max_archive_bytes,
    max_entry_bytes=_SETTINGS.max_image_bytes,
    max_ratio=_SETTINGS.max_compression_ratio,
)


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _bounded(call: Callable[[], object], seconds: float, expect: type[BaseException], match: str) -> float:
    """Run `call`, expecting `expect`; returns the time it took and checks time and peak-memory growth."""
    before, start = _peak_kib(), time.perf_counter()
    with pytest.raises(expect, match=match):
        call()
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert _peak_kib() - before < 200 * 1024, f"peak memory grew {(_peak_kib() - before) / 1024:.0f} MB"
    return elapsed


def _deflate_repeat(prefix: bytes, unit: bytes, repeats: int, crc_of_all: bool = True) -> bytes:
    """gzip of prefix + unit * repeats, made from one compressed unit."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = body.compress(unit) + body.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    if crc_of_all:
        for _ in range(repeats):
            crc = zlib.crc32(unit, crc)
    total = len(prefix) + len(unit) * repeats
    stream = first + block * repeats + b"\x03\x00"  # an empty final fixed-Huffman block ends the stream
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + stream + struct.pack("<II", crc, total & 0xFFFFFFFF)


def test_8_gib_pax_header_in_an_8_mb_tar_gz_is_a_413_in_under_a_second() -> None:
    declared = 8 * 1024**3
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, declared
    archive = _deflate_repeat(info.tobuf(format=tarfile.GNU_FORMAT), bytes(MB), declared // MB)
    assert 6 * MB < len(archive) < 12 * MB, len(archive)
    assert zlib.decompressobj(31).decompress(archive, 4096)[:8] == b"././@Pax"  # a real gzip stream
    _bounded(lambda: list(read_archive(io.BytesIO(archive), LIMITS)), 1.0, RequestTooLargeError, "extension header")


def test_tar_gz_of_5_million_directories_stops_at_the_entry_limit() -> None:
    info = tarfile.TarInfo("d")
    info.type = tarfile.DIRTYPE
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    assert len(header) == 512
    archive = _deflate_repeat(b"", header * 1000, 5000, crc_of_all=False)  # 5,000,000 directory headers
    assert len(archive) < 16 * MB  # ~11 MB: 2.5 GB of headers
    seconds = _bounded(
        lambda: list(read_archive(io.BytesIO(archive), LIMITS)), 15.0, RequestTooLargeError, "more than 100000"
    )
    print(f"\n5M-directory tar.gz ({len(archive) / MB:.1f} MB): 413 after {LIMITS.max_entries} entries, {seconds:.2f}s")


def test_zip64_listing_2_million_entries_is_a_413_before_parsing_its_directory() -> None:
    count = 2_000_000
    name = b"a.jpg"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0)
    directory = (entry + name) * count  # a real 2M-entry central directory (~98 MB)
    start = len(local)
    zip64_end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), start)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, start + len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    archive = io.BytesIO(local + directory + zip64_end + locator + end)
    del directory
    _bounded(lambda: list(read_archive(archive, LIMITS)), 1.0, RequestTooLargeError, "2000000 entries")


def _gif_of_frames(frames: int) -> bytes:
    """A 1x1 GIF with `frames` frames (~15 bytes each)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<4HB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    config = compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("t")))
    with TestClient(create_http_app(build_service(config)), raise_server_exceptions=False) as client:
        yield client


def test_30_mb_gif_of_2_million_frames_is_answered_within_2_seconds(http: TestClient) -> None:
    data = _gif_of_frames(2_000_000)
    assert 28 * MB < len(data) < 32 * MB
    start = time.perf_counter()
    response = http.post("/v1/analyze", content=data, params={"fields": ["metadata", "quality", "classification"]})
    elapsed = time.perf_counter() - start
    assert response.status_code < 500, response.text
    assert elapsed < 2.0, f"{elapsed:.2f}s"
    if response.status_code == 200:
        metadata = response.json()["results"][0]["metadata"]
        assert metadata["image"]["frames"] >= 2, metadata["image"]
        assert any("counting stopped" in e for e in metadata["errors"]), metadata["errors"]  # the cap, said so


def _progressive_scan_bomb(scans: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (120, 130, 140)).save(buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    offsets = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    smallest = min(range(len(offsets) - 1), key=lambda k: offsets[k + 1] - offsets[k])
    scan = data[offsets[smallest] : offsets[smallest + 1]]  # a tiny refinement scan: a pass over every block
    eoi = data.rfind(b"\xff\xd9")
    return data[:eoi] + scan * scans + data[eoi:]


def test_progressive_jpeg_of_thousands_of_scans_is_refused_from_its_markers() -> None:
    bomb = _progressive_scan_bomb(10_000)  # ~330 KB that would take over a minute to decode
    _bounded(lambda: decode_image(bomb, PreprocessSpec()), 0.5, ImageTooLargeError, "more than 166 scans")


def test_scan_count_cannot_be_hidden_from_the_marker_walk() -> None:
    """libjpeg skips junk between segments and reads a COM segment by its length: so does the count."""
    bomb = _progressive_scan_bomb(300)
    assert jpeg_scan_count(bomb) == 310
    junk_in_header = bomb[:2] + b"\x00\x17" + bomb[2:]  # a stray byte pair before the first segment
    com_with_eoi = b"\xff\xfe\x00\x06\xff\xd9\x00\x00"  # a comment holding the bytes of an EOI marker
    sos = bomb.find(b"\xff\xda")
    second = bomb.find(b"\xff\xda", sos + 2)
    eoi_in_comment = bomb[:second] + com_with_eoi + bomb[second:]
    for variant in (junk_in_header, eoi_in_comment):
        assert jpeg_scan_count(variant) == 310
        with pytest.raises((ImageTooLargeError, InvalidImageError)):  # Pillow's own header parse may refuse first
            decode_image(variant, PreprocessSpec())


def _flooded_jpeg(progressive: bool, before_first_scan: bool, flood: bytes) -> bytes:
    """A small JPEG with `flood` before its frame header or between its scans."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 130, 140)).save(buffer, "JPEG", progressive=progressive, quality=80)
    data = buffer.getvalue()
    first_scan = data.find(b"\xff\xda")
    at = data.find(b"\xff\xdb") if before_first_scan else data.find(b"\xff\xda", first_scan + 2)
    return data[:at] + flood + data[at:]


EMPTY_COMMENTS = b"\xff\xfe\x00\x02" * 2_000_000  # 8 MB of empty COM segments
MARKERS_REFUSED = "more than 10,000 marker segments"
SKIPPED_REFUSED = "more than 65,536 bytes between its header segments"


@pytest.mark.parametrize(
    ("progressive", "before_first_scan", "flood", "refused"),
    [
        (False, True, EMPTY_COMMENTS, MARKERS_REFUSED),
        (True, True, EMPTY_COMMENTS, MARKERS_REFUSED),
        (True, False, EMPTY_COMMENTS, MARKERS_REFUSED),
        (False, True, b"\xff" * 8_000_000, SKIPPED_REFUSED),  # fill bytes: Pillow steps over each in Python
        (False, True, b"\xff\x00" * 4_000_000, SKIPPED_REFUSED),  # stray stuffed pairs
        (False, True, b"\x00" * 8_000_000, SKIPPED_REFUSED),  # junk
    ],
    ids=["header", "progressive-header", "between-scans", "fill-bytes", "stray-pairs", "junk"],
)
def test_jpeg_of_millions_of_empty_segments_is_refused_before_they_are_walked(
    progressive: bool, before_first_scan: bool, flood: bytes, refused: str
) -> None:
    """Pillow reads each header segment, and steps over each fill byte, in Python; the scan count walks every marker
    of a progressive file: 2-5 s for 8 MB, 8-18 s for a 32 MiB upload. More than 10,000 markers, or 64 KiB between
    header segments, is no photo: refused at once."""
    jpeg = _flooded_jpeg(progressive, before_first_scan, flood)
    _bounded(lambda: decode_image(jpeg, PreprocessSpec()), 0.5, InvalidImageError, refused)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _solid_png(width: int, height: int, late: bytes = b"") -> bytes:
    """A solid-colour PNG; `late` chunks go between its image data and IEND."""
    chunk = _png_chunk

    row = b"\0" + b"\x80" * (3 * width)
    idat = _deflate_repeat(b"", row * 100, height // 100, crc_of_all=False)[10:-8]  # the raw deflate stream
    zlib_stream = b"\x78\x9c" + idat + struct.pack(">I", 1)  # adler32 left wrong: never reached
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib_stream) + late + chunk(b"IEND", b"")


def _post_8_at_once(http: TestClient, route: str, body: bytes) -> list[httpx.Response]:
    """8 concurrent POSTs of `body`; checks that the process's peak memory grew by less than 200 MB."""
    responses: list[httpx.Response] = []
    before = _peak_kib()
    threads = [threading.Thread(target=lambda: responses.append(http.post(route, content=body))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _peak_kib() - before < 200 * 1024, f"peak memory grew {(_peak_kib() - before) / 1024:.0f} MB"
    return responses


def test_8_concurrent_100_mp_pngs_are_413_with_bounded_memory(http: TestClient) -> None:
    png = _solid_png(10_000, 10_000)
    assert len(png) < 1 * MB
    assert [response.status_code for response in _post_8_at_once(http, "/v1/analyze", png)] == [413] * 8


def test_8_concurrent_100_mp_pngs_answer_their_late_exif_with_bounded_memory(http: TestClient) -> None:
    """Their metadata, header and an eXIf chunk after the image data, without the pixels: Pillow's getexif() would
    decode each whole (~400 MB) to reach that chunk (pipelines.metadata.png_chunks)."""
    exif = Image.Exif()
    exif[0x010F] = "Hasselblad"
    png = _solid_png(10_000, 10_000, late=_png_chunk(b"eXIf", exif.tobytes()))
    responses = _post_8_at_once(http, "/v1/metadata", png)
    assert [response.status_code for response in responses] == [200] * 8, responses[0].text
    for response in responses:
        metadata = response.json()["results"][0]
        assert metadata["exif"]["make"] == "Hasselblad" and metadata["image"]["width"] == 10_000
        assert metadata["colors"] is None and any(e.startswith("pixels: PNG image") for e in metadata["errors"])
