"""The job, training and collection stores' concurrent transactions on a real PostgreSQL (READ COMMITTED), each
interleaving forced, not hoped for: one actor's transaction is held at a chosen statement (or at its commit) by an
engine event, the other actor starts, and the test waits until PostgreSQL says that actor waits for the first one's
lock (`pg_blocking_pids`) before letting the first go on. Each actor is a thread with its own engine (its own
connection, named by `application_name`). A deadlock would surface as an actor's error (PostgreSQL detects it after
`deadlock_timeout`, 1 s); a wait that never ends fails the test after `WAIT_S`.

- A job purged (`purge_job`) while one of its items records its result (`WorkQueue.record`): the result either
  lands before the purge reads the job's outputs, and its stored output goes with the job, or it waits for the
  purge, then finds no item and returns False; the item is gone either way (`item_exists`).
- A tenant erased (`erase_tenant`) while its training job records its version (`TrainingStore.record_version`): the
  erasure either waits for the version's commit and removes the row and its folder, or the job waits for the
  erasure's commit, finds its row gone and records nothing (returns False).
- A collection deleted (`CollectionStore.delete`) while a run records images into it (`add_each`): the delete either
  waits for the images and removes (and counts) them with the collection, or the run waits for the delete and raises
  CollectionNotFoundError (never a foreign key error). Both lock the collection's row first.
"""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipelines.collections.record import ImageRecord
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import PurgeReport, purge_job
from serving.jobs.errors import CollectionNotFoundError
from serving.jobs.objects import ObjectStore
from serving.jobs.records import ClaimedItem, ItemOutput, JobSpec, NewItem, Outcome
from serving.jobs.store import JobStore
from serving.jobs.tables import collection_images, collections, job_items, job_results, model_versions, training_jobs
from serving.jobs.tenant_erasure import erase_tenant
from serving.jobs.work_queue import WorkQueue
from serving.security.audit import AuditEntry
from serving.training.store import TrainingStore
from tests.integration.postgres import running_postgres

pytestmark = pytest.mark.integration
WAIT_S = 10.0  # the longest any step may wait: a lock never granted (or a deadlock not detected) fails by then
TENANT = "acme"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with running_postgres() as pg:
        engine = create_store_engine(pg.url)
        migrate(engine)
        engine.dispose()
        yield pg.url


@dataclass
class Gate:
    """Where an actor's transaction is held: `reached` once it got there, it goes on once `release` is set."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def hold(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(WAIT_S), "the test never released the held transaction"

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT_S), "the actor never got to the point it is held at"


def hold_after(engine: sa.Engine, *words: str) -> Gate:
    """Hold `engine`'s transaction right after the first statement containing all `words` (in its transaction)."""
    gate = Gate()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if all(word in statement for word in words):
            gate.hold()

    sa.event.listen(engine, "after_cursor_execute", after)
    return gate


def hold_at_commit(engine: sa.Engine) -> Gate:
    """Hold `engine`'s first transaction just before it commits: every statement ran, every lock is still held."""
    gate = Gate()
    sa.event.listen(engine, "commit", lambda conn: gate.hold())
    return gate


class Actor(threading.Thread):
    """Runs `call` on its own thread; `outcome` joins it and gives its result or raises its error."""

    def __init__(self, name: str, call: Callable[[], Any]):
        super().__init__(name=name, daemon=True)
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test by `outcome`
            self.error = exc

    def outcome(self) -> Any:
        self.join(WAIT_S)
        assert not self.is_alive(), f"{self.name} still waits after {WAIT_S} s"
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Database:
    url: str
    engines: list[sa.Engine] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)

    def engine(self, name: str) -> sa.Engine:
        """An engine whose connections PostgreSQL names `name` (pg_stat_activity.application_name)."""
        engine = create_store_engine(f"{self.url}?application_name={name}")
        self.engines.append(engine)
        return engine

    def waits_for(self, waiter: str, holder: str) -> None:
        """Until `waiter`'s backend waits for a lock `holder`'s backend holds."""
        blocked = sa.text(
            "SELECT 1 FROM pg_stat_activity w JOIN pg_stat_activity h ON h.pid = ANY(pg_blocking_pids(w.pid))"
            " WHERE w.application_name = :waiter AND h.application_name = :holder"
        )
        deadline = time.monotonic() + WAIT_S
        with self.engines[0].connect() as conn:
            while conn.execute(blocked, {"waiter": waiter, "holder": holder}).first() is None:
                assert time.monotonic() < deadline, f"{waiter} never waited for {holder}'s lock"
                conn.rollback()
                time.sleep(0.01)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    database.engine("monitor")
    yield database
    for gate in database.gates:  # a failed test leaves no actor held
        gate.release.set()
    for engine in database.engines:
        engine.dispose()


