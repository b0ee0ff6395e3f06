"""Which `s3://` / `gs://` locations a tenant's jobs may read and write: the object-store twin of the `file://` root.

The server reads and writes object stores with its own credentials, so a URI a client names is read or written with
the server's rights: without a limit, one tenant could read any object those credentials reach (another tenant's
bucket, the server's own input store) and overwrite another tenant's exports. IMGSERVE_BATCH_ALLOWED_REMOTE lists
URI prefixes (folders: `s3://exports/{tenant}` covers `s3://exports/acme/...`, never `s3://exports/acme2/...`),
`{tenant}` standing for the job's tenant. Unset, the `default` tenant (a server without tenants: no keys, or keys
without one) may name any location, as before there was a setting, and every other tenant none.

Each read or write of one object is bounded by IMGSERVE_REMOTE_TIMEOUT_S, the storage client's own retries included:
gcsfs retries an unreachable host six times with backoff (about 49 s per item, during which the tenant's next job
waited), botocore's defaults allow minutes; past the bound the item fails (`unreadable_input` / `unwritable_output`).
"""

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.jobs.errors import UriNotAllowedError
from serving.security.principal import DEFAULT_TENANT, check_tenant

logger = logging.getLogger("imgserve.jobs")
ANY_REMOTE = "*"
REMOTE_TIMEOUT_ENV = "IMGSERVE_REMOTE_TIMEOUT_S"
DEFAULT_REMOTE_TIMEOUT_S = 20.0
MAX_REMOTE_TIMEOUT_S = 3600.0
TENANT_PLACEHOLDER = "{tenant}"
_SCHEME_ALIASES = {"gcs": "gs"}


def _normalized(uri: str) -> str:
    """The URI with its scheme in lower case and `gcs://` spelt `gs://` (one bucket, two spellings)."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    return f"{_SCHEME_ALIASES.get(scheme, scheme)}{sep}{rest}"


def check_prefix(entry: str) -> str:
    """One entry of the setting, checked at startup: `*`, or `s3://` / `gs://` / `gcs://` and a bucket."""
    scheme, sep, rest = entry.partition("://")
    if entry != ANY_REMOTE and (not sep or scheme.lower() not in ("s3", "gs", "gcs") or not rest.split("/")[0]):
        raise ValueError(f"{entry!r}: expected s3://bucket[/folder], gs://bucket[/folder] or *")
    return entry


def _folder(prefix: str) -> str:
    return _normalized(prefix).rstrip("/")


@dataclass(frozen=True)
class RemoteAccess:
    """The remote locations one tenant's jobs may name. `prefixes` None: any (but never `refused`)."""

    prefixes: tuple[str, ...] | None
    refused: tuple[str, ...] = ()  # the server's own input store: every tenant's inputs, by hash

    @classmethod
    def for_tenant(cls, allowed: list[str] | None, tenant: str, object_store: str) -> "RemoteAccess":
        """`allowed` (the setting's entries, `{tenant}` in them filled in) for `tenant`; None: the default rule."""
        refused = (_folder(object_store),) if "://" in object_store else ()
        if allowed is None:
            return cls(None if tenant == DEFAULT_TENANT else (), refused)
        if ANY_REMOTE in allowed:
            return cls(None, refused)
        name = check_tenant(tenant)
        return cls(tuple(_folder(entry.replace(TENANT_PLACEHOLDER, name)) for entry in allowed), refused)

    def check(self, uri: str) -> None:
        """Raises UriNotAllowedError (403) unless this tenant may read or write `uri`."""
        if "::" in uri or any(part in (".", "..") for part in uri.partition("://")[2].split("/")):
            raise UriNotAllowedError(f"{uri!r}: '.', '..' and '::' are not allowed in object-store URIs")
        location = _normalized(uri)
        if any(_under(location, folder) for folder in self.refused):
            raise UriNotAllowedError(f"{uri!r} is in the server's own input store")
        if self.prefixes is None or any(_under(location, folder) for folder in self.prefixes):
            return
        if not self.prefixes:
            raise UriNotAllowedError(
                f"{uri!r}: this tenant may not name s3:// or gs:// locations"
                " (IMGSERVE_BATCH_ALLOWED_REMOTE does not list any for it)"
            )
        raise UriNotAllowedError(
            f"{uri!r} is outside the locations this tenant may use (IMGSERVE_BATCH_ALLOWED_REMOTE)"
        )


def _under(location: str, folder: str) -> bool:
    return location == folder or location.startswith(folder + "/")


def remote_timeout_s(env: Mapping[str, str] | None = None) -> float:
    """IMGSERVE_REMOTE_TIMEOUT_S: the longest one s3:// / gs:// object read or write may take, every retry of the
    storage client included (default 20 s). A value that is not a number of seconds in (0, 3600] is logged and the
    default used: an item must not fail for the server's setting."""
    raw = (os.environ if env is None else env).get(REMOTE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_REMOTE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_REMOTE_TIMEOUT_S:
        logger.warning(
            "%s=%r is not seconds in (0, %g]; using %g",
            REMOTE_TIMEOUT_ENV,
            raw,
            MAX_REMOTE_TIMEOUT_S,
            DEFAULT_REMOTE_TIMEOUT_S,
        )
        return DEFAULT_REMOTE_TIMEOUT_S
    return value


def _bounded(filesystem: Any, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`await call(*args)` on the loop of an async fsspec filesystem (s3fs, gcsfs), cancelled after
    `remote_timeout_s` with a TimeoutError (an OSError) that names the setting."""
    from fsspec.asyn import sync
    from fsspec.exceptions import FSTimeoutError

    timeout = remote_timeout_s()
    try:
        return sync(filesystem.loop, call, *args, timeout=timeout)
    except FSTimeoutError:
        raise TimeoutError(f"no answer from the object store within {timeout:g} s ({REMOTE_TIMEOUT_ENV})") from None


def read_remote(filesystem: Any, path: str, max_bytes: int) -> bytes:
    """The first `max_bytes` + 1 bytes of the object at `path` (enough to tell it is too large); for an async
    filesystem in one bounded call: its size, then that range (S3 refuses a range of an empty object: none asked)."""
    from fsspec.asyn import AsyncFileSystem

    if not isinstance(filesystem, AsyncFileSystem):
        with filesystem.open(path, "rb") as handle:
            return bytes(handle.read(max_bytes + 1))

    async def read() -> bytes:
        if (await filesystem._info(path)).get("size") == 0:
            return b""
        return bytes(await filesystem._cat_file(path, start=0, end=max_bytes + 1))

    return bytes(_bounded(filesystem, read))


def write_remote(filesystem: Any, path: str, data: bytes) -> None:
    """Write `data` as the object at `path`; for an async filesystem in one bounded call."""
    from fsspec.asyn import AsyncFileSystem

    if not isinstance(filesystem, AsyncFileSystem):
        with filesystem.open(path, "wb") as handle:
            handle.write(data)
        return
    _bounded(filesystem, filesystem._pipe_file, path, data)
