"""What a collection is read from: folders, zip/tar archives, single files and fsspec URIs (`s3://`, `gs://`, ...).

`list_sources` runs once on the driver and names every image (`SourceItem`: a display name unique in the run, where
to read it, and its size and change time as the listing says them: `FileState`); `read_items` runs in the Ray Data
tasks and reads a batch of them, opening each archive once per batch. A file that cannot be read becomes that item's
error, not the run's. `current_digests` reads them again on the driver, one at a time, for `--refresh`.
"""

import dataclasses
import hashlib
import lzma
import os
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from serving.collections.storable import local_path, storable_location, storable_text
from serving.hidden_names import is_hidden_part, is_hidden_path
from serving.jobs.archives import TAR_NAMES
from serving.jobs.errors import storage_client_errors, storage_error_text
from serving.jobs.remote_listing import find_objects, object_info
from serving.regular_files import is_regular_file, open_regular_file

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif", ".mpo"}
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class SourceError(ValueError):
    """A source that cannot be listed (missing folder, unknown scheme): the run stops before it starts."""


class UnreadableArchiveError(SourceError):
    """An archive in a source that is not one (damaged, or named .zip/.tar but something else); `problem`: why,
    without the archive's location (a training dataset's 400 names the dataset instead)."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class FileState:
    """What a listing says of a file without reading it: its size (an archive member's own) and when it last changed:
    the later of a local file's mtime and ctime (ctime cannot be set back: `touch -d`, `cp -p` and `rsync -a` set
    mtime only), an object's LastModified (set by every upload), an archive member's archive's; None: not said."""

    size: int | None
    changed_at: float | None


@dataclass(frozen=True)
class SourceItem:
    name: str  # unique in the run: the path under its source (prefixed with the source's name when there are several)
    location: str  # a local path or an fsspec URI
    member: str | None = None  # the entry inside the archive at `location`
    state: FileState | None = field(default=None, compare=False)  # as listed; None: not listed (made by hand)

    def to_row(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.stored_location, "member": self.member or ""}

    @property
    def stored_location(self) -> str:
        """`location` as a collection records it (and Ray Data carries it): a path that is not UTF-8 encoded
        (`storable.storable_location`); `read_items` reads either."""
        return storable_location(self.location)

    @property
    def place(self) -> str:
        return place(self.stored_location, self.member)


def place(location: str, member: str | None) -> str:
    """Where an image was read, in one string: the path or URI, and the member inside an archive."""
    return f"{location} ({member})" if member else location


def is_image_name(name: str) -> bool:
    return posixpath.splitext(name.lower())[1] in IMAGE_EXTENSIONS


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_uri(source: str) -> bool:
    scheme = urlsplit(source).scheme
    return len(scheme) > 1  # not a Windows drive letter


def _open(location: str, follow_links: bool = True) -> Any:
    raw_path = local_path(location)
    if raw_path is not None:  # a stored path that is not UTF-8
        return open_regular_file(raw_path, follow_links=follow_links)
    if is_uri(location):
        import fsspec

        return fsspec.open(location, "rb").open()
    return open_regular_file(location, follow_links=follow_links)  # closed by the caller


def _archive_members(location: str) -> list[tuple[str, int]]:
    """The archive's images: (member, size)."""
    with _open(location) as handle:
        if location.lower().endswith(".zip"):
            with zipfile.ZipFile(handle) as archive:
                members = [(i.filename, i.file_size) for i in archive.infolist() if not i.is_dir()]
        else:
            with tarfile.open(fileobj=handle, mode="r:*", **TAR_NAMES) as archive:
                members = [(m.name, m.size) for m in archive.getmembers() if m.isfile()]
    return [(name, size) for name, size in members if is_image_name(name) and not is_hidden_path(name)]


def _readable_archive_members(location: str) -> list[tuple[str, int]]:
    """`_archive_members`, or a `SourceError` naming the archive when it is not one (damaged, or named .zip/.tar
    but something else): it was a traceback (BadZipFile, tarfile.ReadError) from `collection analyze`."""
    try:
        return _archive_members(location)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        kind = "zip" if location.lower().endswith(".zip") else "tar"
        problem = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(":")
        if problem == "file could not be opened successfully":  # tarfile's, then a line per compression tried
            problem = "neither a tar file nor a gzip, bzip2 or xz compressed one"
        raise UnreadableArchiveError(
            f"{storable_location(location)}: not a readable {kind} archive ({problem})",
            f"{posixpath.basename(location)}: not a readable {kind} archive ({problem})",
        ) from None


def _local_state(path: str) -> FileState | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return FileState(info.st_size, max(info.st_mtime, info.st_ctime))


