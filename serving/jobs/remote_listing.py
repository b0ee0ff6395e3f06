"""Listing an object store under the bound its reads have: each request within IMGSERVE_REMOTE_TIMEOUT_S.

A training dataset or a collection source on `s3://` / `gs://` is looked up once (`object_info`: is it one object?)
and then listed page by page (`find_objects`), each request bounded by the setting with its transient failures tried
again within it (serving.jobs.remote_access.bounded_call). The bound is per request, not for the whole listing: an
unreachable store fails the listing within the setting (gcsfs retried one for about 49 s, botocore's defaults for
minutes), while a prefix of 100,000 objects (100 pages of 1,000) is listed however long its pages take together.
Filesystems that are not async (local `file://`, `memory://`) are asked directly; an async one other than s3fs and
gcsfs (and a version-aware s3fs) has its lookup bounded and its listing made by fsspec's own `find`, unbounded.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from serving.jobs.remote_access import bounded_call

PAGE_SIZE = 1000  # objects per listing request: S3's most, and what gcsfs asks for
Page = tuple[list[dict[str, Any]], str | None]  # the page's objects (fsspec's details), the next page's token


def object_info(filesystem: Any, path: str) -> dict[str, Any] | None:
    """fsspec's `info` of the object at `path` (`type` "file"; "directory" for a bucket, and on S3 for a prefix objects
    are under), None when nothing is there; one bounded call on an async filesystem. Other failures are raised. On
    GCS only the object (or the bucket) is asked for: gcsfs's `info` of a prefix first asks the Storage Control API
    for the bucket's layout, a gRPC call it retries for 60 s where that cannot connect; the listing tells a prefix."""
    from fsspec.asyn import AsyncFileSystem

    if not isinstance(filesystem, AsyncFileSystem):
        try:
            return dict(filesystem.info(path))
        except FileNotFoundError:
            return None
    one_object = _kind(filesystem) == "gcsfs" and "/" in filesystem._strip_protocol(path).strip("/")
    lookup = filesystem._get_object if one_object else filesystem._info

    async def info() -> dict[str, Any] | None:
        try:
            return dict(await lookup(path))
        except FileNotFoundError:
            return None

    result: dict[str, Any] | None = bounded_call(filesystem, info)
    return result


def find_objects(filesystem: Any, folder: str) -> dict[str, dict[str, Any]]:
    """Every object under `folder` (a bucket or a prefix), path -> fsspec's details (size and modification time as the
    listing says them), as `filesystem.find(folder, detail=True)` answers; on S3 and GCS one bounded call per page."""
    from fsspec.asyn import AsyncFileSystem

    page = _pager(filesystem, folder) if isinstance(filesystem, AsyncFileSystem) else None
    if page is None:
        return dict(filesystem.find(folder, detail=True))
    found: dict[str, dict[str, Any]] = {}
    token: str | None = None
    while True:
        objects, token = bounded_call(filesystem, page, token)
        found.update((entry["name"], entry) for entry in objects)
        if token is None:
            return found


def _pager(filesystem: Any, folder: str) -> Callable[[str | None], Awaitable[Page]] | None:
    """The coroutine function that lists one page of `folder` from a token (None: the first page), for s3fs and
    gcsfs; None for any other filesystem."""
    kind = _kind(filesystem)
    if kind == "s3fs" and not getattr(filesystem, "version_aware", False):
        return _s3_pager(filesystem, folder)
    if kind == "gcsfs":
        return _gcs_pager(filesystem, folder)
    return None


def _kind(filesystem: Any) -> str | None:
    """The package of an s3fs or gcsfs filesystem (or a subclass: gcsfs's ExtendedGcsFileSystem), else None."""
    packages = {cls.__module__.split(".")[0] for cls in type(filesystem).__mro__}
    return next((name for name in ("s3fs", "gcsfs") if name in packages), None)


def _split(filesystem: Any, folder: str) -> tuple[str, str]:
    """(bucket, the prefix of the objects under `folder`: its key and a slash, or nothing for a whole bucket)."""
    bucket, key, _ = filesystem.split_path(filesystem._strip_protocol(folder))
    return bucket, f"{key.rstrip('/')}/" if key else ""


def _s3_pager(filesystem: Any, folder: str) -> Callable[[str | None], Awaitable[Page]]:
    """S3's ListObjectsV2 without a delimiter (every object under the prefix, at any depth), entries as s3fs's `find`
    makes them; each page through s3fs's `_call_s3` (its own retries, its requester-pays settings)."""
    bucket, prefix = _split(filesystem, folder)

    async def page(token: str | None) -> Page:
        extra = {"ContinuationToken": token} if token else {}
        out = await filesystem._call_s3(
            "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="", MaxKeys=PAGE_SIZE, **extra
        )
        objects = [
            {**entry, "name": f"{bucket}/{entry['Key']}", "size": entry["Size"], "type": "file"}
            for entry in out.get("Contents", [])
        ]
        return objects, out.get("NextContinuationToken") if out.get("IsTruncated") else None

    return page


def _gcs_pager(filesystem: Any, folder: str) -> Callable[[str | None], Awaitable[Page]]:
    """GCS's objects.list without a delimiter, entries as gcsfs's `find` makes them (`_process_object`); each page
    through gcsfs's `_call` (its own retries)."""
    bucket, prefix = _split(filesystem, folder)

    async def page(token: str | None) -> Page:
        out = await filesystem._call(
            "GET", "b/{}/o", bucket, json_out=True, prefix=prefix or None, maxResults=PAGE_SIZE, pageToken=token
        )
        objects = [filesystem._process_object(bucket, entry) for entry in out.get("items", [])]
        return objects, out.get("nextPageToken")

    return page
