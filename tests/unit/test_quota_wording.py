"""A quota refusal says whether the quota is used up or only this request would exceed it. With 2 of 6 images used, a
request of 5 was told `daily quota of 6 images for this key reached (2 used today, UTC)`: it was not reached, and a
request of 4 still passes (found by a hostile-client walkthrough)."""

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.security.errors import QuotaExceededError
from serving.security.limits import UsageMeter
from serving.security.principal import Principal

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'usage.sqlite3'}")
    migrate(store)
    return store


def test_a_request_that_would_pass_the_quota_says_so_and_a_used_up_quota_says_that(engine: sa.Engine) -> None:
    key = Principal(key_id="qw", tenant="t", role="analyst", quota_images_per_day=6)

    async def run() -> tuple[str, str, str]:
        meter = UsageMeter(engine)
        await meter.charge(key, 2)
        with pytest.raises(QuotaExceededError) as too_many:
            await meter.charge(key, 5)
        await meter.charge(key, 4)  # what was left passes: the quota was not used up
        with pytest.raises(QuotaExceededError) as used_up:
            await meter.charge(key, 1)
        with pytest.raises(QuotaExceededError) as tenant:
            await meter.charge(Principal("qw2", "t", "analyst"), 3, tenant_quota=8)
        return str(too_many.value), str(used_up.value), str(tenant.value)

    too_many, used_up, tenant = asyncio.run(run())
    assert "reached" not in too_many
    assert too_many == (
        "this request's 5 images would exceed the daily quota of 6 images for this key (2 used today, 4 left, UTC)"
    )
    assert used_up == "daily quota of 6 images for this key is used up (6 used today, UTC)"
    assert tenant == (
        "this request's 3 images would exceed the daily quota of 8 images for this tenant (6 used today, 2 left, UTC)"
    )
