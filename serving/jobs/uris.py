"""Inputs named by URI: `file://` under one allow-listed root, `s3://` / `gs://` through fsspec when installed.

URIs are checked when the job is submitted (a refused one is a 403 for the request) and again when the item
is read (the file may have been replaced by a link since): symlinks are resolved first, so a link inside the
root that points outside it is refused too. Any other scheme (http, ftp, ...) is refused: the server never
fetches arbitrary URLs on a client's behalf.
"""

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

from serving.errors import BadRequestError
from serving.jobs.errors import ItemInputError, UriNotAllowedError, storage_client_errors, storage_error_text
from serving.jobs.remote_access import RemoteAccess, read_remote, write_remote
from serving.regular_files import NotARegularFileError, open_regular_file, write_file_atomically

REMOTE_SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}


def resolve_under(path: Path, root: Path) -> Path:
    """`path` resolved (links followed) if it is absolute and under `root`; UriNotAllowedError (403) otherwise."""
    if not path.is_absolute():
        raise UriNotAllowedError(f"file URI path must be absolute, got {str(path)!r}")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UriNotAllowedError(f"{str(path)!r} is outside the allowed root for file URIs")
    return resolved


def _split(uri: str) -> SplitResult:
    """`urlsplit`, with what it refuses (a malformed IPv6 host, ...) or a NUL byte as a client error (400)."""
    if "\x00" in uri:
        raise BadRequestError("URI contains a NUL byte")
    try:
        return urlsplit(uri)
    except ValueError as exc:
        raise BadRequestError(f"malformed URI {uri[:200]!r}: {exc}") from None


def file_uri_path(uri: str, allowed_root: Path | None) -> Path:
    parts = _split(uri)
    if parts.netloc not in ("", "localhost"):
        raise UriNotAllowedError(f"file URI with a host is refused: {uri!r}")
    if allowed_root is None:
        raise UriNotAllowedError("file:// URIs are disabled on this server (IMGSERVE_BATCH_ALLOWED_ROOT is not set)")
    if "?" in uri or "#" in uri:  # a query or fragment (empty too): the file before it would be read
        raise BadRequestError(f"file URI {uri!r} has a query or fragment: percent-encode '?' as %3F, '#' as %23")
    path = unquote(parts.path)
    if "\x00" in path:  # %00: no file name holds one, and the OS calls would raise
        raise BadRequestError("file URI path contains a NUL byte")
    return resolve_under(Path(path), allowed_root)


def check_uri(uri: str, allowed_root: Path | None, remote: RemoteAccess | None = None) -> str:
    """The URI if this server may read it; raises UriNotAllowedError (403) or BadRequestError (400). `remote`: the
    s3:// / gs:// locations the caller's tenant may name (None: any; a client's URIs always pass its tenant's)."""
    scheme = _split(uri).scheme.lower()
    if scheme == "file":
        file_uri_path(uri, allowed_root)
        return uri
    if scheme in REMOTE_SCHEMES:
        if remote is not None:
            remote.check(uri)
        import fsspec

        try:
            fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError):
            raise BadRequestError(f"{scheme}:// URIs need the {REMOTE_SCHEMES[scheme]} package on the server") from None
        return uri
    raise UriNotAllowedError(f"URI scheme {scheme or '(none)'!r} is not allowed; use file://, s3:// or gs://")


