"""The job store as the worker sees it: claim items, record each item's one result, finish jobs, webhooks.

Exactly-once results over at-least-once dispatch: claiming an item marks it running and increments its
`attempts` in the same transaction, before the graph is called; its result row is unique per item, so a
re-run (an item in flight when the server died) can never record a second one.
"""

import itertools
import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from serving.jobs.job_rows import add_event, job_counts, job_record, output_totals
from serving.jobs.objects import hold_objects
from serving.jobs.records import ACTIVE_JOB_STATES, ClaimedItem, JobRecord, Outcome
from serving.jobs.tables import job_items, job_results, jobs, webhook_deliveries
from serving.jobs.workers import WorkerIdentity, dead_workers, handed_back_status

logger = logging.getLogger("imgserve.jobs")
NEVER_SERVED = -1  # below every turn number: a tenant the loop has not served yet goes first
# Tenants whose last turn a loop remembers: the ones served longest ago are forgotten first, which puts them with the
# never-served tenants, still ahead of every remembered one (the order barely changes; the query stays small).
REMEMBERED_TENANTS = 256


def output_columns(outcome: Outcome) -> dict[str, Any]:
    """The job_results columns of an item's image-operation output (none when it has no output)."""
    if outcome.output is None:
        return {}
    output = outcome.output
    return {
        "output_object": output.object,
        "output_name": output.name,
        "input_bytes": output.input_bytes,
        "output_bytes": output.output_bytes,
    }


