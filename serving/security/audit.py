"""The audit log: an append-only table of who did what, when, from where.

Recorded: key create/revoke, tenant changes, job create/cancel/purge, retention sweeps, server starts (config
changes), and every refused request (401/403/429). Never image content, results or secrets; `detail` holds ids
and counts only. Successful reads are not audited (they are in the access log and metrics).

Job actions are written in the same transaction as the change itself (`write_entry` inside the store's transaction),
so an action without its entry cannot exist. Refusals are written by a small background writer (bounded: under a
flood of bad requests, entries beyond `max_pending` are counted in `imgserve_audit_dropped_total` instead of
queued), so an attacker cannot turn 401s into unbounded database writes.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from serving.security.principal import Principal
from serving.security.tables import audit_log

logger = logging.getLogger("imgserve.security")


@dataclass(frozen=True)
class AuditEntry:
    action: str  # key.create, key.revoke, job.create, job.cancel, job.purge, auth.unauthenticated, ...
    outcome: str = "ok"  # ok | denied | failed
    key_id: str | None = None
    tenant: str | None = None
    role: str | None = None
    client: str | None = None
    target: str | None = None  # a job id, key id, endpoint
    detail: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)

    @classmethod
    def by(cls, principal: Principal | None, action: str, client: str | None = None, **values: Any) -> "AuditEntry":
        if principal is None:
            return cls(action=action, client=client, **values)
        return cls(
            action=action,
            key_id=principal.key_id,
            tenant=principal.tenant,
            role=principal.role,
            client=client,
            **values,
        )

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "key_id": self.key_id,
            "tenant": self.tenant,
            "role": self.role,
            "client": (self.client or "")[:64] or None,
            "action": self.action,
            "target": (self.target or "")[:128] or None,
            "outcome": self.outcome,
            "detail": self.detail,
        }


def write_entry(conn: sa.Connection, entry: AuditEntry) -> None:
    """Append `entry` inside the caller's transaction."""
    conn.execute(audit_log.insert().values(**entry.row()))


def query_audit(
    engine: sa.Engine,
    tenant: str | None = None,
    action: str | None = None,
    key_id: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after_id: int = 0,
    limit: int = 100,
    newest: bool = False,
) -> list[dict[str, Any]]:
    """Entries oldest first, with id > `after_id` (the paging cursor); `newest`: the latest `limit` ones, newest
    first (what a person looking at recent activity wants; the oldest-first page showed a week-old flood)."""
    # newest by time: refusals are written in batches, so a later id can be an earlier entry
    order = (audit_log.c.at.desc(), audit_log.c.id.desc()) if newest else (audit_log.c.id,)
    query = sa.select(audit_log).where(audit_log.c.id > after_id).order_by(*order).limit(limit)
    for column, value in (
        (audit_log.c.tenant, tenant),
        (audit_log.c.key_id, key_id),
        (audit_log.c.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    if action is not None:
        query = query.where(audit_log.c.action.like(action.replace("*", "%")))
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at < until)
    with engine.begin() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


class AuditWriter:
    """Buffers entries and writes them in batches from a background task."""

    def __init__(self, engine: sa.Engine, max_pending: int = 10_000, interval_s: float = 0.25):
        self.engine, self.max_pending, self.interval_s = engine, max_pending, interval_s
        self._pending: list[AuditEntry] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: AuditEntry) -> None:
        from serving.metrics import AUDIT_DROPPED

        if len(self._pending) >= self.max_pending:
            AUDIT_DROPPED.inc()
            return
        self._pending.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_soon())

    def _write(self, entries: list[AuditEntry]) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit_log.insert(), [entry.row() for entry in entries])

    async def flush(self) -> None:
        entries, self._pending = self._pending, []
        if not entries:
            return
        try:
            await asyncio.to_thread(self._write, entries)
        except Exception:  # noqa: BLE001 - the audit log must not take requests down; it is logged instead
            logger.exception("could not write %d audit entries", len(entries))

    async def _write_soon(self) -> None:
        """Write what is pending every interval until nothing is: an entry added while a write was running was
        left pending until the next entry came (the task was still running when it was added)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()
            if not self._pending:
                return
