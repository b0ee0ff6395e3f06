"""Tenants' settings: forced anonymisation, daily image and stored-bytes quotas, the webhook signing secret."""

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from serving.security.keys import ensure_tenant
from serving.security.principal import check_tenant
from serving.security.tables import tenants

# After `imgserve tenants webhook-secret T --rotate`, deliveries carry a signature with the new secret and one with
# the old for this long: receivers switch to the new secret without rejecting a delivery meanwhile.
ROTATION_GRACE_S = 24 * 3600.0


@dataclass(frozen=True)
class TenantPolicy:
    id: str
    anonymize: bool = False
    quota_images_per_day: int | None = None
    quota_stored_bytes: int | None = None


class TenantStore:
    """Synchronous (call through asyncio.to_thread on an event loop); cached reads live in the gate."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def policy(self, tenant: str) -> TenantPolicy:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant)).first()
        if row is None:
            return TenantPolicy(tenant)
        return TenantPolicy(tenant, bool(row.anonymize), row.quota_images_per_day, row.quota_stored_bytes)

    def update(
        self,
        tenant: str,
        anonymize: bool | None = None,
        quota_images_per_day: int | None = None,
        quota_stored_bytes: int | None = None,
        clear_quotas: bool = False,
    ) -> TenantPolicy:
        check_tenant(tenant)
        if any(quota is not None and quota < 0 for quota in (quota_images_per_day, quota_stored_bytes)):
            raise ValueError("quotas are counts: 0 or more")
        values: dict[str, object] = {}
        if anonymize is not None:
            values["anonymize"] = anonymize
        if quota_images_per_day is not None or clear_quotas:
            values["quota_images_per_day"] = quota_images_per_day
        if quota_stored_bytes is not None or clear_quotas:
            values["quota_stored_bytes"] = quota_stored_bytes
        with self.engine.begin() as conn:
            ensure_tenant(conn, tenant)
            if values:
                conn.execute(tenants.update().where(tenants.c.id == tenant).values(**values))
        return self.policy(tenant)

    def webhook_secret(self, tenant: str, rotate: bool = False, create: bool = True) -> bytes | None:
        """The tenant's webhook signing secret, made on first use (or replaced with `rotate`: the replaced one is
        kept, and signs too, for `ROTATION_GRACE_S`). `create` False: None for a tenant without one (a read must not
        make one: it would replace the server's IMGSERVE_WEBHOOK_SECRET as this tenant's signing key at once)."""
        with self.engine.begin() as conn:
            ensure_tenant(conn, tenant)
            current = conn.execute(sa.select(tenants.c.webhook_secret).where(tenants.c.id == tenant)).scalar()
            if current and not rotate:
                return str(current).encode()
            if not current and not rotate and not create:
                return None
            fresh = "whsec_" + secrets.token_urlsafe(32)
            values: dict[str, object] = {"webhook_secret": fresh}
            if current:
                values |= {"previous_webhook_secret": current, "webhook_secret_rotated_at": time.time()}
            conn.execute(tenants.update().where(tenants.c.id == tenant).values(**values))
            return fresh.encode()

    def signing_secrets(self, tenant: str, now: float | None = None) -> tuple[bytes, ...]:
        """The secrets a delivery of `tenant` is signed with: its own (none when it has none), then the one its last
        rotation replaced while that is less than `ROTATION_GRACE_S` old."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant)).first()
        if row is None or not row.webhook_secret:
            return ()
        now = time.time() if now is None else now
        recent = row.webhook_secret_rotated_at is not None and now - row.webhook_secret_rotated_at < ROTATION_GRACE_S
        previous = (str(row.previous_webhook_secret).encode(),) if recent and row.previous_webhook_secret else ()
        return (str(row.webhook_secret).encode(), *previous)

    def list(self) -> list[dict[str, object]]:
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.id)).all()
        return [
            {
                "id": r.id,
                "anonymize": bool(r.anonymize),
                "quota_images_per_day": r.quota_images_per_day,
                "quota_stored_bytes": r.quota_stored_bytes,
                "webhook_secret": "set" if r.webhook_secret else None,
                "created_at": r.created_at,
            }
            for r in rows
        ]