# ---- 1. purge_job against WorkQueue.record ---------------------------------------------------------------------


def _running_item(engine: sa.Engine, objects: ObjectStore) -> ClaimedItem:
    """A running job of one claimed item (its input stored)."""
    item = NewItem("a.jpg", "object", objects.put(f"input {time.time_ns()}".encode()), 10)
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ()), [item], tenant=TENANT)
    queue = WorkQueue(engine)
    queue.mark_running(job_id)
    (claimed,) = queue.claim(job_id, 1)
    return claimed


def _with_output(objects: ObjectStore) -> Outcome:
    digest = objects.put(f"output {time.time_ns()}".encode())
    return Outcome("done", model="m", result={}, output=ItemOutput(digest, "a.png", 10, 6))


def _purge(engine: sa.Engine, objects: ObjectStore, item: ClaimedItem) -> PurgeReport:
    return purge_job(engine, objects, item.job_id, TENANT, AuditEntry(action="job.purge"))


def _rows_of(engine: sa.Engine, item: ClaimedItem) -> tuple[int, int]:
    with engine.connect() as conn:
        items = conn.execute(sa.select(sa.func.count()).where(job_items.c.job_id == item.job_id)).scalar_one()
        results = conn.execute(sa.select(sa.func.count()).where(job_results.c.job_id == item.job_id)).scalar_one()
    return items, results


