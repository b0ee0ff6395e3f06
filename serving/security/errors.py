"""Security errors, mapped to HTTP and gRPC like every `ServiceError` (serving.errors.classify_error)."""

from serving.errors import ServiceError


class UnauthenticatedError(ServiceError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    kind = "unauthenticated"


class PermissionDeniedError(ServiceError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    kind = "permission_denied"


class RateLimitedError(ServiceError):
    """Too many requests for this key: retry after `retry_after_s` (the `Retry-After` header, rounded up)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceededError(RateLimitedError):
    kind = "quota_exceeded"
