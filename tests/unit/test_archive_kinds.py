"""Which kind an archive is, and zip bombs that only a whole-archive view catches.

A plain tar whose last member is a zip (.zip, .docx, .jar, .epub: all zips) ends with that zip's end record;
`zipfile.is_zipfile` found it and the whole tar was read as that one member, its photos dropped without a trace. A zip
whose central directory lists one deflated entry many times passed the per-entry ratio while the archive as a whole
expanded ~1400x; and each archive's own cap was the only bound, however many archives a request held.
"""

import io
import struct
import tarfile
import zipfile

import pytest

from serving.errors import RequestTooLargeError
from serving.jobs.archives import ArchiveLimits, ExpansionBudget, read_archive
from serving.jobs.errors import InvalidArchiveError

pytestmark = pytest.mark.unit
MiB = 1024 * 1024
LIMITS = ArchiveLimits(max_entries=1000, max_total_bytes=64 * MiB, max_entry_bytes=4 * MiB, max_ratio=100)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(entries: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _names(data: bytes, limits: ArchiveLimits = LIMITS) -> list[str]:
    return [entry.name for entry in read_archive(io.BytesIO(data), limits)]


PHOTOS = {f"photos/{i}.jpg": b"\xff\xd8jpeg %d" % i for i in range(5)}
INNER_ZIP = _zip({"readme.txt": b"hello"}, zipfile.ZIP_STORED)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_a_tar_whose_last_member_is_a_zip_is_read_as_a_tar(mode: str) -> None:
    archive = _tar({**PHOTOS, "photos/extras.docx": INNER_ZIP}, mode)
    assert _names(archive) == [*PHOTOS, "photos/extras.docx"]


def test_a_zip_whose_last_member_is_a_tar_is_read_as_a_zip() -> None:
    archive = _zip({**PHOTOS, "photos/more.tar": _tar({"inner/x.jpg": b"x"})}, zipfile.ZIP_STORED)
    assert _names(archive) == [*PHOTOS, "photos/more.tar"]


def test_data_before_a_zip_is_a_400_not_the_zip_alone() -> None:
    """Two zips put together (or a tar-like header before one): ZipFile would read only the last."""
    with pytest.raises(InvalidArchiveError, match="data before"):
        _names(_zip({"a.jpg": b"a"}) + _zip({"b.jpg": b"b"}))


def _overlapping_zip(copies: int) -> bytes:
    """One deflated 8 MiB entry (ratio ~90, under the cap) that the central directory lists `copies` times."""
    payload = bytearray(8 * MiB)
    for i in range(0, len(payload), 330):
        payload[i] = 1 + i % 251
    raw = _zip({"a.jpg": bytes(payload)})
    end = raw.rfind(b"PK\x05\x06")
    *_, directory_bytes, directory_at, _ = struct.unpack("<4sHHHHIIH", raw[end : end + 22])
    directory = raw[directory_at : directory_at + directory_bytes]
    record = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, copies, copies, directory_bytes * copies, directory_at, 0)
    return raw[:directory_at] + directory * copies + record


def test_a_zip_listing_one_entry_many_times_is_a_413_before_inflating() -> None:
    limits = ArchiveLimits(max_entries=1000, max_total_bytes=1024 * MiB, max_entry_bytes=8 * MiB, max_ratio=100)
    assert len(_names(_overlapping_zip(1), limits)) == 1  # the entry alone is within every cap
    with pytest.raises(RequestTooLargeError, match="overlaps"):
        read_archive(io.BytesIO(_overlapping_zip(16)), limits).__next__()


def test_a_zip_declaring_more_compressed_bytes_than_it_holds_is_a_413() -> None:
    """A compressed size forged in the central directory passes the entry's own ratio; the whole file cannot."""
    limits = ArchiveLimits(max_entries=1000, max_total_bytes=1024 * MiB, max_entry_bytes=8 * MiB, max_ratio=20)
    raw = bytearray(_zip({"a.bin": bytes(4 * MiB)}))  # ~4 KB deflated: the entry alone is a refused bomb
    (entry,) = read_archive(io.BytesIO(bytes(raw)), limits)
    assert entry.error is not None and entry.error.kind == "too_large"
    at = raw.rfind(b"PK\x01\x02")
    raw[at + 20 : at + 24] = struct.pack("<I", 1 * MiB)  # "1 MiB compressed": ratio 4
    with pytest.raises(RequestTooLargeError, match="ratio"):
        list(read_archive(io.BytesIO(bytes(raw)), limits))


def test_a_request_is_capped_across_its_archives() -> None:
    expansion = ExpansionBudget(5 * MiB)
    first = _zip({"a.bin": bytes(3 * MiB)}, zipfile.ZIP_STORED)
    assert [e.name for e in read_archive(io.BytesIO(first), LIMITS, expansion)] == ["a.bin"]
    with pytest.raises(RequestTooLargeError, match="per request"):
        list(read_archive(io.BytesIO(first), LIMITS, expansion))  # 6 MiB together
    with pytest.raises(RequestTooLargeError, match="per request"):
        list(read_archive(io.BytesIO(_tar({"t.bin": bytes(3 * MiB)})), LIMITS, ExpansionBudget(2 * MiB)))