def _object_state(info: dict[str, Any]) -> FileState:
    """A listed object's state from fsspec's details: s3fs says LastModified, gcsfs and local file:// mtime (and
    `created`: the ctime), memory:// created."""
    times = [_seconds(info.get(key)) for key in ("LastModified", "mtime", "updated", "created")]
    known = [t for t in times if t is not None]
    size = info.get("size")
    return FileState(size if isinstance(size, int) else None, max(known) if known else None)


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _local_files(root: str) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(name for name in dirs if not is_hidden_part(name))  # not walked into
        for name in sorted(name for name in files if not is_hidden_part(name)):
            path = os.path.join(folder, name)
            if is_regular_file(path):  # not a FIFO, socket or device named like an image
                yield path


def _expand(source: str, prefix: str) -> Iterator[tuple[str, SourceItem]]:
    """(name, item) for each image in one source: a folder's images are named by their path under it (after
    `prefix`), a single file or archive by its own name. A file named on purpose is read whatever its extension
    (a photo.dat, or a file that is not an image: its record says why it failed); walked files only when their
    extension is an image's."""
    if is_uri(source):
        try:
            yield from _expand_uri(source, prefix)
        except storage_client_errors() as exc:  # no credentials for the store: not an OSError, was a 500/traceback
            raise SourceError(f"{source}: cannot be listed: {storage_error_text(exc)}") from None
        except TimeoutError as exc:  # a request of the listing got no answer within IMGSERVE_REMOTE_TIMEOUT_S
            raise SourceError(f"{source}: cannot be listed: {exc}") from None
        return
    if os.path.isdir(source):
        for path in _local_files(source):
            relative = os.path.relpath(path, source).replace(os.sep, "/")
            yield from _expand_file(prefix + storable_text(relative), path, _local_state(path))
        return
    if os.path.isfile(source):
        yield from _expand_file(storable_text(os.path.basename(source)), source, _local_state(source), named=True)
        return
    raise SourceError(f"{source}: no such file or folder")


