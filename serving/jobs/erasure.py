"""Erasure and retention: purge one job at once (right to erasure), sweep expired jobs, drop orphaned objects.

A purge deletes the job's row, items, results, events and webhook deliveries in one transaction, with its audit
entry (ids and counts only, never content); then the stored input and output objects no other job references. The
job's `Idempotency-Key` is in its row, so it goes too: a later request with that key makes a new job.
Objects are content-addressed and shared between jobs that sent (or made) the same bytes, and a writer stores its
object before the row that references it exists. The rule that keeps every referenced object in the store is one
lock per digest (serving.jobs.objects): a deleter (a purge, an item of a purged job dropping its output, the orphan
sweep, tenant erasure through the purge) deletes an object only in a short transaction that holds the digest's lock
exclusively, checks that no row references it, and deletes it before committing (`_drop_unreferenced`); a writer
(a submission's inputs, an item's output) records its references holding the lock shared and, still holding it,
checks the object is there and stores the bytes again if a deleter removed it meanwhile (`hold_objects`). Either the
deleter ran wholly before the writer's check, or it waits for the writer's commit and finds the reference: object
times do not decide anything (object stores keep them to the second). A purge still leaves an input stored again
after the purged job's last inputs to the orphan sweep (`_stored_again_since`): not needed for correctness, it spares
the submission taking it in writing the bytes again.
Items of the job in flight at its purge, on any replica, leave nothing behind: each checks that its job is still
there before it writes its output, and one whose result then finds no item removes what it wrote (the file at the
job's `output_uri`, and the stored output unless a row references it: `drop_unrecorded_output`; serving.jobs.runner).
Collections saved from a job (`save_job_as_collection`) hold no object themselves: their images are read through the
job's items, and the purge erases the job's rows in them (`_erase_saved_copies`).
The sweeper purges, with `IMGSERVE_RETENTION_DAYS`, finished jobs older than the retention (and open jobs never
started), finished training jobs older than it and daily usage counts of days before it, and, always, deletes
stored objects no job references that are older than an hour (inputs of refused submissions, or left by a crash),
each under its lock as a purge deletes; the hour spares a submission still being written storing its bytes again.
Model versions (served), keys and the audit log are not swept; `imgserve tenants erase` (serving.jobs.tenant_erasure)
removes all of a tenant's.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import sqlalchemy as sa

from serving.jobs.errors import JobNotFoundError
from serving.jobs.objects import ObjectStore, forget_object, lock_for_delete
from serving.jobs.records import FINAL_JOB_STATES, saved_name
from serving.jobs.tables import (
    TRAINING_FINAL_STATES,
    collection_images,
    collections,
    job_events,
    job_items,
    job_location,
    job_results,
    jobs,
    located_job,
    training_jobs,
    webhook_deliveries,
)
from serving.security.audit import AuditEntry, write_entry
from serving.security.tables import usage_daily

logger = logging.getLogger("imgserve.jobs")
ORPHAN_GRACE_S = 3600.0


@dataclass(frozen=True)
class PurgeReport:
    jobs: int = 0
    items: int = 0
    objects: int = 0  # stored objects deleted (an object another job still holds is kept)
    inputs: int = 0  # the purged jobs' distinct stored objects, deleted or kept: what the caller may be told
    training_jobs: int = 0  # (sweeps) finished training jobs expired
    usage_rows: int = 0  # (sweeps) daily usage counts of expired days
    collections: int = 0  # collections the job was saved into that it left empty, so erased with it
    collection_images: int = 0  # its saved copies' image rows erased


def _referenced(conn: sa.Connection, digests: Iterable[str]) -> set[str]:
    """The digests some job still holds: as an item's stored input or as an image operation's output."""
    digests = list(digests)
    if not digests:
        return set()
    inputs = sa.select(job_items.c.source).where(job_items.c.source_kind == "object", job_items.c.source.in_(digests))
    outputs = sa.select(job_results.c.output_object).where(job_results.c.output_object.in_(digests))
    return {row.source for row in conn.execute(inputs)} | {row.output_object for row in conn.execute(outputs)}


def _inputs_until(conn: sa.Connection, job_id: str) -> float:
    """When the job's last inputs were stored: its `created` or latest `items_added` event (0: none recorded)."""
    query = sa.select(sa.func.max(job_events.c.at)).where(
        job_events.c.job_id == job_id, job_events.c.event.in_(("created", "items_added"))
    )
    return float(conn.execute(query).scalar() or 0.0)


