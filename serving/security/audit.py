"""The audit log: an append-only table of who did what, when, from where.

Recorded: key create/revoke, tenant changes, job create/cancel/purge, retention sweeps, server starts (config
changes), and every refused request (401/403/429). Never image content, results or secrets; `detail` holds ids
and counts only. Successful reads are not audited (they are in the access log and metrics).

Job actions are written in the same transaction as the change itself (`write_entry` inside the store's transaction),
so an action without its entry cannot exist. Refusals are written by a small background writer (bounded: under a
flood of bad requests, entries beyond `max_pending` are counted in `imgserve_audit_dropped_total` instead of
queued). A refusal naming no known caller (no credentials, an unknown key, a bad JWT) is written when it is the
first of its client address and action in `REPEAT_WINDOW_S`; the next ones are counted and written as one entry
(`detail.repeated`: how many, `detail.since`) when the window ends or the log is read, so an attacker cannot turn
401s into a row each. Refusals of known keys (revoked, wrong secret, role, rate) are written one by one.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from serving.security.principal import Principal
from serving.security.tables import audit_log

logger = logging.getLogger("imgserve.security")
REPEAT_WINDOW_S = 60.0
MAX_REPEAT_SOURCES = 10_000  # client addresses counted at once; past it, new ones share one count (client "*")
START_RETRY_FIRST_S = 1.0  # a `server.start` the database did not take: tried again after this, doubling up to the next
START_RETRY_MAX_S = 60.0


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
        """The table row, every text without NUL (shown as U+FFFD): PostgreSQL's text holds none, and one entry
        naming a client's `/v1/jobs/a%00b` failed the whole batch of entries written with it."""
        return {
            "at": self.at,
            "key_id": _storable(self.key_id),
            "tenant": _storable(self.tenant),
            "role": self.role,
            "client": _storable((self.client or "")[:64] or None),
            "action": self.action,
            "target": _storable((self.target or "")[:128] or None),
            "outcome": self.outcome,
            "detail": _storable(self.detail),
        }


def _storable(value: Any) -> Any:
    """`value` (text, or JSON-like nesting of it) with every NUL replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def write_entry(conn: sa.Connection, entry: AuditEntry) -> None:
    """Append `entry` inside the caller's transaction."""
    conn.execute(audit_log.insert().values(**entry.row()))


def server_start_entry(detail: dict[str, Any]) -> AuditEntry:
    """`server.start`: the configuration a replica serves with (no secrets in it), stamped when it starts."""
    return AuditEntry(action="server.start", client="server", detail=detail)


def write_server_start(engine: sa.Engine, detail: dict[str, Any]) -> None:
    """Write the replica's `server.start` now (auth required: the replica does not start without its database)."""
    with engine.begin() as conn:
        write_entry(conn, server_start_entry(detail))


async def write_server_start_when_reachable(open_engine: Callable[[], sa.Engine], detail: dict[str, Any]) -> None:
    """Write the replica's `server.start` through the job database `open_engine()` opens (migrated), as soon as it
    answers: with auth off the replica starts without its database (online serving does not need it, the job loop
    waits for it the same way), so the entry is tried again with backoff until written, stamped with the start."""
    entry, delay = server_start_entry(detail), START_RETRY_FIRST_S
    while True:
        try:
            await asyncio.to_thread(_write_once, open_engine, entry)
            return
        except Exception as exc:  # noqa: BLE001 - the database is down: the next try may find it
            logger.warning("server.start not audited yet (%s); trying again in %g s", type(exc).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, START_RETRY_MAX_S)


def _write_once(open_engine: Callable[[], sa.Engine], entry: AuditEntry) -> None:
    engine = open_engine()
    try:
        with engine.begin() as conn:
            write_entry(conn, entry)
    finally:
        engine.dispose()


def action_filter(action: str) -> sa.ColumnElement[bool]:
    """The audit query's `action` condition: the action itself, or with one `*` at the end every action that starts
    with the text before it. Every other character is literal (a `*` elsewhere, SQL's `%` and `_` too), so the
    answer is the same on SQLite and PostgreSQL: a prefix is compared as a substring, not with LIKE (whose `%` and
    `_` are wildcards, and whose case rule differs between the two)."""
    if not action.endswith("*"):
        return audit_log.c.action == action
    prefix = action[:-1]
    return sa.func.substr(audit_log.c.action, 1, len(prefix)) == prefix


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
        query = query.where(action_filter(action))
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at < until)
    with engine.begin() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


@dataclass
class _Repeats:
    """Refusals of one client address and action since the written one that opened the window."""

    opened: float  # time.monotonic() of the written one
    since: float  # time of the first refusal not written yet
    count: int = 0
    last: AuditEntry | None = None


class AuditWriter:
    """Buffers entries and writes them in batches from a background task."""

    def __init__(
        self, engine: sa.Engine, max_pending: int = 10_000, interval_s: float = 0.25, window_s: float = REPEAT_WINDOW_S
    ):
        self.engine, self.max_pending, self.interval_s, self.window_s = engine, max_pending, interval_s, window_s
        self._pending: list[AuditEntry] = []
        self._repeats: dict[tuple[str | None, str], _Repeats] = {}
        self._task: asyncio.Task[None] | None = None

    def add_repeated(self, entry: AuditEntry) -> None:
        """`entry` if it is the first of its client address and action in the window, else counted (see above)."""
        group = (entry.client, entry.action)
        if group not in self._repeats and len(self._repeats) >= MAX_REPEAT_SOURCES:
            group = ("*", entry.action)
        repeats = self._repeats.get(group)
        if repeats is None:
            self._repeats[group] = _Repeats(time.monotonic(), entry.at)
            self.add(entry)
            return
        if repeats.count == 0:
            repeats.since = entry.at
        repeats.count += 1
        repeats.last = entry
        self._keep_writing()

    def _repeated_entries(self, everything: bool) -> list[AuditEntry]:
        """The counts of the windows that ended (`everything`: of all), as entries; ended windows are closed."""
        now = time.monotonic()
        out: list[AuditEntry] = []
        for group, repeats in list(self._repeats.items()):
            ended = now - repeats.opened >= self.window_s
            if repeats.last is not None and repeats.count and (ended or everything):
                detail = {"repeated": repeats.count, "since": repeats.since}
                out.append(replace(repeats.last, client=group[0], detail=detail))
                repeats.count, repeats.last = 0, None
            if ended:
                del self._repeats[group]
        return out

    def add(self, entry: AuditEntry) -> None:
        from serving.metrics import AUDIT_DROPPED

        if len(self._pending) >= self.max_pending:
            AUDIT_DROPPED.inc()
            return
        self._pending.append(entry)
        self._keep_writing()

    def _keep_writing(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_soon())

    def _write(self, entries: list[AuditEntry]) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit_log.insert(), [entry.row() for entry in entries])

    async def flush(self, counts: bool = True) -> None:
        """Write what is pending; `counts`: with the refusals counted so far (False: of the windows that ended)."""
        entries, self._pending = self._pending, []
        entries += self._repeated_entries(everything=counts)
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
            await self.flush(counts=False)
            if not self._pending and not self._repeats:
                return
