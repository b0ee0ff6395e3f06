"""The rate limiter's per-key leases do not pile up for the life of the process, and dropping one never gives a key
requests its bucket does not have (the bucket is the database row; a lease only holds tokens taken from it)."""

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.security import limits
from serving.security.errors import RateLimitedError, UnauthenticatedError
from serving.security.gate import SecurityGate
from serving.security.limits import RateLimiter
from serving.security.principal import Principal
from serving.security.settings import SecuritySettings

pytestmark = pytest.mark.unit


class FakeClock:
    """Stands in for the `time` module in serving.security.limits: wall and monotonic time move together, by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits, "time", fake)
    return fake


def key(n: int, rate: float = 10.0, burst: int = 10) -> Principal:
    return Principal(key_id=f"k{n}", tenant="t", role="analyst", rate_per_s=rate, burst=burst)


def test_idle_keys_leave_the_limiter(engine: sa.Engine, clock: FakeClock) -> None:
    """Every key id ever seen kept a lease for the life of the process (found by a review)."""

    async def run() -> None:
        limiter = RateLimiter(engine)
        for n in range(300):
            await limiter.take(key(n))
        assert len(limiter._leases) == 300  # all live: each holds tokens leased within the last second
        clock.now += 3600.0
        await limiter.take(key(1000))  # any request sweeps what has lapsed
        assert set(limiter._leases) == {"k1000"}

    asyncio.run(run())


def test_a_live_lease_is_not_dropped_and_a_drained_bucket_stays_drained(engine: sa.Engine, clock: FakeClock) -> None:
    """A sweep drops only leases whose tokens have lapsed; the drained key is still refused after its lease is gone
    (its bucket, in the database, is not reset to full), and gets its rate back as time refills the bucket."""
    slow = key(1, rate=0.01, burst=3)  # one token per 100 s

    async def run() -> None:
        limiter = RateLimiter(engine)
        for _ in range(3):
            await limiter.take(slow)
        with pytest.raises(RateLimitedError):
            await limiter.take(slow)
        clock.now += 60.0  # 0.6 of a token refilled
        for n in range(2, 50):  # other keys' requests sweep the lapsed lease away
            await limiter.take(key(n))
        assert "k1" not in limiter._leases
        with pytest.raises(RateLimitedError):
            await limiter.take(slow)  # still drained: dropping its lease gave it nothing
        clock.now += 40.0 + 1e-3  # now a whole token
        await limiter.take(slow)
        with pytest.raises(RateLimitedError):
            await limiter.take(slow)

        # a lease that still holds tokens survives a sweep
        fast = key(99, rate=100.0, burst=100)
        await limiter.take(fast)
        clock.now += 60.0
        limiter._leases["k99"].expires = clock.now + 0.5
        await limiter.take(key(98))
        assert "k99" in limiter._leases

    asyncio.run(run())


def test_unknown_key_ids_make_no_limiter_entries(engine: sa.Engine) -> None:
    """The limiter is reached only after authentication: a flood of made-up key ids costs it nothing."""
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))

    async def run() -> None:
        for n in range(50):
            with pytest.raises(UnauthenticatedError):
                await gate.admit(f"Bearer isk_{n:012x}_{'x' * 43}", "10.0.0.1", "analyst", "/v1/classify")
        assert gate.limiter is not None and gate.limiter._leases == {}

    asyncio.run(run())
