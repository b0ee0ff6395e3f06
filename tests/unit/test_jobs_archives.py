"""Archive intake: entries read into memory with caps; traversal names, links and bombs refused."""

import gzip
import io
import resource
import struct
import tarfile
import time
import zipfile

import pytest

from serving.errors import RequestTooLargeError
from serving.jobs.archives import ArchiveLimits, read_archive, unsafe_name_reason
from serving.jobs.errors import InvalidArchiveError

pytestmark = pytest.mark.unit
LIMITS = ArchiveLimits(max_entries=100, max_total_bytes=10 * 1024 * 1024, max_entry_bytes=2 * 1024 * 1024, max_ratio=50)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize(
    "name", ["../evil.jpg", "a/../../evil.jpg", "/etc/passwd", "\\\\server\\share.jpg", "C:\\x.jpg", "a\\..\\b.jpg", ""]
)
def test_unsafe_names_are_recognised(name: str) -> None:
    assert unsafe_name_reason(name) is not None


@pytest.mark.parametrize("name", ["a.jpg", "dir/b.jpg", "dir/..hidden.jpg", "x..y/z.png"])
def test_plain_relative_names_are_safe(name: str) -> None:
    assert unsafe_name_reason(name) is None


def test_zip_entries_in_order_with_traversal_names_refused_per_entry() -> None:
    archive = _zip({"a.jpg": b"A" * 10, "../../etc/cron.d/x": b"B", "/abs.jpg": b"C", "dir/d.jpg": b"D"})
    entries = list(read_archive(archive, LIMITS))
    assert [e.name for e in entries] == ["a.jpg", "../../etc/cron.d/x", "/abs.jpg", "dir/d.jpg"]
    assert entries[0].data == b"A" * 10 and entries[3].data == b"D"
    for entry in entries[1:3]:
        assert entry.data is None and entry.error is not None and entry.error.kind == "unsafe_entry"


def test_zip_symlink_entry_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = (0o120777 << 16) | 0
        archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    (entry,) = read_archive(buffer, LIMITS)
    assert entry.error is not None and entry.error.kind == "unsafe_entry" and "link" in str(entry.error)


def test_zip_bomb_entry_is_refused_by_ratio_without_inflating() -> None:
    archive = _zip({"bomb.bmp": b"\0" * (2 * 1024 * 1024), "ok.jpg": b"x" * 100})
    entries = list(read_archive(archive, LIMITS))
    assert entries[0].error is not None and entries[0].error.kind == "too_large" and "ratio" in str(entries[0].error)
    assert entries[1].data == b"x" * 100


def test_zip_declaring_more_than_the_total_cap_is_a_413() -> None:
    limits = ArchiveLimits(max_entries=100, max_total_bytes=1000, max_entry_bytes=800, max_ratio=1000)
    archive = _zip({f"{i}.jpg": bytes(range(256)) * 2 for i in range(3)})
    with pytest.raises(RequestTooLargeError):
        list(read_archive(archive, limits))


def test_too_many_entries_is_a_413() -> None:
    limits = ArchiveLimits(max_entries=3, max_total_bytes=10**6, max_entry_bytes=10**6, max_ratio=1000)
    with pytest.raises(RequestTooLargeError):
        list(read_archive(_zip({f"{i}.jpg": b"x" for i in range(4)}), limits))


def test_oversized_entry_is_an_item_error() -> None:
    limits = ArchiveLimits(max_entries=10, max_total_bytes=10**6, max_entry_bytes=100, max_ratio=1000)
    entries = list(read_archive(_zip({"big.jpg": bytes(range(256)), "small.jpg": b"s"}, zipfile.ZIP_STORED), limits))
    assert entries[0].error is not None and entries[0].error.kind == "too_large"
    assert entries[1].data == b"s"


def test_corrupt_zip_entry_is_an_item_error() -> None:
    archive = _zip({"a.jpg": b"hello world" * 100, "b.jpg": b"fine"}, zipfile.ZIP_STORED)
    raw = bytearray(archive.getvalue())
    at = raw.find(b"hello world")
    raw[at : at + 5] = b"HELLO"  # stored data no longer matches its CRC
    entries = list(read_archive(io.BytesIO(bytes(raw)), LIMITS))
    assert entries[0].error is not None and entries[0].error.kind == "corrupt_entry"
    assert entries[1].data == b"fine"


def test_not_an_archive_is_a_400() -> None:
    with pytest.raises(InvalidArchiveError):
        list(read_archive(io.BytesIO(b"this is not an archive at all" * 50), LIMITS))


