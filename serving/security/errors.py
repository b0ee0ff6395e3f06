"""Security errors, mapped to HTTP and gRPC like every `ServiceError` (serving.errors.classify_error)."""

from serving.errors import ServiceError


class UnauthenticatedError(ServiceError):
    """`key_id`, `tenant`: the id and tenant of an existing API key refused (revoked, or a wrong secret), for the
    audit log; None when the credentials name no known key (those refusals are counted per client address instead
    of written one by one)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    kind = "unauthenticated"

    def __init__(self, message: str, key_id: str | None = None, tenant: str | None = None):
        super().__init__(message)
        self.key_id, self.tenant = key_id, tenant


class PermissionDeniedError(ServiceError):
    """A known caller whose role (or tenant) may not do this. Raised by the security gate, or inside a service (purging
    a job needs an admin, another tenant's model name): `audited` is set once it is in the audit log, so the edge
    that answers it (serving.security.gate `audit_refusal`) writes each refusal once."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    kind = "permission_denied"
    audited = False


class RateLimitedError(ServiceError):
    """Too many requests for this key: retry after `retry_after_s` (the `Retry-After` header, rounded up)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceededError(RateLimitedError):
    """A daily image quota (refused and audited by the gate) or a tenant's stored-bytes quota (refused by the job
    store, audited by the edge that answers it): `audited` as for PermissionDeniedError."""

    kind = "quota_exceeded"
    audited = False
