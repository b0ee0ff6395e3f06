"""Stored objects are shared by every job that sent (or made) the same bytes, and a writer stores its object before
the row that references it exists. A purge deleted an object no row referenced yet, and kept it only when the object's
modification time was later than the purged job's (object stores keep whole seconds), so a writer lost its object:

1. an item of a purged job dropped the output it created while another job's item had stored the same bytes in the
   same second (its result not yet recorded): that result then pointed at a missing output;
2. a purge deleted an input another submission had stored in the same second, or earlier (a slow archive intake whose
   rows were not written yet): the new job's item failed `missing_input`;
3. `purge_job` deleted a purged job's recorded outputs with no check at all: another job's in-flight item that had
   just stored the same bytes lost its output.

Now one lock per digest orders them (serving.jobs.objects.hold_objects): a writer checks its objects under the lock
as it records its rows and stores again what a deleter removed. Each scenario runs on local files (with whole-second
modification times, as ext3, HFS+ and many network filesystems keep them) and on a moto S3 server, with SQLite.
"""

import asyncio
import hashlib
import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import drop_orphaned_objects, purge_job
from serving.jobs.intake import InputPart, Intake
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import operation_spec
from serving.jobs.records import JobSpec, Outcome
from serving.jobs.runner import JobRunner
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import job_items
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from tests.unit.test_jobs_operations import NoAnalysis, jpeg
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]
SPEC = JobSpec("m", 1, ("classification",))
CONVERT = JobSpec("m", 1, (), None, False, operation_spec(["convert"], {"format": "png", "max_side": "40"}, None, None))


