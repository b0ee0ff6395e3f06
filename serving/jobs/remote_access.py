"""Which `s3://` / `gs://` locations a tenant's jobs may read and write: the object-store twin of the `file://` root.

The server reads and writes object stores with its own credentials, so a URI a client names is read or written with
the server's rights: without a limit, one tenant could read any object those credentials reach (another tenant's
bucket, the server's own input store) and overwrite another tenant's exports. IMGSERVE_BATCH_ALLOWED_REMOTE lists
URI prefixes (folders: `s3://exports/{tenant}` covers `s3://exports/acme/...`, never `s3://exports/acme2/...`),
`{tenant}` standing for the job's tenant. Unset, the `default` tenant (a server without tenants: no keys, or keys
without one) may name any location, as before there was a setting, and every other tenant none.

Each call to an object store is bounded by IMGSERVE_REMOTE_TIMEOUT_S, the storage client's own retries included:
gcsfs retries an unreachable host six times with backoff (about 49 s per item, during which the tenant's next job
waited), botocore's defaults allow minutes. One call is the read or write of one object (past the bound the item
fails `unreadable_input` / `unwritable_output`), the check that one stored object is there (`exists_remote`: a HEAD),
or one page of a listing (serving.jobs.remote_listing). Within the bound a transient failure (the store's 5xx or
throttling, a refused or reset connection, a timeout: `transient_storage_error`) is tried again after a growing pause
(`RETRY_FIRST_DELAY_S` doubling up to `RETRY_MAX_DELAY_S`); an answer (no such object, access refused, no credentials)
is never retried, and a failure still there at the bound is the call's error.
"""

import asyncio
import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.jobs.errors import UriNotAllowedError, installed_classes, storage_error_text
from serving.security.principal import DEFAULT_TENANT, check_tenant

logger = logging.getLogger("imgserve.jobs")
ANY_REMOTE = "*"
REMOTE_TIMEOUT_ENV = "IMGSERVE_REMOTE_TIMEOUT_S"
DEFAULT_REMOTE_TIMEOUT_S = 20.0
MAX_REMOTE_TIMEOUT_S = 3600.0
TENANT_PLACEHOLDER = "{tenant}"
RETRY_FIRST_DELAY_S = 0.1  # the pause before a transient failure is tried again, doubled each time up to the next
RETRY_MAX_DELAY_S = 2.0
# What an object store answers when it is busy or briefly failing, beside a 5xx or 429 status: S3's error codes (a
# HEAD's error has no body, so its code is the status) and its 400 RequestTimeout (the connection idled out).
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
    | {"RequestTimeout", "InternalError", "ServiceUnavailable"}
)
# s3fs's translations of a 5xx or throttling answer into an OSError (EBUSY: 503 / SlowDown, EREMOTEIO: 500)
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, getattr(errno, "EREMOTEIO", 121)})
# The clients' own connection failures (none an OSError): botocore's (reset, refused, read timeout), aiohttp's (gcsfs
# and s3fs's transport), google-auth's network failure while fetching a token.
_CONNECTION_ERRORS = {
    "botocore.exceptions": ("HTTPClientError", "ConnectionError"),
    "aiohttp": ("ClientConnectionError", "ClientPayloadError"),
    "google.auth.exceptions": ("TransportError",),
}
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


def checked_remote_timeout_s(env: Mapping[str, str] | None = None) -> float:
    """IMGSERVE_REMOTE_TIMEOUT_S, or ValueError naming it for anything but seconds in (0, 3600]: `imgserve serve`
    refuses to start with such a value."""
    raw = (os.environ if env is None else env).get(REMOTE_TIMEOUT_ENV, "")
    if not raw.strip():
        return DEFAULT_REMOTE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_REMOTE_TIMEOUT_S:  # NaN fails this too
        raise ValueError(f"{REMOTE_TIMEOUT_ENV}={raw!r}: expected seconds > 0, at most {MAX_REMOTE_TIMEOUT_S:g}")
    return value


