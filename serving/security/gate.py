"""The one check every request passes before any work: authenticate, authorise the role, rate-limit.

The HTTP middleware (serving.http.auth) and the gRPC edge (serving.grpc.edge) both call `SecurityGate.admit`;
the admitted `Principal` is kept in a context variable for the rest of the request (the service charges images
to it, the job routes scope jobs by its tenant). Refusals are audited and counted.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Literal

import sqlalchemy as sa

from serving.errors import ServiceError, classify_error, unwrap
from serving.security.audit import AuditEntry, AuditWriter
from serving.security.authenticator import Authenticator, one_authorization
from serving.security.errors import (
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    UnauthenticatedError,
)
from serving.security.limits import RateLimiter, UsageMeter
from serving.security.principal import ANONYMOUS, DEFAULT_TENANT, Principal, Role
from serving.security.settings import SecuritySettings
from serving.security.tenants import TenantPolicy, TenantStore

logger = logging.getLogger("imgserve.security")
CURRENT_PRINCIPAL: ContextVar[Principal | None] = ContextVar("imgserve_principal", default=None)
# Where the admitted request came from: (client address, route or gRPC method), for refusals and audit entries
# written past the gate (an images-per-day quota, model control over gRPC).
CURRENT_ORIGIN: ContextVar[tuple[str | None, str]] = ContextVar("imgserve_origin", default=(None, "quota"))
POLICY_CACHE_S = 5.0


def current_principal() -> Principal:
    """The caller of the request being handled (ANONYMOUS when auth is off or outside a request)."""
    return CURRENT_PRINCIPAL.get() or ANONYMOUS


def current_client() -> str | None:
    """The address of the client the gate admitted for the current request (None outside one)."""
    return CURRENT_ORIGIN.get()[0]


class SecurityGate:
    def __init__(self, mode: Literal["required", "off"], engine: sa.Engine | None, settings: SecuritySettings):
        if mode == "required" and engine is None:
            raise ValueError("auth required needs the key database")
        self.mode, self.engine, self.settings = mode, engine, settings
        self.authenticator = Authenticator(engine, settings) if engine is not None and mode == "required" else None
        self.limiter = RateLimiter(engine) if engine is not None else None
        self.usage = UsageMeter(engine) if engine is not None else None
        self.audit_writer = AuditWriter(engine) if engine is not None else None
        self.tenants = TenantStore(engine) if engine is not None else None
        self._policies: dict[str, tuple[float, TenantPolicy]] = {}

    @property
    def required(self) -> bool:
        return self.mode == "required"

    def audit(self, entry: AuditEntry) -> None:
        if self.audit_writer is not None:
            self.audit_writer.add(entry)

    def _refused(self, error: ServiceError, client: str | None, endpoint: str, who: Principal | None) -> None:
        """Counted, and audited: one by one for a known caller (or key id), counted per client address for
        credentials that name no one (serving.security.audit `add_repeated`)."""
        from serving.metrics import AUTH_REFUSED

        # a revoked key or a wrong secret names a known key: its id and tenant (a tenant's audit shows them)
        key_id, key_tenant = (error.key_id, error.tenant) if isinstance(error, UnauthenticatedError) else (None, None)
        AUTH_REFUSED.labels(who.tenant if who else key_tenant or "none", error.kind).inc()
        entry = AuditEntry.by(who, f"auth.{error.kind}", client, outcome="denied", target=endpoint)
        if isinstance(error, PermissionDeniedError | QuotaExceededError):
            error.audited = True
        if who is not None or key_id is not None or self.audit_writer is None:
            self.audit(replace(entry, key_id=key_id, tenant=key_tenant) if who is None else entry)
        else:
            self.audit_writer.add_repeated(entry)

    def audit_refusal(self, error: BaseException, client: str | None, endpoint: str) -> None:
        """Audit a refusal raised past the gate, inside a service (purging a job needs an admin, a model name
        another tenant trained, a tenant's stored-bytes quota), as the gate audits its own: `auth.permission_denied`
        or `auth.quota_exceeded` with the caller's key id, tenant and role, counted in imgserve_auth_refused_total.
        The edges call it for every error they answer; the gate's own refusals and other errors are left alone, so
        each refusal is written once."""
        original = unwrap(error)
        if isinstance(original, PermissionDeniedError | QuotaExceededError) and not original.audited:
            self._refused(original, client, endpoint, CURRENT_PRINCIPAL.get())

    async def admit(
        self,
        authorization: str | list[str] | None,
        client: str | None,
        role: Role | None,
        endpoint: str,
        rate: bool = True,
        server_wide: bool = False,
    ) -> Principal:
        """The caller, if it may do what `role` covers now; else raises 401 / 403 / 429 (audited). `authorization`:
        the request's header value, or every value it sent (the edges pass all: more than one is a 401). `rate=False`
        (a gRPC stream opening) checks the key and role without spending a request of the rate limit: each of
        the stream's messages is admitted as a request of its own. `server_wide` (`/metrics`, `/v1/status`): only
        for a caller that reads every tenant (the server's own operators and admins)."""
        if role is None:
            return ANONYMOUS  # an open probe: nothing is read or changed on anyone's behalf
        if not self.required:
            CURRENT_PRINCIPAL.set(ANONYMOUS)
            return ANONYMOUS
        assert self.authenticator is not None and self.limiter is not None
        principal: Principal | None = None
        try:
            credentials = one_authorization(authorization) if isinstance(authorization, list) else authorization
            principal = await self.authenticator.authenticate(credentials)
            if not principal.has(role):
                raise PermissionDeniedError(f"this key's role ({principal.role}) cannot do this; it needs {role}")
            if server_wide and not principal.reads_all_tenants:
                raise PermissionDeniedError(
                    f"{endpoint} is server-wide (every tenant's figures): it needs a key of the server's own tenant "
                    f"'{DEFAULT_TENANT}' (this key's tenant is '{principal.tenant}')"
                )
            if rate:
                await self.limiter.take(principal)
        except (UnauthenticatedError, PermissionDeniedError, RateLimitedError) as error:
            self._refused(error, client, endpoint, principal)
            raise
        CURRENT_PRINCIPAL.set(principal)
        CURRENT_ORIGIN.set((client, endpoint))
        return principal

    async def tenant_policy(self, tenant: str) -> TenantPolicy:
        if self.tenants is None:
            return TenantPolicy(tenant)
        cached = self._policies.get(tenant)
        now = time.monotonic()
        if cached is None or cached[0] <= now:
            policy = await asyncio.to_thread(self.tenants.policy, tenant)
            self._policies[tenant] = cached = (now + POLICY_CACHE_S, policy)
        return cached[1]

    async def charge_images(self, images: int) -> None:
        """Count the current caller's images against its quotas (429 `quota_exceeded` when one would pass)."""
        principal = CURRENT_PRINCIPAL.get()
        if not self.required or self.usage is None or principal is None or principal.source == "job":
            return  # auth off, or work the server does on its own (the batch loop: charged at submission)
        policy = await self.tenant_policy(principal.tenant)
        try:
            await self.usage.charge(principal, images, policy.quota_images_per_day)
        except RateLimitedError as error:
            self._refused(error, *CURRENT_ORIGIN.get(), principal)
            raise

    async def refund_images(self, images: int) -> None:
        """Give back `images` that `charge_images` counted for a request refused after it (stored-bytes quota)."""
        principal = CURRENT_PRINCIPAL.get()
        if self.required and self.usage is not None and principal is not None and principal.source != "job":
            self.usage.refund(principal, images)

    async def refund_failed(self, images: int, error: BaseException) -> None:
        """Give back the `images` a synchronous request was charged when it then failed on the server's side: a 5xx
        answer (internal, model_unavailable, overloaded, replica_unavailable, store_unavailable, storage_full), which
        the client did not cause and will send again. A client error (4xx: a bad image, a tensor of the wrong shape)
        keeps the charge, as does a request whose client went away (cancelled, not answered)."""
        if classify_error(error).http_status >= 500:
            await self.refund_images(images)

    async def anonymize_forced(self) -> bool:
        return (await self.tenant_policy(current_principal().tenant)).anonymize if self.required else False


def build_gate(
    settings: SecuritySettings, engine_factory: Callable[[], sa.Engine], bind_hosts: list[str]
) -> SecurityGate:
    """The gate of one replica: the key database (`engine_factory()`, migrated by the caller) is opened only when
    auth is required."""
    mode = settings.effective_auth(bind_hosts) if settings.auth == "auto" else settings.auth
    if mode == "off":
        return SecurityGate("off", None, settings)
    return SecurityGate("required", engine_factory(), settings)


_REPLICA_GATE: list[SecurityGate] = []


def set_replica_gate(gate: SecurityGate) -> None:
    """The gate the gRPC methods of this process use (the Ingress sets it; like serving.admission's limit)."""
    _REPLICA_GATE[:] = [gate]


def replica_gate() -> SecurityGate:
    """This replica's gate; auth off until an Ingress sets one (in-process tests, tools)."""
    if not _REPLICA_GATE:
        _REPLICA_GATE.append(SecurityGate("off", None, SecuritySettings(auth="off")))
    return _REPLICA_GATE[0]