RECORD_HELD = {
    "record inserted its result, not yet its item's status": ("INSERT INTO job_results",),
    "record wrote everything, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(RECORD_HELD))
def test_a_result_recorded_first_is_purged_with_its_output(db: Database, tmp_path: Path, held_at: str) -> None:
    worker, purger = db.engine("record"), db.engine("purge")
    objects = ObjectStore(str(tmp_path / "objects"))
    item = _running_item(db.engines[0], objects)
    outcome = _with_output(objects)
    words = RECORD_HELD[held_at]
    gate = hold_after(worker, *words) if words else hold_at_commit(worker)
    db.gates.append(gate)
    recording = Actor("record", lambda: WorkQueue(worker).record(item, outcome))
    recording.start()
    gate.wait_reached()
    purging = Actor("purge", lambda: _purge(purger, objects, item))
    purging.start()
    db.waits_for("purge", "record")  # on the item the result's foreign key holds
    gate.release.set()
    assert recording.outcome() is True
    report = purging.outcome()
    assert (report.items, report.inputs, report.objects) == (1, 2, 2)  # the input and the output it recorded
    assert not objects.exists(outcome.output.object)
    assert _rows_of(db.engines[0], item) == (0, 0)
    assert WorkQueue(db.engines[0]).item_exists(item) is False


def test_a_result_recorded_after_the_job_row_is_locked_lands_before_the_outputs_are_read(
    db: Database, tmp_path: Path
) -> None:
    """The purge holds the job's row, not yet its items: a result (which never locks the job's row) commits."""
    worker, purger = db.engine("record"), db.engine("purge")
    objects = ObjectStore(str(tmp_path / "objects"))
    item = _running_item(db.engines[0], objects)
    outcome = _with_output(objects)
    gate = hold_after(purger, "FROM jobs", "FOR UPDATE")
    db.gates.append(gate)
    purging = Actor("purge", lambda: _purge(purger, objects, item))
    purging.start()
    gate.wait_reached()
    assert WorkQueue(worker).record(item, outcome) is True
    gate.release.set()
    assert (purging.outcome().inputs, objects.exists(outcome.output.object)) == (2, False)
    assert _rows_of(db.engines[0], item) == (0, 0)


PURGE_HELD = {
    "purge locked the job's items": ("FROM job_items", "FOR UPDATE"),
    "purge deleted the job's rows, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(PURGE_HELD))
def test_a_result_recorded_while_the_purge_holds_the_items_waits_then_is_dropped(
    db: Database, tmp_path: Path, held_at: str
) -> None:
    worker, purger = db.engine("record"), db.engine("purge")
    objects = ObjectStore(str(tmp_path / "objects"))
    item = _running_item(db.engines[0], objects)
    outcome = _with_output(objects)
    words = PURGE_HELD[held_at]
    gate = hold_after(purger, *words) if words else hold_at_commit(purger)
    db.gates.append(gate)
    purging = Actor("purge", lambda: _purge(purger, objects, item))
    purging.start()
    gate.wait_reached()
    recording = Actor("record", lambda: WorkQueue(worker).record(item, outcome))
    recording.start()
    db.waits_for("record", "purge")
    gate.release.set()
    report = purging.outcome()
    assert recording.outcome() is False
    assert (report.items, report.inputs) == (1, 1)  # the output was never recorded: the runner drops it
    assert _rows_of(db.engines[0], item) == (0, 0)
    assert WorkQueue(db.engines[0]).item_exists(item) is False


# ---- 2. TrainingStore.record_version against erase_tenant --------------------------------------------------------


def _erase(engine: sa.Engine, trained: Path) -> Any:
    return erase_tenant(engine, None, trained, TENANT, AuditEntry(action="tenant.erase"))


def _training(db: Database, tmp_path: Path) -> tuple[Any, str, Path]:
    """A training job of the tenant, a model named for this test, and the trained-models folder holding the version
    the job is registering (written before its row, as the runner writes it)."""
    model = f"m{time.time_ns()}"
    job = TrainingStore(db.engines[0]).create(TENANT, None, model, {})
    trained = tmp_path / "trained"
    (trained / model / "1").mkdir(parents=True)
    return job, model, trained


def _version_rows(engine: sa.Engine, model: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(model_versions.c.model == model)).scalar_one()


def _training_rows(engine: sa.Engine, job_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(training_jobs.c.id == job_id)).scalar_one()


REGISTRATION_HELD = {
    "record_version locked the job's row": ("UPDATE training_jobs",),
    "record_version wrote the version, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(REGISTRATION_HELD))
def test_an_erasure_waits_for_a_version_being_recorded_and_removes_it(
    db: Database, tmp_path: Path, held_at: str
) -> None:
    runner, eraser = db.engine("register"), db.engine("erase")
    job, model, trained = _training(db, tmp_path)
    words = REGISTRATION_HELD[held_at]
    gate = hold_after(runner, *words) if words else hold_at_commit(runner)
    db.gates.append(gate)
    registering = Actor("register", lambda: TrainingStore(runner).record_version(model, "1", job, ["a"], {}, True))
    registering.start()
    gate.wait_reached()
    erasing = Actor("erase", lambda: _erase(eraser, trained))
    erasing.start()
    db.waits_for("erase", "register")
    gate.release.set()
    assert registering.outcome() is True
    report = erasing.outcome()
    assert (report.training_jobs, report.model_versions, report.model_folders_removed) == (1, 1, [model])
    assert (_version_rows(db.engines[0], model), _training_rows(db.engines[0], job.id)) == (0, 0)
    assert not (trained / model).exists()


ERASURE_HELD = {
    "erasure deleted the training jobs": ("DELETE FROM training_jobs",),
    "erasure listed the versions": ("FROM model_versions", "SELECT"),
}


@pytest.mark.parametrize("held_at", list(ERASURE_HELD))
def test_a_version_recorded_while_the_erasure_deletes_its_job_waits_then_records_nothing(
    db: Database, tmp_path: Path, held_at: str
) -> None:
    runner, eraser = db.engine("register"), db.engine("erase")
    job, model, trained = _training(db, tmp_path)
    gate = hold_after(eraser, *ERASURE_HELD[held_at])
    db.gates.append(gate)
    erasing = Actor("erase", lambda: _erase(eraser, trained))
    erasing.start()
    gate.wait_reached()
    registering = Actor("register", lambda: TrainingStore(runner).record_version(model, "1", job, ["a"], {}, True))
    registering.start()
    db.waits_for("register", "erase")
    gate.release.set()
    report = erasing.outcome()
    assert registering.outcome() is False  # the runner removes the folder it wrote
    assert (report.training_jobs, report.model_versions, report.model_folders_removed) == (1, 0, [])
    assert (_version_rows(db.engines[0], model), _training_rows(db.engines[0], job.id)) == (0, 0)


# ---- 3. CollectionStore.add_each against CollectionStore.delete -------------------------------------------------


def _collection(engine: sa.Engine) -> str:
    return CollectionStore(engine).open(f"c{time.time_ns()}", ["metadata"], ["/x"], TENANT).id


def _images(name: str = "a.jpg") -> list[RecordedImage]:
    return [RecordedImage(ImageRecord(name), {}, f"/x/{name}")]


def _collection_rows(engine: sa.Engine, collection_id: str) -> tuple[int, int]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(sa.func.count()).where(collections.c.id == collection_id)).scalar_one()
        images = conn.execute(
            sa.select(sa.func.count()).where(collection_images.c.collection_id == collection_id)
        ).scalar_one()
    return found, images


INSERT_HELD = {
    "the insert touched the collection's row": ("UPDATE collections",),
    "the insert wrote its images, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(INSERT_HELD))
def test_a_delete_waits_for_images_being_recorded_and_removes_them(db: Database, held_at: str) -> None:
    run, deleter = db.engine("insert"), db.engine("delete")
    collection_id = _collection(db.engines[0])
    CollectionStore(db.engines[0]).add(collection_id, _images("before.jpg"))
    words = INSERT_HELD[held_at]
    gate = hold_after(run, *words) if words else hold_at_commit(run)
    db.gates.append(gate)
    inserting = Actor("insert", lambda: CollectionStore(run).add_each(collection_id, _images()))
    inserting.start()
    gate.wait_reached()
    deleting = Actor("delete", lambda: CollectionStore(deleter).delete(collection_id, TENANT))
    deleting.start()
    db.waits_for("delete", "insert")
    gate.release.set()
    assert [image.record.name for image in inserting.outcome()[1]] == ["a.jpg"]
    # the delete locked the collection's row after the run's commit: it counted and deleted both images
    assert deleting.outcome().images == 2
    assert _collection_rows(db.engines[0], collection_id) == (0, 0)


DELETE_HELD = {
    "the delete locked the collection and deleted its images": ("DELETE FROM collection_images",),
    "the delete removed everything, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(DELETE_HELD))
def test_images_recorded_while_the_delete_holds_the_collection_wait_then_find_it_gone(
    db: Database, held_at: str
) -> None:
    run, deleter = db.engine("insert"), db.engine("delete")
    collection_id = _collection(db.engines[0])
    words = DELETE_HELD[held_at]
    gate = hold_after(deleter, *words) if words else hold_at_commit(deleter)
    db.gates.append(gate)
    deleting = Actor("delete", lambda: CollectionStore(deleter).delete(collection_id, TENANT))
    deleting.start()
    gate.wait_reached()
    inserting = Actor("insert", lambda: CollectionStore(run).add_each(collection_id, _images()))
    inserting.start()
    db.waits_for("insert", "delete")
    gate.release.set()
    assert deleting.outcome().id == collection_id
    with pytest.raises(CollectionNotFoundError):
        inserting.outcome()
    assert _collection_rows(db.engines[0], collection_id) == (0, 0)
