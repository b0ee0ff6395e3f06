"""A job purged (`DELETE /v1/jobs/{id}?purge=true`, a retention sweep, a tenant erasure) while items are in flight:
their outputs landed after the purge, at the job's `output_uri` destination (kept there for good: a user who deleted
the job found outputs written after the delete) and in the object store (until the orphan sweep). The item now checks
that its job still exists before writing, and removes what it wrote when its result finds the job gone. A job that is
not purged keeps its outputs, a re-run's included (its result was recorded once, by the first run)."""

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving.jobs import operations as operations_module
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import purge_job, sweep
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import operation_spec
from serving.jobs.records import ClaimedItem, JobSpec, NewItem, Outcome
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import job_items, job_results
from serving.jobs.tenant_erasure import erase_tenant
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from serving.security.audit import AuditEntry
from tests.unit.test_jobs_operations import NoAnalysis, jpeg

pytestmark = pytest.mark.unit
TENANT = "acme"

Parts = tuple[sa.Engine, ObjectStore, JobSettings, Path]


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    root = tmp_path / "exports"
    root.mkdir()
    settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"), output_root=root
    )
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    return engine, ObjectStore(settings.object_store), settings, root


def _submit(parts: Parts, count: int) -> tuple[str, set[str]]:
    """A convert job writing to `<root>/web`: (its id, the digests of its stored inputs)."""
    engine, objects, _, root = parts
    operations = operation_spec(
        ["convert"], {"format": "png", "max_side": "40"}, None, None, f"file://{root}/web", root
    )
    items = [NewItem(f"{i}.jpg", "object", objects.put(jpeg(i)), 10) for i in range(count)]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items, tenant=TENANT)
    return job_id, {item.source for item in items}


def _runner(parts: Parts) -> JobRunner:
    engine, objects, settings, _ = parts
    queue = WorkQueue(engine, WorkerIdentity())
    return JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))


def _purge(parts: Parts, job_id: str) -> None:
    purge_job(parts[0], parts[1], job_id, TENANT, AuditEntry(action="job.purge"))


def _cancel_then_expire(parts: Parts, job_id: str) -> None:
    """Cancelled (its in-flight items still run), then swept by a retention of 0 s."""
    JobStore(parts[0]).cancel_job(job_id)
    assert sweep(parts[0], parts[1], retention_s=0.0).jobs == 1


def _erase_tenant(parts: Parts, job_id: str) -> None:
    assert erase_tenant(parts[0], parts[1], None, TENANT, AuditEntry(action="tenant.erase")).jobs == 1


PURGES: dict[str, Callable[[Parts, str], None]] = {
    "purge": _purge,
    "retention": _cancel_then_expire,
    "tenant_erasure": _erase_tenant,
}


def _left_behind(parts: Parts, inputs: set[str]) -> tuple[list[str], set[str], int]:
    """(files at the destination, stored objects other than the job's inputs, job rows of any kind left)."""
    engine, objects, _, root = parts
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(job_results)).scalar_one()
        rows += conn.execute(sa.select(sa.func.count()).select_from(job_items)).scalar_one()
    written = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    return written, set(objects.stored()) - inputs, int(rows)


@pytest.mark.parametrize("how", sorted(PURGES))
def test_an_item_converting_at_the_purge_writes_nothing_after_it(
    parts: Parts, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, inputs = _submit(parts, 2)
    runner = _runner(parts)
    operations = runner.image_operations()
    convert = operations.convert
    holding, released = threading.Event(), asyncio.Event()
    held = 0

    async def held_convert(*args: Any, **kwargs: Any) -> Any:
        nonlocal held
        held += 1
        if held == 2:
            holding.set()
        await released.wait()
        return await convert(*args, **kwargs)

    operations.convert = held_convert  # type: ignore[method-assign]
    written: list[str] = []
    write = operations_module.write_named_output
    monkeypatch.setattr(
        operations_module, "write_named_output", lambda *args: (written.append(args[1]), write(*args))[1]
    )

    async def scenario() -> None:
        turn = asyncio.create_task(runner.run_job(JobStore(parts[0]).get_job(job_id)))
        await asyncio.to_thread(holding.wait, 10)
        await asyncio.to_thread(PURGES[how], parts, job_id)
        released.set()
        assert await asyncio.wait_for(turn, 30) is None  # nothing to finish: the job is gone

    asyncio.run(scenario())
    assert held == 2 and written == []  # checked before writing: nothing was written, nothing had to be removed
    assert _left_behind(parts, inputs) == ([], set(), 0)


@pytest.mark.parametrize("how", sorted(PURGES))
def test_outputs_written_before_a_purge_that_beats_their_result_are_removed(parts: Parts, how: str) -> None:
    """The purge lands between the item's writes (object store, destination) and its result: the result finds no
    item, and what the item wrote goes."""
    job_id, inputs = _submit(parts, 1)
    runner = _runner(parts)
    record = runner.queue.record

    def purge_then_record(item: Any, outcome: Outcome) -> bool:
        assert outcome.output is not None and parts[1].exists(outcome.output.object)  # written by now
        PURGES[how](parts, job_id)
        return record(item, outcome)

    runner.queue.record = purge_then_record  # type: ignore[method-assign]
    assert asyncio.run(runner.run_job(JobStore(parts[0]).get_job(job_id))) is None
    assert _left_behind(parts, inputs) == ([], set(), 0)


def test_a_rerun_whose_result_was_recorded_keeps_the_output(parts: Parts) -> None:
    """Not purged: an item run again after its result was recorded (a worker judged dead while it recorded) is
    dropped as a second result, and the output the first run wrote stays where it is."""
    job_id, _ = _submit(parts, 1)
    runner = _runner(parts)
    assert asyncio.run(runner.run_job(JobStore(parts[0]).get_job(job_id))) is not None
    root = parts[3]
    (written,) = [path for path in root.rglob("*") if path.is_file()]
    (first,) = JobStore(parts[0]).results_page(job_id)
    with parts[0].begin() as conn:  # the item runs again, as if requeued
        worker = runner.queue.worker.id  # type: ignore[union-attr]
        conn.execute(job_items.update().values(status="running", worker_id=worker))
        row = conn.execute(sa.select(job_items)).one()
    item = ClaimedItem(row.id, job_id, row.idx, row.name, row.source_kind, row.source, row.attempts + 1)
    asyncio.run(runner._process(JobStore(parts[0]).get_job(job_id), item, "0.jpg"))
    assert written.is_file()
    assert parts[1].exists(first.result["output"]["object"])  # type: ignore[index]
    assert JobStore(parts[0]).results_page(job_id) == [first]
