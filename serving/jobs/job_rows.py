"""A job's rows read back as the API shows them: item counts per status, image-operation output totals, the
`JobRecord`; and the event log's insert. Shared by the job store (serving.jobs.store) and the work queue."""

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from serving.jobs.records import FINAL_JOB_STATES, ITEM_STATES, JobRecord, OutputTotals
from serving.jobs.tables import job_events, job_items, job_results, jobs


def add_event(conn: sa.Connection, job_id: str, event: str, detail: dict[str, Any] | None = None) -> None:
    conn.execute(job_events.insert().values(job_id=job_id, at=time.time(), event=event, detail=detail))


def job_counts(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, tuple[dict[str, int], int, int]]:
    """Per job: items by status, total dispatches, and items dispatched more than once. A pending item of an ended
    job counts as cancelled: nothing claims it any more (a store from before hand-backs cancelled such items left
    them pending, and they showed as work waiting for ever)."""
    out: dict[str, tuple[dict[str, int], int, int]] = {j: ({s: 0 for s in ITEM_STATES}, 0, 0) for j in job_ids}
    if not job_ids:
        return out
    query = (
        sa.select(
            job_items.c.job_id,
            job_items.c.status,
            jobs.c.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(job_items.c.attempts), 0),
            sa.func.sum(sa.case((job_items.c.attempts > 1, 1), else_=0)),
        )
        .join(jobs, jobs.c.id == job_items.c.job_id)
        .where(job_items.c.job_id.in_(job_ids))
        .group_by(job_items.c.job_id, job_items.c.status, jobs.c.status)
    )
    for job_id, status, job_status, count, attempts, reruns in conn.execute(query):
        counts, total_attempts, total_reruns = out[job_id]
        counted = "cancelled" if status == "pending" and job_status in FINAL_JOB_STATES else status
        counts[counted] += int(count)
        out[job_id] = (counts, total_attempts + int(attempts), total_reruns + int(reruns or 0))
    return out


def output_totals(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, OutputTotals]:
    """Per job: outputs written by image operations, and their bytes in and out."""
    out = {j: OutputTotals() for j in job_ids}
    if not job_ids:
        return out
    query = (
        sa.select(
            job_results.c.job_id,
            sa.func.count(job_results.c.output_object),
            sa.func.coalesce(sa.func.sum(job_results.c.input_bytes), 0),
            sa.func.coalesce(sa.func.sum(job_results.c.output_bytes), 0),
        )
        .where(job_results.c.job_id.in_(job_ids), job_results.c.output_object.is_not(None))
        .group_by(job_results.c.job_id)
    )
    for job_id, count, bytes_in, bytes_out in conn.execute(query):
        out[job_id] = OutputTotals(int(count), int(bytes_in), int(bytes_out))
    return out


def job_record(row: Any, counts: tuple[dict[str, int], int, int], outputs: OutputTotals | None = None) -> JobRecord:
    return JobRecord(
        id=row.id,
        status=row.status,
        model=row.model,
        top_k=row.top_k,
        stages=tuple(row.stages),
        webhook_url=row.webhook_url,
        webhook_state=row.webhook_state,
        total=row.total,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=counts[0],
        attempts=counts[1],
        rerun_items=counts[2],
        tenant=row.tenant,
        anonymize=bool(row.anonymize),
        operations=row.operations,
        outputs=outputs or OutputTotals(),
    )
