"""Errors of the batch-job API; service errors, so the HTTP edge answers them as JSON with their status."""

from serving.errors import ServiceError


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