def _delete_job_rows(conn: sa.Connection, job_id: str) -> tuple[int, set[str], set[str]]:
    """(items deleted, digests of their stored inputs, digests of their stored outputs)."""
    inputs = {
        row.source
        for row in conn.execute(
            sa.select(job_items.c.source).where(job_items.c.job_id == job_id, job_items.c.source_kind == "object")
        )
    }
    outputs = {
        row.output_object
        for row in conn.execute(
            sa.select(job_results.c.output_object).where(
                job_results.c.job_id == job_id, job_results.c.output_object.is_not(None)
            )
        )
    }
    conn.execute(webhook_deliveries.delete().where(webhook_deliveries.c.job_id == job_id))
    conn.execute(job_events.delete().where(job_events.c.job_id == job_id))
    conn.execute(job_results.delete().where(job_results.c.job_id == job_id))
    items = conn.execute(job_items.delete().where(job_items.c.job_id == job_id)).rowcount
    conn.execute(jobs.delete().where(jobs.c.id == job_id))
    return int(items or 0), inputs, outputs


def _stored_again_since(objects: ObjectStore, digests: set[str], since: float) -> set[str]:
    """The inputs some submission stored again after `since` (the purged job's last inputs; ObjectStore.put refreshes
    an existing object): left to the orphan sweep, which spares a submission still being taken in writing them again.
    Only a saving: within a second (object stores keep whole seconds) it sees nothing, and the digest lock keeps the
    submission's inputs either way. A store whose clock runs ahead of the database's leaves the job's own inputs to
    the sweep too."""
    return {digest for digest in digests if (objects.modified(digest) or 0.0) > since}


def purge_job(
    engine: sa.Engine, objects: ObjectStore | None, job_id: str, tenant: str | None, audit: AuditEntry | None
) -> PurgeReport:
    """Erase one job (of `tenant`, when given: another tenant's job is "not found") and its unshared inputs."""
    with engine.begin() as conn:
        query = sa.select(jobs.c.id, jobs.c.tenant).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).first()
        if found is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        if conn.dialect.name == "postgresql":
            # its items too: a result being written now (its insert holds its item's key) lands before the outputs
            # are read below, and one not yet begun waits, then finds no item (the runner removes what it wrote);
            # a claim skips them (SKIP LOCKED), then finds none
            conn.execute(sa.select(job_items.c.id).where(job_items.c.job_id == job_id).with_for_update())
        names = _saved_names(conn, job_id)
        inputs_until = _inputs_until(conn, job_id)
        items, inputs, outputs = _delete_job_rows(conn, job_id)
        digests = inputs | outputs
        orphaned = digests - _referenced(conn, digests)
        saved, erased, image_rows = _erase_saved_copies(conn, job_id, found.tenant, names)
        if audit is not None:
            detail = {"items": items, "objects": len(orphaned), "collections": saved}
            write_entry(conn, replace(audit, target=job_id, detail=detail))
    deleted = 0
    if objects is not None:
        for digest in sorted(orphaned - _stored_again_since(objects, orphaned & inputs, inputs_until)):
            deleted += _drop_unreferenced(engine, objects, digest)
    return PurgeReport(1, items, deleted, len(digests), collections=erased, collection_images=image_rows)


def _drop_unreferenced(engine: sa.Engine, objects: ObjectStore, digest: str) -> bool:
    """Delete the object unless a row references it, in one transaction holding the digest's lock exclusively from
    the check to the delete (the module docstring's rule). True if it was deleted."""
    with engine.begin() as conn:
        lock_for_delete(conn, digest)
        if _referenced(conn, [digest]):
            return False
        objects.delete(digest)
        forget_object(conn, digest)
    return True


def drop_unrecorded_output(engine: sa.Engine, objects: ObjectStore, digest: str) -> bool:
    """An output an item of a purged job stored and could not record: deleted unless a row references it. Another
    item storing the same bytes, its result not yet recorded, stores them again as it records (`hold_objects`).
    True if it was deleted."""
    return _drop_unreferenced(engine, objects, digest)


def _saved_names(conn: sa.Connection, job_id: str) -> list[str]:
    """The names the job's images have in a collection it is saved into (`save_job_as_collection`: the item name,
    `name#index` for a repeated one)."""
    taken: set[str] = set()
    query = sa.select(job_items.c.idx, job_items.c.name).where(job_items.c.job_id == job_id).order_by(job_items.c.idx)
    return [saved_name(row.name, row.idx, taken) for row in conn.execute(query)]


