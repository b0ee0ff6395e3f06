"""The job store as the API sees it: create jobs with their items, cancel, and read status and results.

All methods are synchronous (call them through `asyncio.to_thread`); each is one short transaction.
"""

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from serving.errors import BadRequestError, RequestTooLargeError
from serving.jobs.errors import JobNotFoundError, JobStateError
from serving.jobs.idempotency import IdempotencyClaim
from serving.jobs.job_rows import add_event, job_counts, job_record, output_totals
from serving.jobs.objects import hold_objects
from serving.jobs.records import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    JobRecord,
    JobSpec,
    NewItem,
    ResultRecord,
    saved_name,
)
from serving.jobs.stored_bytes import charge_stored_bytes, stored_bytes
from serving.jobs.tables import job_events, job_items, job_results, jobs, webhook_deliveries
from serving.security.audit import AuditEntry, write_entry

EnsureStored = Callable[[list[str]], None]  # a writer's check of its stored objects (serving.jobs.objects.hold_objects)


class JobStore:
    def __init__(self, engine: sa.Engine, max_items: int = 100_000):
        self.engine = engine
        self.max_items = max_items

    # ---- writes -------------------------------------------------------------------------------------
    def _insert_items(self, conn: sa.Connection, job_id: str, first: int, items: Sequence[NewItem]) -> int:
        total = first + len(items)
        if total > self.max_items:
            raise RequestTooLargeError(f"a job holds at most {self.max_items} items; this one would have {total}")
        if not items:
            return total
        rows = [
            {
                "job_id": job_id,
                "idx": first + i,
                "name": item.name,
                "source_kind": item.source_kind,
                "source": item.source,
                "size_bytes": item.size_bytes,
                "status": "failed" if item.error_kind else "pending",
                "attempts": 0,
            }
            for i, item in enumerate(items)
        ]
        conn.execute(job_items.insert(), rows)
        failed = {first + i: item for i, item in enumerate(items) if item.error_kind}
        if failed:
            # Inputs refused on intake (unsafe archive entries, ...) get their one result now.
            ids = conn.execute(
                sa.select(job_items.c.id, job_items.c.idx).where(
                    job_items.c.job_id == job_id, job_items.c.idx >= first, job_items.c.status == "failed"
                )
            )
            now = time.time()
            conn.execute(
                job_results.insert(),
                [
                    {
                        "item_id": item_id,
                        "job_id": job_id,
                        "idx": idx,
                        "status": "failed",
                        "error_kind": failed[idx].error_kind,
                        "error": failed[idx].error,
                        "created_at": now,
                    }
                    for item_id, idx in ids
                ],
            )
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(total=total))
        return total

    def create_job(
        self,
        spec: JobSpec,
        items: Sequence[NewItem],
        start: bool = True,
        tenant: str = "default",
        audit: AuditEntry | None = None,
        quota_stored_bytes: int | None = None,
        idempotency: IdempotencyClaim | None = None,
        ensure_stored: EnsureStored | None = None,
    ) -> str:
        """A new job of `tenant` with its first items; `start=False` leaves it open for more (`add_items`,
        `start_job`). `audit` is written in the same transaction, with the new job's id as its target. Refused
        (QuotaExceededError, nothing written) when the items would take the tenant past `quota_stored_bytes`, and
        (IntegrityError, nothing written) when the tenant has a job with the `idempotency` key already.
        `ensure_stored(digests)`: checks the items' stored inputs are still there, storing again any a purge deleted
        since the intake, under their locks (serving.jobs.objects.hold_objects; `Intake.ensure_stored`)."""
        if start and not items:
            raise BadRequestError("the batch has no inputs: send files, an archive or URIs")
        job_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            hold_objects(conn, _stored_inputs(items), ensure_stored)
            charge_stored_bytes(conn, tenant, items, quota_stored_bytes)
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    status="queued" if start else "open",
                    model=spec.model,
                    top_k=spec.top_k,
                    stages=list(spec.stages),
                    webhook_url=spec.webhook_url,
                    webhook_state="none",
                    total=0,
                    created_at=time.time(),
                    tenant=tenant,
                    anonymize=spec.anonymize,
                    operations=spec.operations,
                    **(idempotency.columns() if idempotency else {}),
                )
            )
            total = self._insert_items(conn, job_id, 0, items)
            add_event(conn, job_id, "created", {"items": total, "stages": list(spec.stages), "model": spec.model})
            if audit is not None:
                write_entry(conn, replace(audit, target=job_id, detail={"items": total}))
            if start:
                add_event(conn, job_id, "queued", {"items": total})
        return job_id

    def _locked_job(self, conn: sa.Connection, job_id: str, tenant: str | None = None) -> Any:
        """The job's row, locked; `tenant`: only that tenant's (another tenant's job is "not found", no oracle)."""
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return row

    def add_items(
        self,
        job_id: str,
        items: Sequence[NewItem],
        tenant: str | None = None,
        quota_stored_bytes: int | None = None,
        ensure_stored: EnsureStored | None = None,
    ) -> int:
        """Append items to an open job; returns its new total (`quota_stored_bytes`, `ensure_stored`: as
        `create_job`)."""
        with self.engine.begin() as conn:
            hold_objects(conn, _stored_inputs(items), ensure_stored)  # the digests' locks first, as every writer
            job = self._locked_job(conn, job_id, tenant)
            if job.status != "open":
                raise JobStateError(f"job {job_id} is {job.status}; items can only be added while it is open")
            charge_stored_bytes(conn, job.tenant, items, quota_stored_bytes)
            total = self._insert_items(conn, job_id, job.total, items)
            add_event(conn, job_id, "items_added", {"items": len(items), "total": total})
            return total

    def start_job(self, job_id: str, tenant: str | None = None) -> None:
        with self.engine.begin() as conn:
            job = self._locked_job(conn, job_id, tenant)
            if job.status != "open":
                raise JobStateError(f"job {job_id} is {job.status}; only an open job can be started")
            if job.total == 0:
                raise BadRequestError(f"job {job_id} has no items")
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="queued"))
            add_event(conn, job_id, "queued", {"items": job.total})

    def cancel_job(self, job_id: str, tenant: str | None = None, audit: AuditEntry | None = None) -> JobRecord:
        """Stop a job: its pending items are cancelled; items already in flight still record their result."""
        with self.engine.begin() as conn:
            job = self._locked_job(conn, job_id, tenant)
            if job.status in FINAL_JOB_STATES:
                raise JobStateError(f"job {job_id} is already {job.status}")
            values: dict[str, Any] = {"status": "cancelled", "finished_at": time.time()}
            if job.webhook_url and job.status != "open":
                values["webhook_state"] = "pending"
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
            dropped = conn.execute(
                job_items.update()
                .where(job_items.c.job_id == job_id, job_items.c.status == "pending")
                .values(status="cancelled")
            ).rowcount
            add_event(conn, job_id, "cancelled", {"items_cancelled": dropped})
            if audit is not None:
                write_entry(conn, replace(audit, target=job_id, detail={"items_cancelled": dropped}))
        return self.get_job(job_id)

    # ---- reads --------------------------------------------------------------------------------------
    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job; `tenant`: only if it is that tenant's (else "not found")."""
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            return job_record(row, job_counts(conn, [job_id])[job_id], output_totals(conn, [job_id])[job_id])

    def list_jobs(
        self, status: str | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[JobRecord]:
        """Newest first; `tenant`: that tenant's only."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
        if status:
            query = query.where(jobs.c.status == status)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            counts = job_counts(conn, [r.id for r in rows])
            outputs = output_totals(conn, [r.id for r in rows])
        return [job_record(r, counts[r.id], outputs[r.id]) for r in rows]

    def results_page(
        self, job_id: str, after: int = -1, limit: int = 500, status: str | None = None
    ) -> list[ResultRecord]:
        """Recorded results with index > `after`, in index order. While the job is queued or running, only those
        before its first unfinished item: results are written in the order items finish, and an index cursor must
        not step over an item that finishes after a later one. An ended job's results are all answered (items in
        flight at a cancel may still add theirs)."""
        query = (
            sa.select(job_results, job_items.c.name, job_items.c.attempts)
            .join(job_items, job_items.c.id == job_results.c.item_id)
            .where(job_results.c.job_id == job_id, job_results.c.idx > after)
            .order_by(job_results.c.idx)
            .limit(limit)
        )
        if status:
            query = query.where(job_results.c.status == status)
        with self.engine.begin() as conn:
            rows = _before_first_unfinished(conn, job_id, query).all()
        return [
            ResultRecord(r.idx, r.name, r.status, r.model, r.result, r.error_kind, r.error, r.duration_ms, r.attempts)
            for r in rows
        ]

    def input_sources(self, job_id: str) -> dict[str, tuple[str, str]]:
        """Each item's (source kind, source) by the name `save_job_as_collection` gives its image (the item name,
        or `name#index` for a repeated name)."""
        query = (
            sa.select(job_items.c.idx, job_items.c.name, job_items.c.source_kind, job_items.c.source)
            .where(job_items.c.job_id == job_id)
            .order_by(job_items.c.idx)
        )
        out: dict[str, tuple[str, str]] = {}
        taken: set[str] = set()
        with self.engine.begin() as conn:
            for row in conn.execute(query):
                out[saved_name(row.name, row.idx, taken)] = (row.source_kind, row.source)
        return out

    def input_source(self, job_id: str, name: str) -> tuple[str, str] | None:
        """(source kind, source) of the item `input_sources` names `name` (`name#index` for a repeated name)."""
        base, _, index = name.rpartition("#")
        query = sa.select(job_items.c.source_kind, job_items.c.source).where(job_items.c.job_id == job_id)
        if base and index.isdigit():
            query = query.where(job_items.c.idx == int(index), job_items.c.name == base)
        else:
            query = query.where(job_items.c.name == name).order_by(job_items.c.idx).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.source_kind, row.source)

    def outputs_page(self, job_id: str, after: int = -1, limit: int = 500) -> list[tuple[int, str, str]]:
        """(index, output name, output object) of items with an image-operation output and index > `after`; while
        the job runs, only before its first unfinished item, as `results_page` (a zip of a running job held item
        178 without item 102, which finished later and was never added: its outputs so far had holes)."""
        query = (
            sa.select(job_results.c.idx, job_results.c.output_name, job_results.c.output_object)
            .where(job_results.c.job_id == job_id, job_results.c.idx > after, job_results.c.output_object.is_not(None))
            .order_by(job_results.c.idx)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            rows = _before_first_unfinished(conn, job_id, query)
            return [(int(r.idx), str(r.output_name), str(r.output_object)) for r in rows]

    def stored_bytes(self, tenant: str) -> int:
        """Bytes the tenant's jobs store (serving.jobs.stored_bytes)."""
        with self.engine.begin() as conn:
            return stored_bytes(conn, tenant)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id))
            return [{"at": r.at, "event": r.event, "detail": r.detail} for r in rows]

    def deliveries(self, job_ids: Iterable[str]) -> list[dict[str, Any]]:
        query = (
            sa.select(webhook_deliveries)
            .where(webhook_deliveries.c.job_id.in_(list(job_ids)))
            .order_by(webhook_deliveries.c.id)
        )
        with self.engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _stored_inputs(items: Sequence[NewItem]) -> list[str]:
    return [item.source for item in items if item.source_kind == "object"]


def _before_first_unfinished(conn: sa.Connection, job_id: str, query: sa.Select) -> sa.CursorResult:
    """`query`'s rows of job_results, only those before an active job's first unfinished item."""
    frontier = _first_unfinished(conn, job_id)
    return conn.execute(query if frontier is None else query.where(job_results.c.idx < frontier))


def _first_unfinished(conn: sa.Connection, job_id: str) -> int | None:
    """The index of an active job's first pending or running item (None: the job has ended, or none is left). One
    exact-status lookup each, which the (job_id, status, idx) index answers on SQLite and PostgreSQL alike."""
    state = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
    if state not in ACTIVE_JOB_STATES:
        return None
    firsts = [
        conn.execute(
            sa.select(sa.func.min(job_items.c.idx)).where(job_items.c.job_id == job_id, job_items.c.status == status)
        ).scalar()
        for status in ("pending", "running")
    ]
    return min((idx for idx in firsts if idx is not None), default=None)
