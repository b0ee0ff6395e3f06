"""`imgserve tenants erase` and the retention sweep of training jobs and usage counts, on a real SQLite job store."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import sweep
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.store import JobStore
from serving.jobs.tables import collection_images, collections, jobs, model_versions, training_jobs
from serving.jobs.tenant_erasure import erase_tenant
from serving.security.audit import AuditEntry, write_entry
from serving.security.keys import KeyStore
from serving.security.tables import api_keys, audit_log, tenants, usage_daily
from serving.security.tenants import TenantStore
from serving.training.store import TrainingStore

pytestmark = pytest.mark.unit


def _count(engine: sa.Engine, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())


def _populate(engine: sa.Engine, objects: ObjectStore, trained: Path, tenant: str, payload: bytes) -> None:
    """One of everything a tenant leaves behind: a job with a stored input, a collection, a training job, a trained
    model version (row and folder), a key with usage, tenant settings."""
    digest = objects.put(payload)
    JobStore(engine).create_job(
        JobSpec("m", 1, (), None, False), [NewItem("a.jpg", "object", digest, 3)], tenant=tenant
    )
    now = time.time()
    with engine.begin() as conn:
        cid = f"c{tenant}"
        conn.execute(
            collections.insert().values(
                id=cid,
                name=f"photos-{tenant}",
                tenant=tenant,
                status="done",
                stages=[],
                sources=[],
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(collection_images.insert().values(collection_id=cid, name="gps.jpg", ok=True, created_at=now))
        conn.execute(
            model_versions.insert().values(
                model=f"cats-{tenant}", version="1", tenant=tenant, labels=["cat"], created_at=now
            )
        )
        conn.execute(usage_daily.insert().values(key_id=f"k{tenant}", day="2026-01-01", tenant=tenant, images=5))
    TrainingStore(engine).create(tenant, None, f"cats-{tenant}", {"dataset": f"/data/{tenant}"})
    KeyStore(engine).create(f"key-{tenant}", "admin", tenant)
    TenantStore(engine).update(tenant, True, 10, None)
    (trained / f"cats-{tenant}" / "1").mkdir(parents=True)
    (trained / f"cats-{tenant}" / "1" / "config.yaml").write_text("name: x\n")


@pytest.fixture
def world(tmp_path: Path) -> tuple[sa.Engine, ObjectStore, Path]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    objects, trained = ObjectStore(str(tmp_path / "objects")), tmp_path / "trained"
    _populate(engine, objects, trained, "acme", b"acme's photo")
    _populate(engine, objects, trained, "other", b"other's photo")
    return engine, objects, trained


def test_erase_tenant_removes_everything_of_that_tenant_and_nothing_else(world) -> None:
    engine, objects, trained = world
    stored_before = set(objects.stored())
    with engine.begin() as conn:
        write_entry(conn, AuditEntry(action="job.create", tenant="acme", outcome="ok"))
    report = erase_tenant(engine, objects, trained, "acme", AuditEntry(action="tenant.erase", client="cli"))

    assert (report.jobs, report.objects, report.collections, report.collection_images) == (1, 1, 1, 1)
    assert (report.training_jobs, report.model_versions, report.keys, report.usage_rows) == (1, 1, 1, 1)
    assert report.tenant_settings == 1 and report.model_folders_removed == ["cats-acme"]
    for table, column in (
        (jobs, jobs.c.tenant),
        (collections, collections.c.tenant),
        (training_jobs, training_jobs.c.tenant),
        (model_versions, model_versions.c.tenant),
        (api_keys, api_keys.c.tenant),
        (usage_daily, usage_daily.c.tenant),
        (tenants, tenants.c.id),
    ):
        assert _count(engine, table, column == "acme") == 0, table.name
        assert _count(engine, table, column == "other") == 1, table.name  # the other tenant keeps its own
    assert len(stored_before - set(objects.stored())) == 1 and len(objects.stored()) == 1
    assert not (trained / "cats-acme").exists() and (trained / "cats-other" / "1" / "config.yaml").is_file()
    entries = _count(engine, audit_log, (audit_log.c.action == "tenant.erase") & (audit_log.c.tenant == "acme"))
    assert entries == 1  # the erasure is audited; the tenant's other entries stay without --audit
    assert _count(engine, audit_log, (audit_log.c.action == "job.create") & (audit_log.c.tenant == "acme")) == 1

    again = erase_tenant(engine, objects, trained, "acme", AuditEntry(action="tenant.erase"), erase_audit=True)
    assert (again.jobs, again.keys, again.model_versions) == (0, 0, 0)  # idempotent
    assert _count(engine, audit_log, audit_log.c.tenant == "acme") == 1  # only the last erasure's entry


def test_erase_never_leaves_the_trained_models_folder(world, tmp_path: Path) -> None:
    engine, objects, trained = world
    outside = tmp_path / "precious"
    (outside / "1").mkdir(parents=True)
    with engine.begin() as conn:  # a row naming a path out of the folder (the registry never writes one)
        conn.execute(
            model_versions.insert().values(model="../precious", version="1", tenant="acme", labels=[], created_at=1.0)
        )
    erase_tenant(engine, objects, trained, "acme", AuditEntry(action="tenant.erase"))
    assert (outside / "1").is_dir()


def test_retention_sweep_expires_old_training_jobs_and_usage_days(world) -> None:
    engine, objects, _ = world
    store = TrainingStore(engine)
    old = store.create("acme", None, "dogs", {"dataset": "/d"})
    store.finish(old.id, "completed", result={})
    running = store.create("acme", None, "birds", {"dataset": "/d"})
    with engine.begin() as conn:
        conn.execute(training_jobs.update().where(training_jobs.c.id == old.id).values(finished_at=1.0))
        conn.execute(training_jobs.update().where(training_jobs.c.id == running.id).values(created_at=1.0))
        today = time.strftime("%Y-%m-%d", time.gmtime())
        conn.execute(usage_daily.insert().values(key_id="kx", day=today, tenant="acme", images=7))

    report = sweep(engine, objects, retention_s=86400.0)

    assert report.training_jobs == 1 and report.usage_rows == 2  # both tenants' 2026-01-01 rows
    assert _count(engine, training_jobs, training_jobs.c.id == old.id) == 0
    assert _count(engine, training_jobs, training_jobs.c.id == running.id) == 1  # not finished: kept
    assert _count(engine, usage_daily, usage_daily.c.day == today) == 1  # today's counts feed the quota


def test_cli_erase_needs_yes_and_reports_what_it_deleted(tmp_path: Path) -> None:
    env = {"IMGSERVE_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    KeyStore(engine).create("k", "admin", "acme")
    command = [sys.executable, "-m", "serving.cli", "tenants", "erase", "acme"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _count(engine, api_keys, api_keys.c.tenant == "acme") == 1
    done = subprocess.run([*command, "--yes"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["keys"] == 1
    assert _count(engine, api_keys, api_keys.c.tenant == "acme") == 0


def test_erase_revokes_the_keys_first_and_purges_jobs_made_while_it_ran(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tenant's keys were deleted in the last step and its jobs listed once at the start: a key kept working
    through a long purge, and a job its client submitted meanwhile survived the erasure."""
    import serving.jobs.tenant_erasure as tenant_erasure

    engine, objects, trained = world
    _, key = KeyStore(engine).create("late", "analyst", "acme")
    seen: list[bool] = []
    real_purge = tenant_erasure.purge_job

    def purge_while_a_client_submits(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        record = KeyStore(engine).verify(key)
        seen.append(record is not None and record.revoked_at is None)
        if len(seen) == 1:  # a submission that was being taken in lands after the first listing
            JobStore(engine).create_job(
                JobSpec("m", 1, ()), [NewItem("late.jpg", "uri", "file:///late.jpg")], tenant="acme"
            )
        return real_purge(*args, **kwargs)

    monkeypatch.setattr(tenant_erasure, "purge_job", purge_while_a_client_submits)
    report = erase_tenant(engine, objects, trained, "acme", AuditEntry(action="tenant.erase", client="cli"))
    assert seen and not any(seen)  # the key was revoked before the first job was purged
    assert report.jobs == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.tenant == "acme")).scalar() == 0


def test_a_collection_its_jobs_purge_erased_is_in_the_report(tmp_path: Path) -> None:
    """A collection saved from a job goes with the job's purge, before the erasure counts collections: the report
    (and the tenant.erase audit entry) said 0 collections, 0 images for it."""
    from serving.jobs.tables import job_location

    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    objects = ObjectStore(str(tmp_path / "objects"))
    job_id = JobStore(engine).create_job(
        JobSpec("m", 1, (), None, False), [NewItem("a.jpg", "object", objects.put(b"photo"), 3)], tenant="gamma"
    )
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            collections.insert().values(
                id="cg", name="gcol", tenant="gamma", status="done", stages=[], job_id=job_id,
                sources=[job_location(job_id)], created_at=now, updated_at=now,
            )
        )  # fmt: skip
        conn.execute(
            collection_images.insert().values(
                collection_id="cg", name="a.jpg", ok=True, created_at=now, location=job_location(job_id)
            )
        )
    report = erase_tenant(engine, objects, tmp_path / "trained", "gamma", AuditEntry(action="tenant.erase"))
    assert (report.jobs, report.collections, report.collection_images) == (1, 1, 1)
    assert _count(engine, collections, collections.c.tenant == "gamma") == 0
