"""Safe reading of zip and tar archives into memory, one entry at a time; nothing is extracted to disk.

Entry names are only labels (inputs are stored by hash), but unsafe ones — absolute, `..`, drive letters,
links, devices — are still reported as failed items so a hostile archive is visible in the results.
Zip bombs are stopped by caps on entry count, bytes per entry, total uncompressed bytes and the
compression ratio; the caps are checked on declared sizes first and again on bytes actually read.
Parsing itself is bounded too: a zip's entry count and central-directory size are read from its end record
and checked before the central directory is parsed; tar pax / GNU long-name headers, which `tarfile` would
read whole at their declared size, are refused above `MAX_TAR_HEADER_BYTES`; directories count as entries;
and the small entries' ratio is capped together (big entries are capped one by one), so thousands of
just-under-1-MiB entries cannot expand a small file to gigabytes; a zip's entries may not overlap and what it
inflates is capped against the whole file too; and one request's archives share one cap (`ExpansionBudget`).
The kind is decided by the leading bytes (tar header, else zip signature), never by a zip end record near the end.
"""

import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from serving.errors import RequestTooLargeError
from serving.hidden_names import is_hidden_path
from serving.jobs.errors import InvalidArchiveError, ItemInputError

RATIO_CHECK_BYTES = 1024 * 1024  # tiny entries may compress well legitimately; bombs are big by definition
MAX_TAR_HEADER_BYTES = 1024 * 1024  # a pax or GNU long-name header this big holds no real path or attribute
_TAR_EXTENSION_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
)  # headers whose data tarfile reads whole: long names, pax attributes
ZIP_DIRECTORY_BYTES_PER_ENTRY = 4096  # central-directory bytes allowed per permitted entry (name, extra, comment)
# A tar name that is not UTF-8 (old tar tools write Latin-1) is read with U+FFFD: tarfile's default surrogate escapes
# are no text a database or a JSON answer can hold.
TAR_NAMES: dict[str, str] = {"encoding": "utf-8", "errors": "replace"}
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


def is_skipped_entry(name: str) -> bool:
    """An archive entry or upload a batch leaves out without a trace: a hidden one (`is_hidden_path`) whose name is
    safe; an unsafe one (`../.x`) stays a failed item, so a hostile archive is visible in the results."""
    return is_hidden_path(name) and unsafe_name_reason(name) is None


ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip starts with its first entry (or, empty, its end record)


def _is_tar_header(block: bytes) -> bool:
    """A tar header block: 512 bytes whose checksum field matches them (what `tarfile` itself checks)."""
    if len(block) < tarfile.BLOCKSIZE or not block.strip(b"\0"):
        return False
    try:
        declared = tarfile.nti(block[148:156])
    except tarfile.HeaderError:
        return False
    return declared in tarfile.calc_chksums(block[: tarfile.BLOCKSIZE])


def is_zip(fileobj: BinaryIO) -> bool:
    """A zip by its leading signature, never by an end record found near the end of the file: a plain tar whose
    last member is a zip (a .docx, .jar, .epub ...) ends with that zip's end record, and `zipfile.is_zipfile` and
    `ZipFile` (which accepts data before a zip) read the whole tar as that one member."""
    fileobj.seek(0)
    head = fileobj.read(tarfile.BLOCKSIZE)
    fileobj.seek(0)
    return not _is_tar_header(head) and head.startswith(ZIP_SIGNATURES)