class WorkQueue:
    def __init__(self, engine: sa.Engine, worker: WorkerIdentity | None = None):
        """`worker`: the job loop this queue claims for (its id is written on each claimed item)."""
        self.engine, self.worker = engine, worker
        self._turns = itertools.count()
        self._last_served: dict[str, int] = {}  # tenant -> the turn `next_job` last gave it

    def requeue_orphans(self, max_attempts: int | None = None, stale_after_s: float = 30.0) -> dict[str, int]:
        """Items left running by dead workers (`serving.jobs.workers`) go back to pending; returns counts per job.
        Items of live workers (heartbeat within `stale_after_s`, process still there) are left alone.

        An item that was in flight at `max_attempts` dispatches is a poison item (an input that kills the worker
        every time): it ends `failed` with the reason instead of crash-looping the next worker too."""
        now = time.time()
        with self.engine.begin() as conn:
            dead = dead_workers(conn, stale_after_s, [self.worker.id] if self.worker else [])
            running = (job_items.c.status == "running") & (
                job_items.c.worker_id.is_(None) | job_items.c.worker_id.in_(dead)
            )
            poisoned = []
            if max_attempts is not None:
                poisoned = conn.execute(
                    sa.select(job_items.c.id, job_items.c.job_id, job_items.c.idx, job_items.c.attempts, jobs.c.model)
                    .join(jobs, jobs.c.id == job_items.c.job_id)
                    .where(running, job_items.c.attempts >= max_attempts)
                ).all()
            for row in poisoned:
                error = f"the worker stopped while processing it on each of {row.attempts} dispatches; given up"
                conn.execute(
                    job_results.insert().values(
                        item_id=row.id, job_id=row.job_id, idx=row.idx, status="failed", model=row.model,
                        result=None, error_kind="poison", error=error, duration_ms=None, created_at=now,
                    )
                )  # fmt: skip
                done = {"status": "failed", "finished_at": now}
                conn.execute(job_items.update().where(job_items.c.id == row.id).values(**done))
                add_event(conn, row.job_id, "item_poisoned", {"idx": int(row.idx), "attempts": int(row.attempts)})
            rows = conn.execute(
                sa.select(job_items.c.job_id, sa.func.count()).where(running).group_by(job_items.c.job_id)
            ).all()
            if rows:
                conn.execute(job_items.update().where(running).values(status=handed_back_status(), worker_id=None))
            for job_id, count in rows:
                add_event(conn, job_id, "items_requeued", {"items": int(count), "reason": "their worker stopped"})
        return {job_id: int(count) for job_id, count in rows}

    def next_job(self) -> JobRecord | None:
        """The next queued or running job with work for this loop; its tenant has the turn. Tenants take turns
        (`JobRunner.run_job` ends a turn when another tenant has work waiting): the one this loop served least
        recently goes first, one it never served before any it did; within a tenant, and between tenants never
        served, the oldest job first. The turns are kept in memory, per queue (one per job loop): with several loops
        each rotates on its own, and a restarted loop, or one that found no work, starts afresh.

        A job whose remaining items are all running on other loops is passed over (another loop may start the next
        job meanwhile); one with none left running is not (it has to be finished)."""
        item = job_items.c
        pending = sa.exists().where(item.job_id == jobs.c.id, item.status == "pending")
        running = sa.exists().where(item.job_id == jobs.c.id, item.status == "running")
        order: list[Any] = [jobs.c.created_at]
        if self._last_served:
            order.insert(0, sa.case(self._last_served, value=jobs.c.tenant, else_=NEVER_SERVED))
        query = (
            sa.select(jobs).where(jobs.c.status.in_(ACTIVE_JOB_STATES), pending | ~running).order_by(*order).limit(1)
        )
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                self._last_served.clear()  # nothing to share
                return None
            self._last_served.pop(row.tenant, None)  # the dict stays in turn order
            self._last_served[row.tenant] = next(self._turns)
            while len(self._last_served) > REMEMBERED_TENANTS:
                del self._last_served[next(iter(self._last_served))]
            return job_record(row, job_counts(conn, [row.id])[row.id])

    def other_tenant_waiting(self, tenant: str) -> bool:
        """Whether a queued or running job of another tenant has pending items (work a turn could go to)."""
        pending = sa.exists().where(job_items.c.job_id == jobs.c.id, job_items.c.status == "pending")
        query = (
            sa.select(jobs.c.id).where(jobs.c.status.in_(ACTIVE_JOB_STATES), jobs.c.tenant != tenant, pending).limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def mark_running(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs.c.status, jobs.c.started_at).where(jobs.c.id == job_id)).first()
            if row is None or row.status not in ACTIVE_JOB_STATES:
                return
            # Conditional: a cancel committed since the read must win (PostgreSQL re-checks the WHERE after locking).
            changed = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE_JOB_STATES))
                .values(status="running", started_at=row.started_at or time.time())
            ).rowcount
            if changed:
                add_event(conn, job_id, "started" if row.status == "queued" else "resumed")

    def item_names(self, job_id: str) -> list[tuple[int, str]]:
        """(index, name) of every item of a job: what its outputs are named after (`output_bases`)."""
        query = sa.select(job_items.c.idx, job_items.c.name).where(job_items.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [(int(row.idx), str(row.name)) for row in conn.execute(query)]

    def claim(self, job_id: str, limit: int) -> list[ClaimedItem]:
        """Up to `limit` pending items of a running job, in index order, marked running with attempts + 1."""
        query = (
            sa.select(job_items.c.id)
            .join(jobs, jobs.c.id == job_items.c.job_id)
            .where(job_items.c.job_id == job_id, job_items.c.status == "pending", jobs.c.status == "running")
            .order_by(job_items.c.idx)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(of=job_items, skip_locked=True)
            ids = [row.id for row in conn.execute(query)]
            if not ids:
                return []
            conn.execute(
                job_items.update()
                .where(job_items.c.id.in_(ids))
                .values(
                    status="running",
                    attempts=job_items.c.attempts + 1,
                    started_at=time.time(),
                    worker_id=self.worker.id if self.worker else None,
                )
            )
            rows = conn.execute(sa.select(job_items).where(job_items.c.id.in_(ids)).order_by(job_items.c.idx))
            return [ClaimedItem(r.id, r.job_id, r.idx, r.name, r.source_kind, r.source, r.attempts) for r in rows]

    def release(self, item: ClaimedItem, counted: bool = True) -> None:
        """A transient failure: the item goes back to pending (cancelled when its job has ended meanwhile). Its
        attempt stays counted unless `counted` is False (the server was overloaded: the item was never really
        dispatched, and must not look like a poison item)."""
        values: dict[str, Any] = {"status": handed_back_status(), "worker_id": None}
        if not counted:
            values["attempts"] = job_items.c.attempts - 1
        held = job_items.c.worker_id == self.worker.id if self.worker else sa.true()  # not an item another took
        with self.engine.begin() as conn:
            conn.execute(
                job_items.update()
                .where(job_items.c.id == item.id, job_items.c.status == "running", held)
                .values(**values)
            )

    def release_unheld(self, job_id: str) -> int:
        """Items of the job running under this worker once its loop holds none of them (it runs one job at a time):
        claimed by a claim whose answer was lost (the commit went through, the connection dropped; `claim` was
        retried) and never run. Back to pending, their dispatch not counted; a live worker's items are never
        requeued otherwise, and the job would not finish. Returns how many (normally none)."""
        if self.worker is None:
            return 0
        mine = (job_items.c.job_id == job_id) & (job_items.c.status == "running")
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    job_items.update()
                    .where(mine, job_items.c.worker_id == self.worker.id)
                    .values(status=handed_back_status(), worker_id=None, attempts=job_items.c.attempts - 1)
                ).rowcount
                or 0
            )

    def give_up(self, item: ClaimedItem, error: str) -> None:
        """The item ends failed without a result row: not even a failed result could be stored for it. Only while
        this worker holds it, as `release`: an item requeued meanwhile (an orphan sweep) and claimed by another loop
        is that loop's to finish, and was marked failed here with a false `item_given_up` event."""
        held = job_items.c.worker_id == self.worker.id if self.worker else sa.true()
        with self.engine.begin() as conn:
            changed = conn.execute(
                job_items.update()
                .where(job_items.c.id == item.id, job_items.c.status == "running", held)
                .values(status="failed", finished_at=time.time(), worker_id=None)
            ).rowcount
            if changed:
                add_event(conn, item.job_id, "item_given_up", {"idx": item.idx, "error": error})

    def record(self, item: ClaimedItem, outcome: Outcome) -> bool:
        """Write the item's result and final status together; False if it already had one (nothing changes). An
        image-operation output is in the store when its result commits (serving.jobs.objects.hold_objects)."""
        now = time.time()
        output = outcome.output
        try:
            with self.engine.begin() as conn:
                if output is not None:  # its lock first, then its object checked (and stored again if a purge took it)
                    ensure = output.ensure_stored
                    hold_objects(conn, [output.object], None if ensure is None else lambda _digests: ensure())
                conn.execute(
                    job_results.insert().values(
                        item_id=item.id,
                        job_id=item.job_id,
                        idx=item.idx,
                        status=outcome.status,
                        model=outcome.model,
                        result=outcome.result,
                        error_kind=outcome.error_kind,
                        error=outcome.error,
                        duration_ms=outcome.duration_ms,
                        created_at=now,
                        **output_columns(outcome),
                    )
                )
                conn.execute(
                    job_items.update().where(job_items.c.id == item.id).values(status=outcome.status, finished_at=now)
                )
        except IntegrityError:  # its unique result, or no item to hold it (`item_exists` tells which)
            logger.warning(
                "item %s of job %s has a result already, or was purged: this one is dropped", item.idx, item.job_id
            )
            return False
        return True

    def item_exists(self, item: ClaimedItem) -> bool:
        """Whether the item is still in the store: False once its job was purged (its rows went in one go)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(job_items.c.id).where(job_items.c.id == item.id)).first() is not None

    def finish_if_done(self, job_id: str) -> JobRecord | None:
        """Completed (or failed: no item succeeded) once no item is pending or running; None otherwise."""
        with self.engine.begin() as conn:
            counts, _, _ = job_counts(conn, [job_id])[job_id]
            if counts["pending"] or counts["running"]:
                return None
            status = "failed" if counts["done"] == 0 else "completed"
            row = conn.execute(sa.select(jobs.c.webhook_url).where(jobs.c.id == job_id)).first()
            values: dict[str, Any] = {"status": status, "finished_at": time.time()}
            if row is not None and row.webhook_url:
                values["webhook_state"] = "pending"
            changed = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == "running").values(**values)
            ).rowcount
            if not changed:
                return None  # cancelled meanwhile: the cancel already finished it
            add_event(conn, job_id, status, {"done": counts["done"], "failed": counts["failed"]})
        return self.job(job_id)

    def fail_job(self, job_id: str, error: str) -> None:
        """A job-level failure (e.g. its model is no longer served): pending items are cancelled."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs.c.webhook_url).where(jobs.c.id == job_id)).first()
            values: dict[str, Any] = {"status": "failed", "error": error, "finished_at": time.time()}
            if row is not None and row.webhook_url:
                values["webhook_state"] = "pending"
            conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE_JOB_STATES)).values(**values)
            )
            conn.execute(
                job_items.update()
                .where(job_items.c.job_id == job_id, job_items.c.status == "pending")
                .values(status="cancelled")
            )
            add_event(conn, job_id, "failed", {"error": error})

    def job(self, job_id: str) -> JobRecord | None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            return (
                job_record(row, job_counts(conn, [job_id])[job_id], output_totals(conn, [job_id])[job_id])
                if row
                else None
            )

    # ---- webhooks -----------------------------------------------------------------------------------
    def pending_webhooks(self) -> list[JobRecord]:
        """Jobs whose notification is due: ended, and none of their items still in flight (a job cancelled while
        items ran is notified once they have recorded, handed back or been given up, so its counts add up)."""
        in_flight = sa.exists().where(job_items.c.job_id == jobs.c.id, job_items.c.status == "running")
        query = sa.select(jobs).where(jobs.c.webhook_state == "pending", ~in_flight).order_by(jobs.c.finished_at)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            counts = job_counts(conn, [r.id for r in rows])
        return [job_record(r, counts[r.id]) for r in rows]

    def webhook_state(self, job_id: str) -> str | None:
        with self.engine.begin() as conn:
            return conn.execute(sa.select(jobs.c.webhook_state).where(jobs.c.id == job_id)).scalar_one_or_none()

    def delivery_attempts(self, job_id: str, delivery_id: str) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        webhook_deliveries.c.job_id == job_id, webhook_deliveries.c.delivery_id == delivery_id
                    )
                ).scalar_one()
            )

    def claim_webhook(self, job_id: str, owner: str, lease_s: float, now: float | None = None) -> bool:
        """Take the job's pending delivery for one attempt (`lease_s`): False while another loop holds it."""
        now = time.time() if now is None else now
        free = sa.or_(jobs.c.webhook_owner.is_(None), jobs.c.webhook_owner == owner, jobs.c.webhook_lease_until < now)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.webhook_state == "pending", free)
                .values(webhook_owner=owner, webhook_lease_until=now + lease_s)
            )
            return claimed.rowcount == 1

    def close_webhook(self, job_id: str, state: str) -> None:
        with self.engine.begin() as conn:
            closed = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.webhook_state == "pending")
                .values(webhook_state=state, **RELEASED)
            )
            if closed.rowcount == 1:  # once, whichever loop gets here first
                add_event(conn, job_id, f"webhook_{state}")

    def record_delivery(self, row: dict[str, Any], final_state: str | None) -> None:
        """One delivery attempt; `final_state` (delivered | failed) closes the job's webhook."""
        with self.engine.begin() as conn:
            conn.execute(webhook_deliveries.insert().values(**row, at=time.time()))
            if final_state:
                closed = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == row["job_id"], jobs.c.webhook_state == "pending")
                    .values(webhook_state=final_state, **RELEASED)
                )
                if closed.rowcount == 1:  # once, as close_webhook: another loop may have closed it already
                    add_event(conn, row["job_id"], f"webhook_{final_state}", {"attempts": row["attempt"]})


RELEASED = {"webhook_owner": None, "webhook_lease_until": None}  # a delivery that ended holds no claim
