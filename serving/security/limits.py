"""Per-key rate limits (token buckets) and daily image quotas, with their state in the shared database.

Rate limits: each key with a rate has one token bucket in `rate_buckets` (capacity `burst`, refilled at `rate_per_s`).
A replica takes tokens from it in small leases (a tenth of a second's worth, at least one) and spends them
locally, so the limit holds across every replica and process (they share the bucket row; the transaction that
takes a lease is serialised by SQLite's write lock or PostgreSQL's row lock) while a fast key costs at most ~10
database writes per second per replica. Leased tokens not spent within a second lapse, so a limit is never
exceeded, only (slightly) under-used. The bucket's time only moves forward, so replicas whose clocks differ (by up
to `MAX_CLOCK_SKEW_S`) refill it at its rate, not faster. Keys without a rate never touch the database here. A JWT
caller has the bucket of its `jwt:` id, with the server's IMGSERVE_JWT_RATE / IMGSERVE_JWT_BURST
(serving.security.settings). A replica keeps a key's lease only while it can hold tokens: lapsed leases are dropped
every `LEASE_SWEEP_S`, so its memory follows the keys in use, not every key seen since it started (the limiter is
reached only after authentication: made-up key ids never get a lease). Dropping a lapsed lease loses nothing and
cannot refill a bucket early, since the bucket is the database row.

Quotas: images are counted per key and UTC day in `usage_daily`. Counts are added in memory and written every
second; a request is refused when the stored count plus what this replica has not written yet would pass the
key's or the tenant's daily quota, so with N replicas a quota can be overshot by at most N seconds of traffic.
A synchronous request is charged before its work; `SecurityGate.refund_failed` (serving.security.gate) is how the
code doing the work gives the images back when it fails on the server's side (a 5xx); a client error keeps the charge.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from serving.errors import retry_after_value
from serving.security.errors import QuotaExceededError, RateLimitedError
from serving.security.principal import Principal
from serving.security.tables import rate_buckets, usage_daily

logger = logging.getLogger("imgserve.security")
LEASE_S = 0.1  # a lease is this many seconds of a key's rate (at least one token)
LEASE_TTL_S = 1.0
MAX_CLOCK_SKEW_S = 60.0  # replicas' clocks this far apart share a bucket exactly (see `_take_lease`)
LEASE_SWEEP_S = 10.0  # how often a replica drops the leases of keys idle past LEASE_TTL_S


def _insert_ignore(conn: sa.Connection, table: sa.Table, values: dict[str, object]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


@dataclass
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lapsed(self, now: float) -> bool:
        """Holds no token that may still be spent, and no request is using it: dropping it changes nothing."""
        return (self.tokens <= 0 or now >= self.expires) and not self.lock.locked()


def quota_refusal(quota: int, used: int, images: int, whose: str) -> str:
    """Why a request of `images` is refused: the daily quota is used up, or this request would exceed it (a request of
    several images when fewer are left: the quota is not used up yet, and a smaller request still passes)."""
    if used >= quota:
        return f"daily quota of {quota} images for this {whose} is used up ({used} used today, UTC)"
    return (
        f"this request's {images} images would exceed the daily quota of {quota} images for this {whose} ({used} used"
        f" today, {quota - used} left, UTC)"
    )


class RateLimiter:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._leases: dict[str, _Lease] = {}  # key id -> its lease, while it can hold tokens (see `_sweep`)
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        """Drop the lapsed leases, at most every LEASE_SWEEP_S (a pass over the dict, amortised over requests).
        A request that was waiting on a dropped lease's lock goes on with it; the next one makes a new lease: at
        worst two leases of one key ask the database at once, which grants each only tokens the bucket has."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + LEASE_SWEEP_S
        for key_id in [key_id for key_id, lease in self._leases.items() if lease.lapsed(now)]:
            del self._leases[key_id]

    def _take_lease(self, key_id: str, rate: float, burst: int, want: int) -> tuple[int, float]:
        """(tokens granted, seconds until one token is available when none were)."""
        now = time.time()
        with self.engine.begin() as conn:
            _insert_ignore(conn, rate_buckets, {"key_id": key_id, "tokens": float(burst), "updated_at": now})
            query = sa.select(rate_buckets).where(rate_buckets.c.key_id == key_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one()
            # A replica whose clock is behind the last writer's adds nothing and keeps the later time: moving it back
            # let the replica ahead count the difference again at its next lease (two replicas 0.5 s apart, leasing
            # in turn, admitted every request of a key). More than MAX_CLOCK_SKEW_S behind: a clock stepped back,
            # whose time the bucket starts again from (an hour's step must not stop the key for an hour).
            behind = row.updated_at - now
            stamp = row.updated_at if 0.0 < behind <= MAX_CLOCK_SKEW_S else now
            tokens = min(float(burst), row.tokens + max(0.0, now - row.updated_at) * rate)
            granted = min(want, math.floor(tokens))
            conn.execute(
                rate_buckets.update()
                .where(rate_buckets.c.key_id == key_id)
                .values(tokens=tokens - granted, updated_at=stamp)
            )
        return granted, (0.0 if granted else (1.0 - tokens) / rate + (stamp - now))

    async def take(self, principal: Principal) -> None:
        """Spend one request token of `principal`'s key; raises RateLimitedError when there is none."""
        if principal.rate_per_s is None or principal.key_id is None:
            return
        self._sweep(time.monotonic())
        lease = self._leases.setdefault(principal.key_id, _Lease())
        async with lease.lock:
            now = time.monotonic()
            if lease.tokens <= 0 or now >= lease.expires:
                rate, burst = principal.rate_per_s, principal.burst or max(1, int(principal.rate_per_s))
                want = max(1, min(burst, int(rate * LEASE_S)))
                granted, wait = await asyncio.to_thread(self._take_lease, principal.key_id, rate, burst, want)
                if not granted:
                    raise RateLimitedError(
                        f"rate limit of {rate:g} requests/s for this {'key' if principal.source == 'key' else 'caller'}"
                        f" exceeded; retry after {retry_after_value(wait)} s",  # what the Retry-After header says
                        wait,
                    )
                lease.tokens, lease.expires = granted, now + LEASE_TTL_S
            lease.tokens -= 1


def utc_day(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


def _usage_id(principal: Principal) -> str:
    return principal.key_id or f"{principal.source}:{principal.tenant}"


class UsageMeter:
    """Counts images per key and day; refuses a request that would pass the key's or tenant's daily quota."""

    def __init__(self, engine: sa.Engine, flush_s: float = 1.0):
        self.engine, self.flush_s = engine, flush_s
        self._pending: dict[tuple[str, str, str], int] = {}  # (key id, tenant, day) -> images not written yet
        self._writing: dict[tuple[str, str, str], int] = {}  # counts a flush is writing now: still counted
        self._flushes = 0  # finished flushes: a read that spans one is stale
        self._stored_key: dict[tuple[str, str], int] = {}  # (key id, day) -> count at the last read
        self._stored_tenant: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def _read(self, key_id: str, tenant: str, day: str) -> tuple[int, int]:
        with self.engine.begin() as conn:
            by_key = conn.execute(
                sa.select(usage_daily.c.images).where(usage_daily.c.key_id == key_id, usage_daily.c.day == day)
            ).scalar()
            by_tenant = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(usage_daily.c.images), 0)).where(
                    usage_daily.c.tenant == tenant, usage_daily.c.day == day
                )
            ).scalar()
        return int(by_key or 0), int(by_tenant or 0)

    def _write(self, pending: dict[tuple[str, str, str], int]) -> None:
        with self.engine.begin() as conn:
            for (key_id, tenant, day), images in pending.items():
                values = {"key_id": key_id, "day": day, "tenant": tenant, "images": 0}
                _insert_ignore(conn, usage_daily, values)
                conn.execute(
                    usage_daily.update()
                    .where(usage_daily.c.key_id == key_id, usage_daily.c.day == day)
                    .values(images=usage_daily.c.images + images)
                )

    async def flush(self) -> None:
        """Write the pending counts; forget the stored ones so the next check reads what every replica wrote."""
        pending, self._pending = self._pending, {}
        self._writing = pending  # until the stored counts are re-read, `charge` must still see these
        if pending:
            try:
                await asyncio.to_thread(self._write, pending)
            except Exception:  # noqa: BLE001 - keep the counts for the next flush
                logger.exception("could not write usage counts")
                for slot, images in pending.items():
                    self._pending[slot] = self._pending.get(slot, 0) + images
        # No await between these: the written counts move from `_writing` to the next database read at once.
        self._writing = {}
        self._flushes += 1
        self._stored_key.clear()
        self._stored_tenant.clear()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    def refund(self, principal: Principal, images: int) -> None:
        """Take back `images` that `charge` counted (a request refused after it); written with the next flush."""
        slot = (_usage_id(principal), principal.tenant, utc_day())
        self._pending[slot] = self._pending.get(slot, 0) - images

    async def charge(self, principal: Principal, images: int, tenant_quota: int | None = None) -> None:
        """Count `images` for the caller; QuotaExceededError (nothing counted) when a daily quota would pass."""
        key_id = _usage_id(principal)
        day = utc_day()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())
        quotas = (principal.quota_images_per_day, tenant_quota)
        if any(q is not None for q in quotas):
            while (key_id, day) not in self._stored_key:
                flushes = self._flushes
                by_key, by_tenant = await asyncio.to_thread(self._read, key_id, principal.tenant, day)
                if flushes == self._flushes:  # else a flush finished meanwhile: the read may miss what it wrote
                    self._stored_key[(key_id, day)] = by_key
                    self._stored_tenant[(principal.tenant, day)] = by_tenant
            unstored = (self._pending, self._writing)
            pending_key = sum(counts.get((key_id, principal.tenant, day), 0) for counts in unstored)
            pending_tenant = sum(
                n for counts in unstored for (_, t, d), n in counts.items() if t == principal.tenant and d == day
            )
            used_key = self._stored_key[(key_id, day)] + pending_key
            used_tenant = self._stored_tenant.get((principal.tenant, day), 0) + pending_tenant
            for quota, used, whose in ((quotas[0], used_key, "key"), (quotas[1], used_tenant, "tenant")):
                if quota is not None and used + images > quota:
                    raise QuotaExceededError(quota_refusal(quota, used, images, whose), seconds_to_utc_midnight())
        slot = (key_id, principal.tenant, day)
        self._pending[slot] = self._pending.get(slot, 0) + images
