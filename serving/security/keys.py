"""API keys: `isk_<id>_<secret>`, stored as a SHA-256 of the whole key, never the key itself.

The recognisable `isk_` prefix lets secret scanners find leaked keys; the 12-hex-digit id is public (it names the
key in `imgserve keys list`, the audit log and metrics) and the 32 random bytes after it are the secret. A plain
SHA-256 is the right hash for a 256-bit random secret (no dictionary to slow down), and it is cheap on the hot path.
"""

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from serving.security.principal import Principal, Role, check_role, check_tenant
from serving.security.tables import api_keys, tenants

KEY_PREFIX = "isk_"
KEY_PATTERN = re.compile(r"^isk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_key() -> tuple[str, str]:
    """(key id, whole key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = KEY_PATTERN.match(key)
    return match.group(1) if match else None


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    tenant: str
    role: Role
    rate_per_s: float | None
    burst: int | None
    quota_images_per_day: int | None
    created_at: float
    revoked_at: float | None

    def principal(self) -> Principal:
        return Principal(
            key_id=self.id,
            tenant=self.tenant,
            role=self.role,
            source="key",
            rate_per_s=self.rate_per_s,
            burst=self.burst,
            quota_images_per_day=self.quota_images_per_day,
        )

    def public(self) -> dict[str, object]:
        """What listings show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "tenant": self.tenant,
            "role": self.role,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "quota_images_per_day": self.quota_images_per_day,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class StoredKey:
    """A key's record and the SHA-256 of the whole key: what a replica caches to check a key without the database."""

    record: KeyRecord
    secret_sha256: str

    def accepts(self, key: str) -> bool:
        """True when `key` is this key and it is not revoked."""
        return self.record.revoked_at is None and hmac.compare_digest(self.secret_sha256, key_hash(key))


# Keys this process made: a replica's list of key ids (serving.security.key_ids) is read again when it changes, so a
# key works at once in the process that made it.
_made_here = [0]


def keys_made_here() -> int:
    return _made_here[0]


def _record(row: sa.Row) -> KeyRecord:
    return KeyRecord(
        row.id,
        row.name,
        row.tenant,
        row.role,
        row.rate_per_s,
        row.burst,
        row.quota_images_per_day,
        row.created_at,
        row.revoked_at,
    )


def ensure_tenant(conn: sa.Connection, tenant: str) -> None:
    """A tenants row exists for `tenant` (its settings default to none; a webhook secret is made on first use)."""
    if conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant)).first() is None:
        conn.execute(tenants.insert().values(id=tenant, created_at=time.time(), anonymize=False))


class KeyStore:
    """Keys in the job database (synchronous: call through asyncio.to_thread on an event loop)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def create(
        self,
        name: str,
        role: str,
        tenant: str,
        rate_per_s: float | None = None,
        burst: int | None = None,
        quota_images_per_day: int | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: (its record, the key itself — shown once, never stored)."""
        check_role(role)
        check_tenant(tenant)
        if not name or len(name) > 128:
            raise ValueError("name must be 1-128 characters")
        if rate_per_s is not None and not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError("rate must be > 0 requests/s")
        if burst is not None and burst < 1:  # a negative burst made the key unlimited
            raise ValueError("burst must be at least 1 request")
        if burst is not None and rate_per_s is None:  # it was stored and did nothing: no rate, no bucket
            raise ValueError("--burst needs --rate: a burst is the size of the rate limit's bucket")
        if quota_images_per_day is not None and quota_images_per_day < 0:
            raise ValueError("quota must be >= 0 images/day")
        if rate_per_s is not None and burst is None:
            burst = max(1, int(rate_per_s))  # one second's worth: a client may send its rate in one go
        key_id, key = new_key()
        with self.engine.begin() as conn:
            ensure_tenant(conn, tenant)
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    name=name,
                    tenant=tenant,
                    role=role,
                    secret_sha256=key_hash(key),
                    rate_per_s=rate_per_s,
                    burst=burst,
                    quota_images_per_day=quota_images_per_day,
                    created_at=time.time(),
                )
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one()
        _made_here[0] += 1
        return _record(row), key

    def revoke(self, key_id: str) -> KeyRecord:
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyError(key_id)
        return _record(row)

    def ids(self, limit: int, since: float | None = None) -> list[str]:
        """Ids of the keys, revoked ones too (their use is refused under their id), at most `limit` of them; with
        `since` (UNIX seconds), only those made at or after it."""
        query = sa.select(api_keys.c.id).limit(limit)
        if since is not None:
            query = query.where(api_keys.c.created_at >= since)
        with self.engine.begin() as conn:
            return [str(key_id) for key_id in conn.execute(query).scalars()]

    def list(self, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.begin() as conn:
            return [_record(row) for row in conn.execute(query)]

    def count_active(self) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(api_keys.c.revoked_at.is_(None))).scalar() or 0)

    def stored(self, key_id: str) -> StoredKey | None:
        """The key named `key_id` (revoked ones too), or None."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else StoredKey(_record(row), row.secret_sha256)

    def verify(self, key: str) -> KeyRecord | None:
        """The active key `key` is, or None (malformed, unknown, wrong secret or revoked)."""
        key_id = parse_key(key)
        stored = None if key_id is None else self.stored(key_id)
        return stored.record if stored is not None and stored.accepts(key) else None