@pytest.fixture(params=["file", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobSettings:
    if request.param == "s3":
        url = f"s3://{request.getfixturevalue('bucket')}/objects"
    else:
        url = str(tmp_path / "objects")
        whole_seconds = ObjectStore.modified  # the old guard's view on a filesystem that keeps whole seconds

        def modified(self: ObjectStore, digest: str) -> float | None:
            stamp = whole_seconds(self, digest)
            return None if stamp is None else float(int(stamp))

        monkeypatch.setattr(ObjectStore, "modified", modified)
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=url)
    migrate(create_store_engine(settings.database_url))
    return settings


def _start_of_a_second() -> None:
    """Wait for a new second to begin: what follows lands within one (object stores keep whole seconds)."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _runner(engine: sa.Engine, objects: ObjectStore, settings: JobSettings) -> JobRunner:
    queue = WorkQueue(engine, WorkerIdentity())
    return JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))


def _convert_job(engine: sa.Engine, objects: ObjectStore, settings: JobSettings, photo: bytes) -> str:
    items = Intake(objects, settings, "default").items([InputPart("image", "p.jpg", io.BytesIO(photo))])
    return JobStore(engine).create_job(CONVERT, items)


def _output_of(engine: sa.Engine, job_id: str) -> str:
    (result,) = JobStore(engine).results_page(job_id)
    assert result.status == "done", result
    return str(result.result["output"]["object"])  # type: ignore[index]


def _recording(runner: JobRunner, before: Callable[[], None]) -> None:
    """`runner`'s results are recorded after `before()` (run in the recording thread)."""
    record = runner.queue.record

    def held_record(item: Any, outcome: Outcome) -> bool:
        before()
        return record(item, outcome)

    runner.queue.record = held_record  # type: ignore[method-assign]


def test_an_output_another_item_stored_in_the_same_second_survives_the_purged_items_drop(
    settings: JobSettings,
) -> None:
    """Scenario 1: item A (job purged while it ran) created output X; item B of another job stored X again in the
    same second, its result not yet recorded; A's result found its job gone and dropped X; B then recorded X."""
    engine, objects = create_store_engine(settings.database_url), ObjectStore(settings.object_store)
    photo = jpeg(11)
    purged, other = (_convert_job(engine, objects, settings, photo) for _ in range(2))
    a, b = _runner(engine, objects, settings), _runner(engine, objects, settings)
    a_stored, b_stored, a_done = threading.Event(), threading.Event(), threading.Event()

    def a_before() -> None:  # X created; B stores it again; then the purge lands before A's result
        a_stored.set()
        assert b_stored.wait(30)
        purge_job(engine, objects, purged, None, None)

    def b_before() -> None:  # X stored again; B's result waits until A has dropped what it wrote
        b_stored.set()
        assert a_done.wait(30)

    _recording(a, a_before)
    _recording(b, b_before)

    async def scenario() -> None:
        _start_of_a_second()
        first = asyncio.create_task(a.run_job(JobStore(engine).get_job(purged)))
        assert await asyncio.to_thread(a_stored.wait, 30)
        second = asyncio.create_task(b.run_job(JobStore(engine).get_job(other)))
        assert await asyncio.wait_for(first, 30) is None  # A's job is gone
        a_done.set()
        assert await asyncio.wait_for(second, 30) is not None

    asyncio.run(scenario())
    output = _output_of(engine, other)
    assert objects.get(output)  # the recorded output is in the store (it was deleted: B's output was lost)


def _service(settings: JobSettings) -> JobService:
    return JobService(None, settings)


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def _before_rows(service: JobService, before: Callable[[], None]) -> None:
    """The service's next job is written after `before()` (its intake has stored its inputs by then)."""
    create_job = service.store.create_job

    def held(*args: Any, **kwargs: Any) -> str:
        before()
        return create_job(*args, **kwargs)

    service.store.create_job = held  # type: ignore[method-assign]


def _inputs_are_stored(service: JobService, job_id: str) -> list[bytes]:
    with service.engine.connect() as conn:
        digests = [
            row.source for row in conn.execute(sa.select(job_items.c.source).where(job_items.c.job_id == job_id))
        ]
    return [service.objects().get(digest) for digest in digests]  # missing_input if one was deleted


def test_an_input_a_submission_stored_in_the_same_second_survives_a_purge(settings: JobSettings) -> None:
    """Scenario 2, same second: job J1 holds photo P; a second submission stores P again within the second, and
    before its rows are written J1 is purged."""
    service, photo = _service(settings), jpeg(21)
    _start_of_a_second()
    first = asyncio.run(service.submit(SPEC, [InputPart("image", "p.jpg", io.BytesIO(photo))]))
    _before_rows(service, lambda: purge_job(service.engine, service.objects(), first.id, None, None))
    second = asyncio.run(service.submit(SPEC, [InputPart("image", "again.jpg", io.BytesIO(photo))]))
    assert _inputs_are_stored(service, second.id) == [photo]


def test_an_input_a_slow_archive_intake_stored_first_survives_a_purge(settings: JobSettings) -> None:
    """Scenario 2, earlier: an archive's intake stores P; meanwhile job J1 is made with P (storing it again) and
    purged; then the archive's rows are written."""
    service, photo, other = _service(settings), jpeg(31), jpeg(32)

    def another_job_made_and_purged() -> None:
        objects = service.objects()
        job_id = _convert_job(service.engine, objects, settings, photo)
        assert purge_job(service.engine, objects, job_id, None, None).objects == 1  # P went (no row held it)
        assert not objects.exists(_digest(photo))

    _before_rows(service, another_job_made_and_purged)
    archive = _zip({"photos/p.jpg": photo, "photos/o.jpg": other})
    job = asyncio.run(service.submit(SPEC, [InputPart("archive", "photos.zip", io.BytesIO(archive))]))
    assert sorted(_inputs_are_stored(service, job.id)) == sorted([photo, other])


def test_a_recorded_output_another_item_just_stored_survives_the_purge_of_its_job(settings: JobSettings) -> None:
    """Scenario 3: job JX recorded output X; job JY's item stores X and, before its result is recorded, JX is purged
    (its recorded outputs were deleted without any check)."""
    engine, objects = create_store_engine(settings.database_url), ObjectStore(settings.object_store)
    photo = jpeg(41)
    done, in_flight = (_convert_job(engine, objects, settings, photo) for _ in range(2))
    assert asyncio.run(_runner(engine, objects, settings).run_job(JobStore(engine).get_job(done))) is not None
    output = _output_of(engine, done)
    runner = _runner(engine, objects, settings)
    _recording(runner, lambda: purge_job(engine, objects, done, None, None))
    assert asyncio.run(runner.run_job(JobStore(engine).get_job(in_flight))) is not None
    assert _output_of(engine, in_flight) == output
    assert objects.get(output)


def test_a_purge_still_deletes_what_no_row_references(settings: JobSettings) -> None:
    """The lock keeps nothing it should not: a purged job's own input and output go, with their lock rows; an
    orphan the sweep finds goes too."""
    engine, objects = create_store_engine(settings.database_url), ObjectStore(settings.object_store)
    photo = jpeg(51)
    job_id = _convert_job(engine, objects, settings, photo)
    assert asyncio.run(_runner(engine, objects, settings).run_job(JobStore(engine).get_job(job_id))) is not None
    output = _output_of(engine, job_id)
    report = purge_job(engine, objects, job_id, None, None)
    assert (report.inputs, report.objects) == (2, 2)
    assert objects.missing([_digest(photo), output]) == {_digest(photo), output}
    from serving.jobs.tables import stored_objects

    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(stored_objects)).scalar_one() == 0
    orphan = objects.put(b"refused submission")
    assert drop_orphaned_objects(engine, objects, now=time.time() + 7200) == 1
    assert objects.missing([orphan]) == {orphan}


