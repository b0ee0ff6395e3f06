"""Safe reading of zip and tar archives into memory, one entry at a time; nothing is extracted to disk.

Entry names are only labels (inputs are stored by hash), but unsafe ones — absolute, `..`, drive letters,
links, devices — are still reported as failed items so a hostile archive is visible in the results.
Zip bombs are stopped by caps on entry count, bytes per entry, total uncompressed bytes and the
compression ratio; the caps are checked on declared sizes first and again on bytes actually read.
"""

import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from serving.errors import RequestTooLargeError
from serving.jobs.errors import InvalidArchiveError, ItemInputError

RATIO_CHECK_BYTES = 1024 * 1024  # tiny entries may compress well legitimately; bombs are big by definition
_DRIVE = re.compile(r"^[A-Za-z]:")
_SYMLINK_MODE = 0o120000


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_total_bytes: int
    max_entry_bytes: int
    max_ratio: float


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of an archive: its bytes, or why it was not read."""

    name: str
    data: bytes | None = None
    error: ItemInputError | None = None


def unsafe_name_reason(name: str) -> str | None:
    """Why an entry name would escape an extraction folder (None when it is a plain relative path)."""
    if not name or "\x00" in name:
        return "empty name or NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' path component"
    return None


def is_zip(fileobj: BinaryIO) -> bool:
    fileobj.seek(0)
    result = zipfile.is_zipfile(fileobj)
    fileobj.seek(0)
    return result


class _Budget:
    """Running totals of one archive against its limits (413 for the whole request when exceeded)."""

    def __init__(self, limits: ArchiveLimits):
        self.limits, self.entries, self.bytes = limits, 0, 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise RequestTooLargeError(f"archive has more than {self.limits.max_entries} entries")

    def spend(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_total_bytes:
            raise RequestTooLargeError(
                f"archive expands to more than {self.limits.max_total_bytes} bytes (limit of uncompressed input)"
            )


def _unsafe(name: str, reason: str) -> ArchiveEntry:
    return ArchiveEntry(name, error=ItemInputError("unsafe_entry", f"archive entry {name!r} refused: {reason}"))


def _too_large(name: str, why: str) -> ArchiveEntry:
    return ArchiveEntry(name, error=ItemInputError("too_large", f"archive entry {name!r} refused: {why}"))


def _zip_entries(fileobj: BinaryIO, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArchiveError(f"damaged zip archive: {exc}") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
        budget = _Budget(limits)
        if len(infos) > limits.max_entries:
            raise RequestTooLargeError(f"archive has {len(infos)} entries; the limit is {limits.max_entries}")
        if sum(i.file_size for i in infos) > limits.max_total_bytes:
            raise RequestTooLargeError(f"archive declares more than {limits.max_total_bytes} uncompressed bytes")
        for info in infos:
            budget.entry()
            yield _zip_entry(archive, info, limits, budget)


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits, budget: _Budget) -> ArchiveEntry:
    name = info.filename
    reason = unsafe_name_reason(name)
    if reason:
        return _unsafe(name, reason)
    if (info.external_attr >> 16) & 0o170000 == _SYMLINK_MODE:
        return _unsafe(name, "symbolic link")
    if info.flag_bits & 0x1:
        return ArchiveEntry(name, error=ItemInputError("unsupported_entry", f"archive entry {name!r} is encrypted"))
    if info.file_size > limits.max_entry_bytes:
        return _too_large(name, f"{info.file_size} bytes, the limit is {limits.max_entry_bytes}")
    if info.file_size >= RATIO_CHECK_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return _too_large(name, f"compression ratio over {limits.max_ratio:g} (zip bomb)")
    try:
        with archive.open(info) as member:
            data = member.read(limits.max_entry_bytes + 1)  # never trust the declared size alone
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        return ArchiveEntry(name, error=ItemInputError("corrupt_entry", f"archive entry {name!r} is damaged: {exc}"))
    except NotImplementedError as exc:
        return ArchiveEntry(name, error=ItemInputError("unsupported_entry", f"archive entry {name!r}: {exc}"))
    budget.spend(len(data))
    if len(data) > limits.max_entry_bytes:
        return _too_large(name, f"more than {limits.max_entry_bytes} bytes")
    return ArchiveEntry(name, data)


def _tar_entries(fileobj: BinaryIO, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    compressed = fileobj.seek(0, 2) or 1
    fileobj.seek(0)
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidArchiveError(f"not a zip or tar archive ({exc})") from None
    budget = _Budget(limits)
    with archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise InvalidArchiveError(f"damaged tar archive after {budget.entries} entries: {exc}") from None
            if member is None:
                return
            if member.isdir():
                continue
            budget.entry()
            # Skipped members are decompressed too, so their declared size counts against the budget.
            budget.spend(member.size)
            if budget.bytes >= RATIO_CHECK_BYTES and budget.bytes > limits.max_ratio * compressed:
                raise RequestTooLargeError(f"archive compression ratio over {limits.max_ratio:g} (zip bomb)")
            yield _tar_entry(archive, member, limits)


def _tar_entry(archive: tarfile.TarFile, member: tarfile.TarInfo, limits: ArchiveLimits) -> ArchiveEntry:
    name = member.name
    reason = unsafe_name_reason(name)
    if reason:
        return _unsafe(name, reason)
    if member.issym() or member.islnk():
        return _unsafe(name, "link")
    if not member.isreg():
        return _unsafe(name, "not a regular file")
    if member.size > limits.max_entry_bytes:
        return _too_large(name, f"{member.size} bytes, the limit is {limits.max_entry_bytes}")
    try:
        source = archive.extractfile(member)
        data = source.read(member.size) if source else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        return ArchiveEntry(name, error=ItemInputError("corrupt_entry", f"archive entry {name!r} is damaged: {exc}"))
    return ArchiveEntry(name, data)


def read_archive(fileobj: BinaryIO, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    """Entries of a zip or (optionally compressed) tar archive, in archive order, directories left out."""
    if is_zip(fileobj):
        return _zip_entries(fileobj, limits)
    return _tar_entries(fileobj, limits)
