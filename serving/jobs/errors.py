"""Errors of the batch-job API; service errors, so the HTTP edge answers them as JSON with their status."""

import functools
import importlib

from serving.errors import ServiceError

# What the object-store clients raise, beside OSError, for a location they cannot use: botocore's BotoCoreError
# (NoCredentialsError, PartialCredentialsError, ...) and an untranslated ClientError, google.auth's GoogleAuthError
# (DefaultCredentialsError, RefreshError) and gcsfs's HttpError. None is an OSError: they were internal errors (500).
_STORAGE_CLIENT_ERRORS = {
    "botocore.exceptions": ("BotoCoreError", "ClientError"),
    "google.auth.exceptions": ("GoogleAuthError",),
    "gcsfs.retry": ("HttpError",),
}


class JobNotFoundError(ServiceError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "unknown_job"


class JobStateError(ServiceError):
    """The job is not in a state that allows the operation (cancel a finished job, add items to a started one)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    kind = "conflict"


class UriNotAllowedError(ServiceError):
    """A URI with a refused scheme, or a file:// URI outside the allowed root (or none is configured)."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    kind = "forbidden_uri"


class InvalidArchiveError(ServiceError):
    """Not a zip/tar archive, or one too damaged to list."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    kind = "invalid_archive"


class JobStoreUnavailableError(ServiceError):
    """The job store could not be opened (migrated): the same answer as an outage while it runs."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    kind = "store_unavailable"
    retry_after_s = 5.0


class ItemInputError(ValueError):
    """Why one item cannot be processed (unsafe archive entry, unreadable URI); recorded, never raised to clients."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)  # both in args: the exception pickles
        self.kind, self.message = kind, message

    def __str__(self) -> str:
        return self.message


class JobPurgedError(RuntimeError):
    """The item's job was purged while the item ran: nothing of the item may be written any more (never a result)."""


class CollectionNotFoundError(ServiceError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "unknown_collection"


class ImageNotFoundError(ServiceError):
    """No such image in the collection, or it can no longer be read from where it was analysed."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "unknown_image"


@functools.cache
def storage_client_errors() -> tuple[type[Exception], ...]:
    """The exception classes of the installed object-store clients that mean "this location cannot be used" (no or
    wrong credentials, a refused request); imported on the first failure, so a server without s3fs / gcsfs never
    loads them. Use as `except storage_client_errors() as exc` (evaluated only when an exception is matched)."""
    return installed_classes(_STORAGE_CLIENT_ERRORS)


def installed_classes(names_by_module: dict[str, tuple[str, ...]]) -> tuple[type[Exception], ...]:
    """The named classes of those modules that are installed (a module that is not, or a name it lacks, is left out)."""
    found: list[type[Exception]] = []
    for module_name, names in names_by_module.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(found)


def storage_error_text(exc: BaseException) -> str:
    """A client-facing reason for an object-store failure: what the client raised and its message, with a hint when
    the server has no credentials for the store (the first thing to check)."""
    name = type(exc).__name__
    text = f"{name}: {exc}" if str(exc) else name
    if "Credentials" in name or "credentials" in str(exc).lower():
        return f"{text} (the server has no usable credentials for this object store)"
    return text
