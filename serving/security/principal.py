"""Who is calling (a `Principal`), the four roles, and which role each HTTP route and gRPC method needs.

Roles are ordered; each includes the rights of the ones before it:
- viewer: read its own tenant's jobs and results, list models;
- analyst: + classify / analyze / metadata / OIP inference / batch jobs (submit, add items, start, cancel);
- operator: of the server's own tenant (`default`): + `/metrics`, `/v1/status` (server-wide: every tenant's names
  and figures) and read every tenant's jobs, training jobs and collections (a version they register is served to
  everyone only when it is promoted);
- admin: + keys, the audit log (its own tenant's entries; every tenant's for `default`), purge, model control (load,
  unload, promote).
Changes to a job (cancel, purge) stay inside the caller's tenant whatever the role; another tenant's job is a 404.
An operator or admin key of another tenant is that customer's own: it reads its tenant's jobs and audit entries only.
"""

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "analyst", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "analyst", "operator", "admin")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_TENANT = "default"


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):  # `$` also matched before a final "\n"
        raise ValueError(f"tenant must be 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit), got {tenant!r}")
    return tenant


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `key_id` is the API key's public id (a JWT's: `authenticator.jwt_key_id`); never
    the secret."""

    key_id: str | None
    tenant: str
    role: Role
    source: Literal["key", "jwt", "anonymous", "job"] = "key"  # job: the batch loop working for a job's tenant
    rate_per_s: float | None = None
    burst: int | None = None
    quota_images_per_day: int | None = None

    def has(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def reads_all_tenants(self) -> bool:
        """The server's own operators and admins (tenant `default`: support); another tenant's are its customer's."""
        return self.has("operator") and self.tenant == DEFAULT_TENANT

    def read_scope(self) -> str | None:
        """The tenant whose jobs this caller may read; None = every tenant."""
        return None if self.reads_all_tenants else self.tenant


# With IMGSERVE_AUTH=off (loopback only) every request acts as this principal.
ANONYMOUS = Principal(key_id=None, tenant=DEFAULT_TENANT, role="admin", source="anonymous")

# Server-wide figures (label values name every tenant, model and route): only for the server's own staff
# (`Principal.reads_all_tenants`); another tenant's operator is a customer's and gets 403.
SERVER_WIDE_PATHS = frozenset({"/metrics", "/v1/status"})
SERVER_WIDE_GRPC_METHODS = frozenset({"ModelStatistics"})


def is_statistics_path(path: str) -> bool:
    """Triton's statistics routes: /v2/models/stats, /v2/models/{m}/stats, /v2/models/{m}/versions/{v}/stats."""
    return path.startswith("/v2/models/") and path.endswith("/stats")


def is_server_wide(path: str) -> bool:
    return path in SERVER_WIDE_PATHS or is_statistics_path(path)


# Liveness/readiness probes: answered without credentials (Kubernetes and load balancers cannot send keys).
OPEN_HTTP_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
OPEN_GRPC_METHODS = frozenset({"ServerLive", "ServerReady", "Check", "Watch"})

GRPC_ROLES: dict[str, Role] = {
    "ServerMetadata": "viewer",
    "ModelMetadata": "viewer",
    "ModelConfig": "viewer",
    "ModelReady": "viewer",
    "RepositoryIndex": "viewer",
    "ModelStatistics": "operator",  # server-wide, as GET /v2/models/stats
    "ListModels": "viewer",
    "ModelInfer": "analyst",
    "ModelStreamInfer": "analyst",
    "Classify": "analyst",
    "Analyze": "analyst",
    "AnalyzeStream": "analyst",
    "Convert": "analyst",
    "Enhance": "analyst",
}

# (method, path prefix or exact path) -> role; the first match wins. Anything not listed needs admin (closed
# by default: a new route is not open to viewers until it is listed here).
_HTTP_RULES: tuple[tuple[frozenset[str], str, bool, Role], ...] = (
    (frozenset({"GET"}), "/metrics", True, "operator"),
    (frozenset({"GET"}), "/v1/status", True, "operator"),
    (frozenset({"GET"}), "/v1/audit", True, "admin"),
    (frozenset({"GET"}), "/v1/models", True, "viewer"),
    (frozenset({"GET"}), "/v1/whoami", True, "viewer"),
    (frozenset({"GET"}), "/v1/categories", True, "viewer"),
    (frozenset({"GET"}), "/v1/jobs", False, "viewer"),
    (frozenset({"GET"}), "/v1/collections", False, "viewer"),
    (frozenset({"GET"}), "/v1/training-jobs", False, "viewer"),
    (frozenset({"POST"}), "/v1/training-jobs", False, "operator"),
    (frozenset({"DELETE"}), "/v1/collections/", False, "analyst"),
    (frozenset({"POST"}), "/v1/classify", True, "analyst"),
    (frozenset({"POST"}), "/v1/analyze", True, "analyst"),
    (frozenset({"POST"}), "/v1/metadata", True, "analyst"),
    (frozenset({"POST"}), "/v1/convert", True, "analyst"),
    (frozenset({"POST"}), "/v1/enhance", True, "analyst"),
    (frozenset({"GET"}), "/v1/formats", True, "viewer"),
    (frozenset({"GET"}), "/v1/enhance/options", True, "viewer"),
    (frozenset({"POST"}), "/v1/batch", True, "analyst"),
    (frozenset({"POST", "DELETE"}), "/v1/jobs/", False, "analyst"),
    (frozenset({"POST"}), "/v2/models/", False, "analyst"),
    (frozenset({"POST"}), "/v2/repository/index", True, "viewer"),  # Triton's list of models (gRPC: viewer too)
    (frozenset({"GET"}), "/v2", False, "viewer"),
    (frozenset({"GET"}), "/openapi.json", True, "viewer"),
)


def http_role(method: str, path: str) -> Role | None:
    """The role a request needs; None for the open probes, the web UI's static pages and /docs (they hold no data:
    every figure they show comes from the API with the person's key). HEAD is treated as GET."""
    if path in OPEN_HTTP_PATHS:
        return None
    method = "GET" if method == "HEAD" else method
    if method == "GET" and (path in ("/ui", "/docs") or path.startswith("/ui/")):
        return None
    if method == "GET" and is_statistics_path(path):  # every tenant's traffic, as /metrics (not a viewer's /v2 GET)
        return "operator"
    for methods, pattern, exact, role in _HTTP_RULES:
        if method in methods and (path == pattern if exact else path.startswith(pattern)):
            return role
    return "admin"


def grpc_role(method: str) -> Role | None:
    if method in OPEN_GRPC_METHODS:
        return None
    return GRPC_ROLES.get(method, "admin")
