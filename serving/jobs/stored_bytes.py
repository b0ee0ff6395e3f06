"""A tenant's stored bytes and its stored-bytes quota, checked in the transaction that adds the items.

The check and the charge are one: the transaction that inserts a request's items first locks the tenant's row
(PostgreSQL: SELECT ... FOR UPDATE; SQLite: every transaction is BEGIN IMMEDIATE, writers already run one at a
time), then sums what the tenant stores and refuses the items when they would pass the quota. Requests sent
together, on one replica or many, are checked one after the other, each seeing the bytes of those before it (they
were all checked against the same total, and 8 uploads at once stored 118 KB for a 100 KB quota).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from serving.jobs.records import NewItem
from serving.jobs.tables import job_items, job_results, jobs
from serving.security.errors import QuotaExceededError
from serving.security.tables import tenants

RETRY_AFTER_S = 3600.0  # purging jobs or retention frees bytes; no time at which the quota resets


def stored_bytes(conn: sa.Connection, tenant: str) -> int:
    """Bytes of stored inputs and image-operation outputs the tenant's jobs hold (shared objects count for each
    job that holds them). Outputs written since a check count from the next one."""
    inputs = (
        sa.select(sa.func.coalesce(sa.func.sum(job_items.c.size_bytes), 0))
        .join(jobs, jobs.c.id == job_items.c.job_id)
        .where(jobs.c.tenant == tenant, job_items.c.source_kind == "object")
    )
    outputs = (
        sa.select(sa.func.coalesce(sa.func.sum(job_results.c.output_bytes), 0))
        .join(jobs, jobs.c.id == job_results.c.job_id)
        .where(jobs.c.tenant == tenant, job_results.c.output_object.is_not(None))
    )
    return int(conn.execute(inputs).scalar() or 0) + int(conn.execute(outputs).scalar() or 0)


def quota_error(quota: int, stored: int, adding: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"tenant stored-bytes quota of {quota} reached ({stored} stored, {adding} more sent): purge jobs or wait "
        "for retention",
        RETRY_AFTER_S,
    )


def charge_stored_bytes(conn: sa.Connection, tenant: str, items: Sequence[NewItem], quota: int | None) -> None:
    """Raises QuotaExceededError (the caller's transaction rolls back) when `items` would take `tenant` past
    `quota` bytes; call it in the transaction that inserts them, before their rows. None: no quota."""
    adding = sum(item.size_bytes or 0 for item in items if item.source_kind == "object")
    if quota is None or adding == 0:
        return
    lock = sa.select(tenants.c.id).where(tenants.c.id == tenant)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update()  # held until the items are in: the next request's sum includes them
    conn.execute(lock).first()
    stored = stored_bytes(conn, tenant)
    if stored + adding > quota:
        raise quota_error(quota, stored, adding)