def check_destination(uri: str, output_root: Path | None, remote: RemoteAccess | None = None) -> str:
    """An output destination (a folder URI) this server may write under: `file://` inside IMGSERVE_BATCH_OUTPUT_ROOT
    (a root of its own: the input root is for reading), or `s3://` / `gs://`. Raises UriNotAllowedError (403) or
    BadRequestError (400). `remote`: as `check_uri`'s."""
    parts = _split(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise UriNotAllowedError(f"file URI with a host is refused: {uri!r}")
        if output_root is None:
            raise UriNotAllowedError(
                "file:// outputs are disabled on this server (IMGSERVE_BATCH_OUTPUT_ROOT is not set)"
            )
        if parts.query or parts.fragment:  # every output would be written to the folder before the '?' or '#'
            raise BadRequestError(f"output URI {uri!r} has a query or fragment: percent-encode '?' as %3F, '#' as %23")
        resolve_under(Path(unquote(parts.path)), output_root)
        return uri.rstrip("/")
    if parts.scheme.lower() in REMOTE_SCHEMES:
        return check_uri(uri, None, remote).rstrip("/")
    raise UriNotAllowedError(
        f"output URI scheme {parts.scheme or '(none)'!r} is not allowed; use file://, s3:// or gs://"
    )


def write_output(
    destination: str, name: str, data: bytes, output_root: Path | None, remote: RemoteAccess | None = None
) -> str:
    """Write `data` as `name` under `destination`; returns the file's URI. `name` is a relative path in the URI's
    own form (a file URI's path is percent-decoded: pass `quote(name)`, or use `write_named_output`, which does).
    Local files are written to a temporary name and renamed into place (a re-run item rewrites the same bytes).
    `remote`: as `check_uri`'s, checked again at each write (the setting may have changed since the submission)."""
    uri = f"{destination}/{name}"
    try:
        filesystem, path = _output_place(destination, name, output_root, remote)
        if filesystem is None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomically(target, data)
        else:
            write_remote(filesystem, path, data)
    except (UriNotAllowedError, BadRequestError) as exc:
        raise ItemInputError("forbidden_uri", str(exc)) from None
    except OSError as exc:
        raise ItemInputError("unwritable_output", f"cannot write {uri!r}: {exc}") from None
    except storage_client_errors() as exc:  # no credentials for the store: not an OSError
        raise ItemInputError("unwritable_output", f"cannot write {uri!r}: {storage_error_text(exc)}") from None
    return uri


def _output_place(
    destination: str, name: str, output_root: Path | None, remote: RemoteAccess | None
) -> tuple[Any, str]:
    """Where `write_output` puts `name` (in the URI's own form) under `destination`: (None, a local path under
    `output_root`) for file://, else (its fsspec filesystem, the key). Raises UriNotAllowedError / BadRequestError
    for a place refused. `remote`: as `check_uri`'s, checked again each time (the setting may have changed)."""
    if _split(destination).scheme.lower() == "file":
        assert output_root is not None  # check_destination refused file:// without it
        return None, str(resolve_under(Path(unquote(_split(f"{destination}/{name}").path)), output_root))
    import fsspec

    if remote is not None:
        remote.check(f"{destination}/{name}")
    # The folder is parsed, the name is not: a key is the name as it is (fsspec would read '::' in a whole URI as a
    # chain of filesystems). auto_mkdir is off for object stores: s3fs's "make the parent" creates a missing
    # *bucket*, so a mistyped destination would quietly become a new bucket instead of failing.
    filesystem, folder = fsspec.core.url_to_fs(destination)
    return filesystem, f"{folder}/{name}"


def write_named_output(
    destination: str, name: str, data: bytes, output_root: Path | None, remote: RemoteAccess | None = None
) -> str:
    """`write_output` of an output named `name`, taken literally: '#', '?' and '%' in a name are part of it, never a
    fragment, a query or an escape (a file URI's path is percent-encoded), so the URI returned names the file
    written. `name` is a relative path without empty, '.' or '..' parts (an item error otherwise)."""
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise ItemInputError("forbidden_uri", f"output name {name!r} is not a plain relative path")
    local = _split(destination).scheme.lower() == "file"
    return write_output(destination, quote(name) if local else name, data, output_root, remote)


def remove_named_output(
    destination: str, name: str, digest: str, output_root: Path | None, remote: RemoteAccess | None = None
) -> bool:
    """Delete the output `write_named_output` wrote as `name` under `destination` if the file there still holds
    those bytes (sha256 `digest`; a file written over since is someone else's); True if one was deleted. Refused
    and unreadable locations are left alone (False): the write there failed too, or the folder changed hands."""
    local = _split(destination).scheme.lower() == "file"
    if local and output_root is None:
        return False
    try:
        filesystem, path = _output_place(destination, quote(name) if local else name, output_root, remote)
        held = Path(path).read_bytes() if filesystem is None else filesystem.cat_file(path)
        if hashlib.sha256(held).hexdigest() != digest:
            return False
        if filesystem is None:
            Path(path).unlink()
        else:
            filesystem.rm_file(path)
        return True
    except (UriNotAllowedError, BadRequestError, OSError):  # FileNotFoundError included: nothing left to remove
        return False
    except storage_client_errors():  # no credentials: the write there failed too
        return False


def _read_local(path: Path, max_bytes: int) -> bytes:
    try:
        handle = open_regular_file(path, follow_links=False)  # the resolved path has no link left to follow
    except NotARegularFileError as exc:
        raise ItemInputError("invalid_input", str(exc)) from None
    with handle:
        return handle.read(max_bytes + 1)


def read_uri(uri: str, allowed_root: Path | None, max_bytes: int, remote: RemoteAccess | None = None) -> bytes:
    """The bytes behind a URI (at most `max_bytes`); every failure is an ItemInputError for that item. `remote`: as
    `check_uri`'s, checked again when the item is read."""
    try:
        if _split(uri).scheme.lower() == "file":
            data = _read_local(file_uri_path(uri, allowed_root), max_bytes)
        else:
            check_uri(uri, allowed_root, remote)
            import fsspec

            filesystem, path = fsspec.core.url_to_fs(uri)
            data = read_remote(filesystem, path, max_bytes)
    except (UriNotAllowedError, BadRequestError) as exc:
        raise ItemInputError("forbidden_uri", str(exc)) from None
    except FileNotFoundError:
        raise ItemInputError("missing_input", f"{uri!r} does not exist") from None
    except OSError as exc:
        raise ItemInputError("unreadable_input", f"cannot read {uri!r}: {exc}") from None
    except storage_client_errors() as exc:  # no credentials for the store: not an OSError
        raise ItemInputError("unreadable_input", f"cannot read {uri!r}: {storage_error_text(exc)}") from None
    if len(data) > max_bytes:
        raise ItemInputError("too_large", f"{uri!r} is larger than {max_bytes} bytes")
    return data