def test_tar_links_devices_and_traversal_are_refused() -> None:
    symlink = tarfile.TarInfo("link.jpg")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("hard.jpg")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "a.jpg"
    device = tarfile.TarInfo("dev.jpg")
    device.type = tarfile.CHRTYPE
    archive = _tar(
        [_file("a.jpg", b"AAA"), (symlink, None), (hardlink, None), (device, None), _file("../../x.jpg", b"X")]
    )
    entries = list(read_archive(archive, LIMITS))
    assert entries[0].data == b"AAA"
    assert [e.error.kind for e in entries[1:] if e.error] == ["unsafe_entry"] * 4


def test_gzip_tar_bomb_is_a_413() -> None:
    limits = ArchiveLimits(max_entries=100, max_total_bytes=10**9, max_entry_bytes=8 * 1024 * 1024, max_ratio=50)
    archive = _tar([_file(f"{i}.bmp", b"\0" * (4 * 1024 * 1024)) for i in range(4)], mode="w:gz")
    with pytest.raises(RequestTooLargeError, match="ratio"):
        list(read_archive(archive, limits))


def test_gzip_tar_of_images_reads_back() -> None:
    data = {f"img{i}.jpg": bytes([i]) * 1000 for i in range(5)}
    archive = _tar([_file(name, payload) for name, payload in data.items()], mode="w:gz")
    entries = list(read_archive(archive, LIMITS))
    assert {e.name: e.data for e in entries} == data


# Issue #18's archive probes: parsing itself is bounded, not only what is read.


def _gzip_zeros_after(header: bytes, zeros: int) -> io.BytesIO:
    """A .tar.gz whose first header is `header`, followed by `zeros` zero bytes, compressed as they stream."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as stream:
        stream.write(header)
        chunk = b"\0" * (1024 * 1024)
        for _ in range(zeros // len(chunk)):
            stream.write(chunk)
    out.seek(0)
    return out


def test_huge_pax_header_is_a_413_without_reading_it() -> None:
    declared = 512 * 1024 * 1024  # tarfile would read all of it into one bytes object
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, declared
    archive = _gzip_zeros_after(info.tobuf(format=tarfile.GNU_FORMAT), declared)
    assert len(archive.getvalue()) < 4 * 1024 * 1024  # a small upload
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(RequestTooLargeError, match="extension header"):
        list(read_archive(archive, LIMITS))
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_tar_directories_count_as_entries() -> None:
    limits = ArchiveLimits(max_entries=50, max_total_bytes=10**6, max_entry_bytes=10**6, max_ratio=1000)
    dirs = []
    for i in range(60):
        info = tarfile.TarInfo(f"d{i}")
        info.type = tarfile.DIRTYPE
        dirs.append((info, None))
    with pytest.raises(RequestTooLargeError, match="more than 50 entries"):
        list(read_archive(_tar(dirs), limits))


def test_zip_end_record_claiming_two_million_entries_is_a_413_before_parsing() -> None:
    # only an end-of-central-directory record: ZipFile would try to parse a 92 MB directory that is not there
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 92_000_000, 0, 0)
    archive = io.BytesIO(b"PK\x03\x04" + b"\0" * 100 + end)
    with pytest.raises(RequestTooLargeError, match="entries"):
        list(read_archive(archive, LIMITS))


def test_many_small_entries_cannot_add_up_to_a_bomb() -> None:
    limits = ArchiveLimits(max_entries=1000, max_total_bytes=10**9, max_entry_bytes=2 * 1024 * 1024, max_ratio=50)
    entries = {f"e{i}.bmp": b"\0" * (512 * 1024) for i in range(8)}  # each under the per-entry ratio check
    with pytest.raises(RequestTooLargeError, match="small entries"):
        list(read_archive(_zip(entries), limits))


def test_a_tar_entry_name_that_is_not_utf8_is_read_with_a_replacement_character() -> None:
    """Latin-1 names, as older tar tools write them: the name used to keep a lone surrogate, which the job store
    cannot encode (POST /v1/batch answered 500 after storing the entry)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as archive:
        info = tarfile.TarInfo("photos/caf\u00e9.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    buffer.seek(0)
    [entry] = list(read_archive(buffer, LIMITS))
    assert entry.name == "photos/caf\ufffd.jpg" and entry.data == b"abc"
    entry.name.encode("utf-8")  # no surrogate left