def remote_timeout_s(env: Mapping[str, str] | None = None) -> float:
    """IMGSERVE_REMOTE_TIMEOUT_S: the longest one s3:// / gs:// call may take (an object's read or write, a HEAD, a
    page of a listing), every retry included (default 20 s). `imgserve serve` refuses a value that is not seconds in
    (0, 3600] (`checked_remote_timeout_s`); a server started otherwise logs it and uses the default: an item must
    not fail for the server's setting."""
    try:
        return checked_remote_timeout_s(env)
    except ValueError:
        raw = (os.environ if env is None else env).get(REMOTE_TIMEOUT_ENV, "")
        logger.warning(
            "%s=%r is not seconds in (0, %g]; using %g",
            REMOTE_TIMEOUT_ENV,
            raw,
            MAX_REMOTE_TIMEOUT_S,
            DEFAULT_REMOTE_TIMEOUT_S,
        )
        return DEFAULT_REMOTE_TIMEOUT_S


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    return installed_classes(_CONNECTION_ERRORS)


def _transient_answer(error: BaseException) -> bool | None:
    """For an object store's error answer (botocore's ClientError, gcsfs's HttpError), whether it says to try again
    (a 5xx or 429 status, a throttling code); None for an error that is no such answer."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else int(code) if code.isdigit() else 0
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    code = getattr(error, "code", None)
    if type(error).__name__ == "HttpError" and isinstance(code, int):  # gcsfs's
        return code >= 500 or code == 429
    return None


def transient_storage_error(exc: BaseException) -> bool:
    """Whether trying again may clear `exc` (or what it was translated from): the store's 5xx or 429, throttling, a
    refused, reset or dropped connection, a timeout. No: a missing object, a refused request (403, 400), missing
    credentials, which are the store's answer."""
    error: BaseException | None = exc
    for _ in range(8):  # the chain of translations (s3fs raises an OSError from botocore's ClientError)
        if error is None or isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            return False
        answer = _transient_answer(error)
        if answer is not None:
            return answer
        if isinstance(error, (TimeoutError, ConnectionError, *_connection_errors())):
            return True
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def bounded_call(filesystem: Any, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`await call(*args)` on the loop of an async fsspec filesystem (s3fs, gcsfs), tried again after a transient
    failure, all of it cancelled after `remote_timeout_s` with a TimeoutError (an OSError) that names the setting and
    the last transient failure."""
    from fsspec.asyn import sync
    from fsspec.exceptions import FSTimeoutError

    timeout = remote_timeout_s()
    last: list[BaseException] = []

    async def attempts() -> Any:
        delay = RETRY_FIRST_DELAY_S
        while True:
            try:
                return await call(*args)
            except Exception as exc:
                if not transient_storage_error(exc):
                    raise
                last[:] = [exc]
                logger.debug("object store call failed, trying again in %g s: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)

    try:
        return sync(filesystem.loop, attempts, timeout=timeout)
    except FSTimeoutError:
        reason = f"; last failure: {storage_error_text(last[0])}" if last else ""
        raise TimeoutError(
            f"no answer from the object store within {timeout:g} s ({REMOTE_TIMEOUT_ENV}){reason}"
        ) from None


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

    return bytes(bounded_call(filesystem, read))


def write_remote(filesystem: Any, path: str, data: bytes) -> None:
    """Write `data` as the object at `path`; for an async filesystem in one bounded call."""
    call_remote(filesystem, "pipe_file", path, data)


def call_remote(filesystem: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """`filesystem.<method>(*args, **kwargs)`; for an async filesystem (s3fs, gcsfs) its coroutine `_<method>` in
    one bounded call (`bounded_call`)."""
    from fsspec.asyn import AsyncFileSystem

    if not isinstance(filesystem, AsyncFileSystem):
        return getattr(filesystem, method)(*args, **kwargs)
    return bounded_call(filesystem, functools.partial(getattr(filesystem, f"_{method}"), **kwargs), *args)


def exists_remote(filesystem: Any, path: str) -> bool:
    """Whether an object is at `path`, asked of the store itself (a HEAD; any listing cache dropped first); for an
    async filesystem in one bounded call. A failure that is not "no such object" is raised."""
    from fsspec.asyn import AsyncFileSystem

    filesystem.invalidate_cache(path)
    if not isinstance(filesystem, AsyncFileSystem):
        return bool(filesystem.exists(path))

    async def head() -> bool:
        try:
            await filesystem._info(path)
        except FileNotFoundError:
            return False
        return True

    return bool(bounded_call(filesystem, head))