def _expand_uri(source: str, prefix: str) -> Iterator[tuple[str, SourceItem]]:
    """`_expand` of an fsspec URI: one object (or archive), or every object under a prefix. On an object store each
    request (the lookup, each page of the listing) is bounded by IMGSERVE_REMOTE_TIMEOUT_S (serving.jobs.
    remote_listing): past it the listing fails with a TimeoutError."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{source}: {exc} (s3:// needs the s3 extra, gs:// the gcs extra)") from None
    protocol = _protocol(fs)
    info = object_info(fs, path)
    if info is not None and info.get("type") == "file":
        name, state = storable_text(posixpath.basename(path)), _object_state(info)
        yield from _expand_file(name, _uri_location(protocol, path), state, named=True)
        return
    base = path.rstrip("/")
    found = find_objects(fs, base)  # the listing's own sizes and times: no request per object
    if not found and (info or {}).get("type") != "directory":
        raise SourceError(f"{source}: no such object or prefix")
    for found_path in sorted(found):
        relative = storable_text(posixpath.relpath(found_path, base))
        if is_hidden_path(relative):
            continue
        state = _object_state(found[found_path])
        yield from _expand_file(prefix + relative, _uri_location(protocol, found_path), state)


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _uri_location(protocol: str, path: str) -> str:
    """Where to read a listed object: its URI, or for a local (file://) path that is not UTF-8 its stored form."""
    if protocol in ("file", "local") and storable_text(path) != path:
        return storable_location(path)
    return f"{protocol}://{path}"


def _expand_file(
    relative: str, location: str, state: FileState | None, named: bool = False
) -> Iterator[tuple[str, SourceItem]]:
    """An archive's images, or the file itself: when `named` (given as a source) whatever its extension, else (found
    in a folder or under a prefix) only with an image's extension."""
    if is_archive_name(location):
        changed_at = state.changed_at if state else None  # a member changes with its archive
        for member, size in _readable_archive_members(location):
            name = f"{relative}/{member}"
            yield name, SourceItem(name, location, member, FileState(size, changed_at))
    elif named or is_image_name(location):
        yield relative, SourceItem(relative, location, None, state)


def source_label(source: str) -> str:
    return storable_text(posixpath.basename(source.rstrip("/").rstrip(os.sep)) or source)


def _absolute(source: str) -> str:
    return source if is_uri(source) else os.path.abspath(source)


def resolved_source(source: str) -> str:
    """A local source as an absolute path, a URI as given: what a collection records, so the same folder named
    from another working directory is the same source (a path that is not UTF-8: `storable_location`)."""
    return storable_location(_absolute(source))


def source_root(source: str) -> str:
    """What the locations of a source's images start with (`SourceItem.stored_location`): a local source's absolute
    path (`resolved_source`), a URI's protocol and path as its listing writes them (gcs://b/x lists gs://b/x/...)."""
    if not is_uri(source):
        return resolved_source(source)
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    return _uri_location(_protocol(fs), path.rstrip("/"))


def list_sources(sources: Sequence[str], prefix: str = "") -> list[SourceItem]:
    """Every image of every source, in a stable order; with several sources each name starts with its source's,
    and every name with `prefix` + "/" when one is given. Local items are located by absolute path."""
    items: list[SourceItem] = []
    for source in map(_absolute, sources):
        label = f"{source_label(source)}/" if len(sources) > 1 else ""
        items.extend(item for _, item in _expand(source, label))
    if prefix.strip("/"):
        items = [dataclasses.replace(item, name=f"{prefix.strip('/')}/{item.name}") for item in items]
    seen: set[str] = set()
    places: dict[str, str] = {}  # where each image is read -> its name: overlapping sources list a file twice
    for item in items:
        if item.name in seen:
            raise SourceError(f"two inputs are both named {item.name!r}: give sources with different names")
        if item.place in places:
            raise SourceError(
                f"{item.place} is listed twice, as {places[item.place]!r} and {item.name!r}: it would be analysed and"
                " counted twice; give sources that do not overlap (a folder, not also a folder inside it)"
            )
        seen.add(item.name)
        places[item.place] = item.name
    return items


def read_items(rows: Sequence[dict[str, Any]], max_bytes: int, follow_links: bool = True) -> list[bytes | Exception]:
    """The bytes of each row (`SourceItem.to_row`), or the error reading it; an archive is opened once.
    `follow_links=False`: a local file (or archive) whose last path part is a link is an error, not followed."""
    out: list[bytes | Exception] = [b""] * len(rows)
    by_archive: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if row["member"]:
            by_archive.setdefault(row["location"], []).append(i)
            continue
        try:
            out[i] = _read_file(row["location"], max_bytes, follow_links)
        except Exception as exc:  # noqa: BLE001 - the item's error
            out[i] = exc
    for location, indexes in by_archive.items():
        wanted = {rows[i]["member"]: i for i in indexes}
        try:
            for member, data in _read_members(location, set(wanted), max_bytes, follow_links):
                out[wanted.pop(member)] = data
            for i in wanted.values():
                out[i] = FileNotFoundError(f"{rows[i]['member']} is not in {location}")
        except Exception as exc:  # noqa: BLE001 - the archive's error is each of its items'
            for i in wanted.values():
                out[i] = exc
    return out


def current_digests(items: Sequence[SourceItem], max_bytes: int) -> Iterator[tuple[str, str | None]]:
    """(name, sha256 of its bytes now, None when it cannot be read) for each item, one file in memory at a time; an
    archive is read once for all its members."""
    by_archive: dict[str, dict[str, str]] = {}  # location -> member -> name
    for item in items:
        if item.member:
            by_archive.setdefault(item.stored_location, {})[item.member] = item.name
            continue
        (data,) = read_items([item.to_row()], max_bytes)
        yield item.name, None if isinstance(data, Exception) else hashlib.sha256(data).hexdigest()
    for location, names in by_archive.items():
        wanted = dict(names)
        try:
            for member, data in _read_members(location, set(wanted), max_bytes):
                yield wanted.pop(member), None if isinstance(data, Exception) else hashlib.sha256(data).hexdigest()
        except Exception:  # noqa: BLE001 - an archive that cannot be read: none of its members can be told unchanged
            pass
        yield from ((name, None) for name in wanted.values())


def _read_file(location: str, max_bytes: int, follow_links: bool = True) -> bytes:
    """One image file's bytes; an object store's in one call bounded by IMGSERVE_REMOTE_TIMEOUT_S, transient failures
    tried again within it (`read_remote`: the client's own retries were unbounded, minutes per image)."""
    if local_path(location) is None and is_uri(location):
        import fsspec

        from serving.jobs.remote_access import read_remote

        filesystem, path = fsspec.core.url_to_fs(location)
        return _within_limit(read_remote(filesystem, path, max_bytes), max_bytes)
    with _open(location, follow_links) as handle:
        return _bounded_read(handle, max_bytes)


def _bounded_read(handle: Any, max_bytes: int) -> bytes:
    return _within_limit(handle.read(max_bytes + 1), max_bytes)


def _within_limit(data: bytes, max_bytes: int) -> bytes:
    """`data` (read up to `max_bytes` + 1), or ValueError when it is over the limit."""
    if len(data) > max_bytes:
        raise ValueError(f"file larger than the {max_bytes:,}-byte limit")
    return data


def _read_members(
    location: str, members: set[str], max_bytes: int, follow_links: bool = True
) -> Iterator[tuple[str, bytes | Exception]]:
    with _open(location, follow_links) as handle:
        if location.lower().endswith(".zip"):
            with zipfile.ZipFile(handle) as archive:
                for member in members:
                    try:
                        with archive.open(member) as entry:
                            yield member, _bounded_read(entry, max_bytes)
                    except Exception as exc:  # noqa: BLE001
                        yield member, exc
            return
        with tarfile.open(fileobj=handle, mode="r|*", **TAR_NAMES) as archive:  # streamed: one pass even compressed
            for info in archive:
                if not members:
                    return  # all found: the rest of the stream is not read
                if info.name in members and info.isfile():
                    members.discard(info.name)
                    entry = archive.extractfile(info)
                    try:
                        yield info.name, _bounded_read(entry, max_bytes) if entry else FileNotFoundError(info.name)
                    except Exception as exc:  # noqa: BLE001
                        yield info.name, exc