class ExpansionBudget:
    """Uncompressed bytes one request may read from all its archives together (413 when exceeded): each archive's
    own cap times the number of archives a request may carry would be terabytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0

    def spend(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.max_bytes:
            raise RequestTooLargeError(
                f"the request's archives expand to more than {self.max_bytes} bytes together (limit per request)"
            )


class _Budget:
    """Running totals of one archive against its limits (413 for the whole request when exceeded)."""

    def __init__(self, limits: ArchiveLimits, request: ExpansionBudget | None = None):
        self.limits, self.entries, self.bytes, self.request = limits, 0, 0, request

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
        if self.request is not None:
            self.request.spend(size)


def _unsafe(name: str, reason: str) -> ArchiveEntry:
    return ArchiveEntry(name, error=ItemInputError("unsafe_entry", f"archive entry {name!r} refused: {reason}"))


def _too_large(name: str, why: str) -> ArchiveEntry:
    return ArchiveEntry(name, error=ItemInputError("too_large", f"archive entry {name!r} refused: {why}"))


def _check_zip_directory(fileobj: BinaryIO, limits: ArchiveLimits) -> None:
    """Entry count and central-directory size from the end record, before `zipfile` parses the directory."""
    try:
        end = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]  # what ZipFile itself reads first
    except Exception as exc:  # noqa: BLE001 - the archive's fault
        raise InvalidArchiveError(f"damaged zip archive: {type(exc).__name__}: {exc}") from None
    fileobj.seek(0)
    if end is None:
        return  # ZipFile will say it is not a zip
    entries, directory_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > limits.max_entries:
        raise RequestTooLargeError(f"archive has {entries} entries; the limit is {limits.max_entries}")
    if directory_bytes > ZIP_DIRECTORY_BYTES_PER_ENTRY * max(limits.max_entries, 1):
        raise RequestTooLargeError(f"archive's central directory is {directory_bytes} bytes (too many or too long)")
    # Where the directory is vs where the end record says it is: data before the zip (ZipFile would shift every
    # offset past it and read only the last of two zips put together) is no archive this server reads.
    prepended = end[zipfile._ECD_LOCATION] - directory_bytes - end[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        prepended -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    if prepended != 0:
        raise InvalidArchiveError("zip archive with data before its first entry (two archives put together?)")


def _inflated(info: zipfile.ZipInfo, limits: ArchiveLimits) -> bool:
    """Whether an entry is read at all (`_zip_entry` refuses the rest by their declared sizes, unread)."""
    if info.file_size > limits.max_entry_bytes:
        return False
    return info.file_size < RATIO_CHECK_BYTES or info.file_size <= limits.max_ratio * max(info.compress_size, 1)


def _check_no_overlap(listed: list[zipfile.ZipInfo]) -> None:
    """Each entry's compressed data is its own: a central directory can list one deflated entry many times
    (overlapping entries), each within the ratio, the archive far over it."""
    end = -1
    for info in sorted(listed, key=lambda i: i.header_offset):
        if info.header_offset < end:
            raise RequestTooLargeError(f"archive entry {info.filename!r} overlaps another entry (zip bomb)")
        end = info.header_offset + zipfile.sizeFileHeader + info.compress_size  # type: ignore[attr-defined]


def _zip_entries(
    fileobj: BinaryIO, limits: ArchiveLimits, request: ExpansionBudget | None = None
) -> Iterator[ArchiveEntry]:
    _check_zip_directory(fileobj, limits)
    archive_bytes = fileobj.seek(0, 2)
    fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, "zip file version 23.6", ...: the archive's fault
        raise InvalidArchiveError(f"damaged or unsupported zip archive: {type(exc).__name__}: {exc}") from None
    with archive:
        listed = archive.infolist()
        if len(listed) > limits.max_entries:  # directories included
            raise RequestTooLargeError(f"archive has {len(listed)} entries; the limit is {limits.max_entries}")
        # not ZipInfo.is_dir(): it indexes the name, and a hostile entry's name can be empty
        infos = [i for i in listed if not i.filename.endswith("/") and not is_skipped_entry(i.filename)]
        _check_no_overlap(listed)
        budget = _Budget(limits, request)
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise RequestTooLargeError(f"archive declares more than {limits.max_total_bytes} uncompressed bytes")
        inflated = sum(i.file_size for i in infos if _inflated(i, limits))
        if request is not None and request.bytes + inflated > request.max_bytes:
            request.spend(inflated)  # refused before anything is inflated
        # Big entries are checked one by one (a bomb entry fails alone); the small ones escape that check, so
        # together they must not expand more than the ratio either (thousands of just-under-1-MiB entries).
        small = [i for i in infos if i.file_size < RATIO_CHECK_BYTES]
        small_bytes = sum(i.file_size for i in small)
        if small_bytes >= RATIO_CHECK_BYTES and small_bytes > limits.max_ratio * max(
            sum(i.compress_size for i in small), 1
        ):
            raise RequestTooLargeError(
                f"archive compression ratio over {limits.max_ratio:g} (zip bomb of small entries)"
            )
        # And what is inflated, against the whole file: compressed sizes are declared, and can be forged.
        if inflated >= RATIO_CHECK_BYTES and inflated > limits.max_ratio * max(archive_bytes, 1):
            raise RequestTooLargeError(f"archive compression ratio over {limits.max_ratio:g} (zip bomb)")
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
    except NotImplementedError as exc:
        return ArchiveEntry(name, error=ItemInputError("unsupported_entry", f"archive entry {name!r}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, ...: this entry's fault
        return ArchiveEntry(name, error=ItemInputError("corrupt_entry", f"archive entry {name!r} is damaged: {exc}"))
    budget.spend(len(data))
    if len(data) > limits.max_entry_bytes:
        return _too_large(name, f"more than {limits.max_entry_bytes} bytes")
    return ArchiveEntry(name, data)


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses pax / GNU long-name extension headers over `MAX_TAR_HEADER_BYTES` before `tarfile`
    reads them whole into memory (a ~8 MB .tar.gz can declare an 8 GiB pax header)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _TAR_EXTENSION_TYPES and self.size > MAX_TAR_HEADER_BYTES:
            raise _OversizedTarHeader(f"tar extension header of {self.size} bytes (limit {MAX_TAR_HEADER_BYTES})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _OversizedTarHeader(tarfile.HeaderError):
    pass


def _tar_entries(
    fileobj: BinaryIO, limits: ArchiveLimits, request: ExpansionBudget | None = None
) -> Iterator[ArchiveEntry]:
    compressed = fileobj.seek(0, 2) or 1
    fileobj.seek(0)
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r:*", tarinfo=_BoundedTarInfo, **TAR_NAMES)
    except _OversizedTarHeader as exc:
        raise RequestTooLargeError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - TarError, EOFError, zlib.error, ...: the archive's fault
        raise InvalidArchiveError(f"not a zip or tar archive ({type(exc).__name__}: {exc})") from None
    budget = _Budget(limits, request)
    with archive:
        while True:
            try:
                member = archive.next()
            except _OversizedTarHeader as exc:
                raise RequestTooLargeError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - the archive's fault
                raise InvalidArchiveError(f"damaged tar archive after {budget.entries} entries: {exc}") from None
            if member is None:
                return
            budget.entry()  # directories too: millions of them cost parsing time like files do
            if member.isdir():
                continue
            # Skipped members are decompressed too, so their declared size counts against the budget.
            budget.spend(member.size)
            if budget.bytes >= RATIO_CHECK_BYTES and budget.bytes > limits.max_ratio * compressed:
                raise RequestTooLargeError(f"archive compression ratio over {limits.max_ratio:g} (zip bomb)")
            if not is_skipped_entry(member.name):
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
    except Exception as exc:  # noqa: BLE001 - TarError, EOFError, zlib.error, ...: this entry's fault
        return ArchiveEntry(name, error=ItemInputError("corrupt_entry", f"archive entry {name!r} is damaged: {exc}"))
    return ArchiveEntry(name, data)


def read_archive(
    fileobj: BinaryIO, limits: ArchiveLimits, request: ExpansionBudget | None = None
) -> Iterator[ArchiveEntry]:
    """Entries of a zip or (optionally compressed) tar archive, in archive order, directories and hidden or system
    entries (`is_skipped_entry`) left out; `request`: what the request's archives may still expand to, shared by all
    of them."""
    if is_zip(fileobj):
        return _zip_entries(fileobj, limits, request)
    return _tar_entries(fileobj, limits, request)
