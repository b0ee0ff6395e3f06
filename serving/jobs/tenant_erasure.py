"""Erase a whole tenant (`imgserve tenants erase`): everything imgserve keeps about it, in one command.

What goes, in this order (each step is its own transaction; a failed step can be re-run, the command is idempotent):

- first its API keys are revoked (every replica refuses them within IMGSERVE_KEY_CACHE_S), so the tenant's clients
  stop adding what the steps below delete; its JWT callers cannot be revoked here (disable them at the identity
  provider before erasing);
- its batch jobs, listed again after each pass until none is left (a submission that was being taken in when the
  keys were revoked lands after the first listing), each purged like `DELETE /v1/jobs/{id}?purge=true` (rows,
  results, events, webhook deliveries, collection copies and the stored inputs/outputs no other tenant's job holds;
  the idempotency keys they carry);
- its collections and their image rows (names, metadata, GPS, quality results);
- its training jobs (their requests name datasets and labels);
- the model versions it trained: the `model_versions` rows and the version folders under the trained-models folder
  (a model left with no version loses its folder, so every replica stops serving it at its next model poll), and its
  lines in the records of the highest numbers its deleted models gave (`.retired-models/`, which keep a name's
  numbers from being given twice);
- its API keys (they stop working within IMGSERVE_KEY_CACHE_S), their rate buckets and daily usage counts;
- the tenant's own row (quotas, webhook secrets, anonymisation).

The audit log stays by default: it records who did what (ids, counts, client addresses, never image content), the
erasure included; `audit=True` deletes the tenant's entries too, and one `tenant.erase` entry (counts only) is
written last either way.
"""

import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa

from serving.jobs.erasure import purge_job
from serving.jobs.errors import JobNotFoundError
from serving.jobs.objects import ObjectStore
from serving.jobs.tables import collection_images, collections, jobs, model_versions, training_jobs
from serving.model_versions import forget_removed_models
from serving.security.audit import AuditEntry, write_entry
from serving.security.tables import api_keys, audit_log, rate_buckets, tenants, usage_daily

PURGE_PASSES = 5


@dataclass
class TenantErasure:
    """What `erase_tenant` deleted (counts; the model folders by name)."""

    tenant: str
    jobs: int = 0
    job_items: int = 0
    objects: int = 0
    collections: int = 0
    collection_images: int = 0
    training_jobs: int = 0
    model_versions: int = 0
    model_folders_removed: list[str] = field(default_factory=list)
    retired_model_records: int = 0  # the deleted models' number records it had lines in
    keys: int = 0
    usage_rows: int = 0
    audit_entries: int = 0
    tenant_settings: int = 0


def erase_tenant(
    engine: sa.Engine,
    objects: ObjectStore | None,
    trained_models: Path | None,
    tenant: str,
    audit: AuditEntry,
    erase_audit: bool = False,
) -> TenantErasure:
    """Delete everything stored for `tenant` (see the module docstring); `audit` is the erasure's own entry."""
    report = TenantErasure(tenant)
    with engine.begin() as conn:  # its clients stop first: a key kept working through a long purge made new jobs
        conn.execute(
            api_keys.update()
            .where(api_keys.c.tenant == tenant, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    _purge_jobs(engine, objects, tenant, report)
    with engine.begin() as conn:
        in_tenant = sa.select(collections.c.id).where(collections.c.tenant == tenant)
        # its collections' rows locked first, as a run recording into one does (`CollectionStore.delete` too): a run
        # holding one commits, then its images are counted and deleted; one after waits and finds it gone (deleting
        # the images first deadlocked with a run trying a failed image again, and missed a run's last images)
        conn.execute(in_tenant.order_by(collections.c.id).with_for_update())
        report.collection_images += _deleted(
            conn, collection_images.delete(), collection_images.c.collection_id.in_(in_tenant)
        )
        report.collections += _deleted(conn, collections.delete(), collections.c.tenant == tenant)
        report.training_jobs = _deleted(conn, training_jobs.delete(), training_jobs.c.tenant == tenant)
        trained = [
            (row.model, row.version)
            for row in conn.execute(
                sa.select(model_versions.c.model, model_versions.c.version).where(model_versions.c.tenant == tenant)
            )
        ]
    if trained_models is not None:
        report.model_folders_removed = remove_versions(trained_models, trained)
        report.retired_model_records = len(forget_removed_models(trained_models, tenant))
    with engine.begin() as conn:
        report.model_versions = _deleted(conn, model_versions.delete(), model_versions.c.tenant == tenant)
        keys = sa.select(api_keys.c.id).where(api_keys.c.tenant == tenant)
        conn.execute(rate_buckets.delete().where(rate_buckets.c.key_id.in_(keys)))
        report.usage_rows = _deleted(conn, usage_daily.delete(), usage_daily.c.tenant == tenant)
        report.keys = _deleted(conn, api_keys.delete(), api_keys.c.tenant == tenant)
        report.tenant_settings = _deleted(conn, tenants.delete(), tenants.c.id == tenant)
        if erase_audit:
            report.audit_entries = _deleted(conn, audit_log.delete(), audit_log.c.tenant == tenant)
        detail = {key: value for key, value in asdict(report).items() if key != "tenant"}
        write_entry(conn, replace(audit, action="tenant.erase", tenant=tenant, target=tenant, detail=detail))
    return report


def _deleted(conn: sa.Connection, statement: sa.Delete, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(statement.where(where)).rowcount or 0)


def _purge_jobs(engine: sa.Engine, objects: ObjectStore | None, tenant: str, report: TenantErasure) -> None:
    """Purge the tenant's jobs, listing them again until a listing finds none (at most `PURGE_PASSES` listings: a
    JWT caller still submitting cannot keep the command running)."""
    for _ in range(PURGE_PASSES):
        with engine.connect() as conn:
            job_ids = [row.id for row in conn.execute(sa.select(jobs.c.id).where(jobs.c.tenant == tenant))]
        if not job_ids:
            return
        for job_id in job_ids:
            try:
                purged = purge_job(engine, objects, job_id, tenant, None)
            except JobNotFoundError:
                continue  # purged meanwhile (retention, an admin)
            report.jobs += 1
            report.job_items += purged.items
            report.objects += purged.objects
            report.collections += purged.collections  # saved copies of the job a purge erases with it
            report.collection_images += purged.collection_images


def remove_versions(trained_models: Path, trained: list[tuple[str, str]]) -> list[str]:
    """Delete the version folders the tenant trained; a model folder left without versions goes (and with it its
    version policy). Returns the model folders removed. Names come from the database: each must be one path part
    under `trained_models`, never a way out of it."""
    removed: list[str] = []
    for model in sorted({model for model, _ in trained}):
        root = trained_models / model
        if Path(model).name != model or model in ("", ".", "..") or not root.is_dir():
            continue
        for version in {version for name, version in trained if name == model}:
            if version.isdigit():
                shutil.rmtree(root / version, ignore_errors=True)
        if not any(child.is_dir() and child.name.isdigit() for child in root.iterdir()):
            shutil.rmtree(root, ignore_errors=True)
            removed.append(model)
    return removed