def _erase_saved_copies(conn: sa.Connection, job_id: str, tenant: str, names: list[str]) -> tuple[int, int, int]:
    """Collections hold copies of the results of the jobs saved into them: the job's rows go with it, and a
    collection left without images goes too. Rows are found by their location `job:<id>`, or, saved before rows
    carried it (no location), by the job's image names (unique in a collection). A second job saved into a
    collection kept its rows after its purge. Only the job's tenant's collections are looked at. Returns how many
    collections were changed or erased, how many of them erased, and the image rows erased."""
    marker = job_location(job_id)
    touched = erased = image_rows = 0
    mine_by_tenant = sa.select(collections.c.id, collections.c.job_id, collections.c.sources).where(
        collections.c.tenant == tenant
    )
    for row in conn.execute(mine_by_tenant).all():
        if marker not in (row.sources or []) and row.job_id != job_id:
            continue
        in_collection = collection_images.c.collection_id == row.id
        located = collection_images.c.location == marker
        image_rows += conn.execute(sa.delete(collection_images).where(in_collection, located)).rowcount or 0
        for start in range(0, len(names), 500):
            legacy = sa.and_(
                collection_images.c.location.is_(None), collection_images.c.name.in_(names[start : start + 500])
            )
            image_rows += conn.execute(sa.delete(collection_images).where(in_collection, legacy)).rowcount or 0
        left = conn.execute(sa.select(sa.func.count()).where(in_collection)).scalar_one()
        if not left:
            conn.execute(sa.delete(collections).where(collections.c.id == row.id))
            erased += 1
        else:
            sources = [source for source in row.sources or [] if source != marker]
            others = [job for job in map(located_job, sources) if job]
            first_job = row.job_id if row.job_id != job_id else (others[0] if others else None)
            conn.execute(
                sa.update(collections).where(collections.c.id == row.id).values(sources=sources, job_id=first_job)
            )
        touched += 1
    return touched, erased, image_rows


def expired_jobs(engine: sa.Engine, cutoff: float) -> list[tuple[str, str]]:
    """(job id, tenant) of finished jobs that ended before `cutoff` and open jobs created before it."""
    finished = sa.and_(jobs.c.status.in_(FINAL_JOB_STATES), jobs.c.finished_at < cutoff)
    never_started = sa.and_(jobs.c.status == "open", jobs.c.created_at < cutoff)
    with engine.begin() as conn:
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.tenant).where(sa.or_(finished, never_started)))
        return [(row.id, row.tenant) for row in rows]


def _expire_training_and_usage(engine: sa.Engine, cutoff: float) -> tuple[int, int]:
    """Delete training jobs that ended before `cutoff` (their requests name datasets and labels; the model versions
    they registered stay: they are served) and usage counts of UTC days before the cutoff's (today's, which quotas
    read, is never before it). Returns (training jobs, usage rows) deleted."""
    day = time.strftime("%Y-%m-%d", time.gmtime(cutoff))
    ended = sa.and_(training_jobs.c.status.in_(TRAINING_FINAL_STATES), training_jobs.c.finished_at < cutoff)
    with engine.begin() as conn:
        training = conn.execute(training_jobs.delete().where(ended)).rowcount
        usage = conn.execute(usage_daily.delete().where(usage_daily.c.day < day)).rowcount
    return int(training or 0), int(usage or 0)


def drop_orphaned_objects(engine: sa.Engine, objects: ObjectStore, now: float | None = None) -> int:
    now = time.time() if now is None else now
    stored = objects.stored()
    old = [digest for digest, modified in stored.items() if now - modified > ORPHAN_GRACE_S]
    dropped = 0
    for start in range(0, len(old), 500):
        chunk = old[start : start + 500]
        with engine.begin() as conn:
            keep = _referenced(conn, chunk)
        # stored again since the listing (a submission still being taken in): left to a later sweep, as a purge
        # leaves it (`_stored_again_since`; what keeps it safe is the lock `_drop_unreferenced` takes)
        keep |= {digest for digest in set(chunk) - keep if (objects.modified(digest) or 0.0) > stored[digest]}
        for digest in chunk:
            if digest not in keep:
                dropped += _drop_unreferenced(engine, objects, digest)
    return dropped


def sweep(engine: sa.Engine, objects: ObjectStore, retention_s: float, now: float | None = None) -> PurgeReport:
    """Purge every expired job and drop orphaned objects; one audit entry per purged job, one for the sweep."""
    now = time.time() if now is None else now
    total = PurgeReport()
    for job_id, tenant in expired_jobs(engine, now - retention_s):
        entry = AuditEntry(action="job.expire", tenant=tenant, outcome="ok")
        try:
            report = purge_job(engine, objects, job_id, None, entry)
        except JobNotFoundError:
            continue  # purged meanwhile
        total = PurgeReport(**{f.name: getattr(total, f.name) + getattr(report, f.name) for f in fields(PurgeReport)})
    training, usage = _expire_training_and_usage(engine, now - retention_s)
    orphans = drop_orphaned_objects(engine, objects, now)
    total = replace(total, objects=total.objects + orphans, training_jobs=training, usage_rows=usage)
    if total.jobs or total.objects or total.training_jobs or total.usage_rows:
        with engine.begin() as conn:
            write_entry(conn, AuditEntry(action="retention.sweep", detail=total.__dict__))
        logger.info("retention sweep: %s", total)
    return total