@pytest.fixture
def local_objects(tmp_path: Path) -> Iterator[tuple[sa.Engine, ObjectStore]]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    yield engine, ObjectStore(str(tmp_path / "objects"))
    engine.dispose()


def test_a_new_jobs_inputs_are_in_the_store_when_its_items_can_be_claimed(
    local_objects: tuple[sa.Engine, ObjectStore],
) -> None:
    """Checked under the lock, before the commit: once the rows are visible (a worker may claim the item at once),
    the input is there; a check after the commit would leave the item a moment to fail `missing_input`."""
    engine, objects = local_objects
    photo = jpeg(61)
    parts = [InputPart("image", "p.jpg", io.BytesIO(photo))]
    intake = Intake(objects, JobSettings(database_url="sqlite://", object_store=objects.root), "default")
    items = intake.items(parts)
    objects.delete(_digest(photo))  # a purge's, between the intake and the rows
    at_commit: list[bool] = []
    sa.event.listen(engine, "commit", lambda conn: at_commit.append(not objects.missing([_digest(photo)])))
    JobStore(engine).create_job(SPEC, items, ensure_stored=lambda digests: intake.ensure_stored(parts, digests))
    assert at_commit == [True]


def test_an_input_that_cannot_be_stored_again_refuses_the_request(tmp_path: Path) -> None:
    """A deleter removed an object the request stored, and the request's parts no longer give those bytes: its rows
    would name a missing object, so the submission is refused as retryable (503) instead of committed."""
    from serving.jobs.errors import JobStoreUnavailableError
    from serving.jobs.intake import InputPart, Intake
    from serving.jobs.objects import ObjectStore
    from serving.jobs.settings import JobSettings

    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    intake = Intake(ObjectStore(settings.object_store), settings, "default")
    part = InputPart("image", "a.jpg", io.BytesIO(b"the bytes as stored"))
    (item,) = intake.items([part])
    intake.objects.delete(item.source)
    intake.ensure_stored([part], [item.source])  # read again from the request: stored again
    assert not intake.objects.missing([item.source])
    intake.objects.delete(item.source)
    changed = InputPart("image", "a.jpg", io.BytesIO(b"other bytes"))
    with pytest.raises(JobStoreUnavailableError, match="send it again"):
        intake.ensure_stored([changed], [item.source])
