"""A 429's body and its `Retry-After` header say the same wait: the body said "retry after 0.00 s" (the bucket was
a fraction of a token short) while the header, whole seconds rounded up, said 1."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serving.errors import retry_after_value
from serving.jobs.database import create_store_engine, migrate
from serving.security.errors import RateLimitedError
from serving.security.limits import RateLimiter
from serving.security.principal import Principal

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def test_the_body_names_the_wait_the_retry_after_header_names(engine: Any) -> None:
    key = Principal(key_id="k1", tenant="t", role="analyst", rate_per_s=20.0, burst=20)

    async def flood() -> list[RateLimitedError]:
        limiter, refusals = RateLimiter(engine), []
        for _ in range(60):
            try:
                await limiter.take(key)
            except RateLimitedError as error:
                refusals.append(error)
        return refusals

    refusals = asyncio.run(flood())
    assert refusals
    for error in refusals:
        header = retry_after_value(error.retry_after_s)
        assert str(error).endswith(f"exceeded; retry after {header} s"), str(error)
        assert "0.00" not in str(error)
