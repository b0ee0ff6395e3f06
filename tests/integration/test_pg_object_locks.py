"""The digest lock that orders a writer of references against a deleter of stored objects (serving.jobs.objects
`hold_objects` / `lock_for_delete`), on a real PostgreSQL (READ COMMITTED) and a moto S3 server, two connections,
each interleaving forced (the helpers of test_pg_races_stores: one actor held at a statement or its commit, the other
started, PostgreSQL asked that it waits for the first one's lock):

- a deleter that deleted the object and holds the lock at its commit: the writer recording its reference waits, then
  finds the object gone and stores it again; its committed result never names a missing object;
- a writer holding the lock at its commit: the deleter waits, then sees the reference and keeps the object;
- a 1,000-input intake locks its digests as row locks (none in the server's lock table, which advisory locks would
  fill), and a deleter of one of them waits for it;
- the three lost-object scenarios of tests/unit/test_shared_objects.py, run here on PostgreSQL and moto S3.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.jobs.erasure import drop_unrecorded_output
from serving.jobs.objects import ObjectStore
from serving.jobs.records import ClaimedItem, ItemOutput, JobSpec, NewItem, Outcome
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import stored_objects
from serving.jobs.work_queue import WorkQueue
from tests.integration import test_pg_races_stores as races
from tests.integration.conftest import S3Server
from tests.integration.test_pg_races_stores import TENANT, Actor, Database, hold_after, hold_at_commit
from tests.unit.test_shared_objects import (  # noqa: F401 - collected here with this module's `settings`
    test_a_recorded_output_another_item_just_stored_survives_the_purge_of_its_job,
    test_an_input_a_slow_archive_intake_stored_first_survives_a_purge,
    test_an_input_a_submission_stored_in_the_same_second_survives_a_purge,
    test_an_output_another_item_stored_in_the_same_second_survives_the_purged_items_drop,
)

pg_url, db = races.pg_url, races.db  # the module's PostgreSQL server, and a test's connections to it

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def objects(moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    moto_s3.use_here(monkeypatch)
    moto_s3.create_bucket("object-locks")
    yield ObjectStore("s3://object-locks/objects")


@pytest.fixture
def settings(pg_url: str, objects: ObjectStore) -> JobSettings:
    """The scenarios' job settings: this module's PostgreSQL, the moto S3 bucket."""
    return JobSettings(database_url=pg_url, object_store=objects.url)


def _running_item(engine: sa.Engine, objects: ObjectStore) -> ClaimedItem:
    item = NewItem("a.jpg", "object", objects.put(f"input {time.time_ns()}".encode()), 10)
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ()), [item], tenant=TENANT)
    queue = WorkQueue(engine)
    queue.mark_running(job_id)
    (claimed,) = queue.claim(job_id, 1)
    return claimed


def _output(objects: ObjectStore) -> tuple[Outcome, bytes]:
    """An item's outcome with an output it stored (and can store again, as `run_operations` sets it up)."""
    data = f"output {time.time_ns()}".encode()
    digest = objects.put(data)

    def ensure_stored() -> None:
        if objects.missing([digest]):
            objects.store_again(data)

    output = ItemOutput(digest, "a.png", 10, len(data), ensure_stored)
    return Outcome("done", model="m", result={}, output=output), data


def test_a_writer_waits_for_a_deleter_then_stores_its_object_again(db: Database, objects: ObjectStore) -> None:
    writer, deleter = db.engine("writer"), db.engine("deleter")
    item = _running_item(db.engines[0], objects)
    outcome, data = _output(objects)
    digest = outcome.output.object  # type: ignore[union-attr]
    gate = hold_at_commit(deleter)  # the object is deleted by now; the lock is still held
    db.gates.append(gate)
    deleting = Actor("deleter", lambda: drop_unrecorded_output(deleter, objects, digest))
    deleting.start()
    gate.wait_reached()
    assert objects.missing([digest]) == {digest}
    recording = Actor("writer", lambda: WorkQueue(writer).record(item, outcome))
    recording.start()
    db.waits_for("writer", "deleter")
    gate.release.set()
    assert deleting.outcome() is True
    assert recording.outcome() is True
    assert objects.get(digest) == data  # stored again under the lock, before the result committed
    with db.engines[0].connect() as conn:
        assert conn.execute(sa.select(stored_objects.c.digest).where(stored_objects.c.digest == digest)).first()


def test_a_deleter_waits_for_a_writer_then_keeps_the_object_it_references(db: Database, objects: ObjectStore) -> None:
    writer, deleter = db.engine("writer"), db.engine("deleter")
    item = _running_item(db.engines[0], objects)
    outcome, data = _output(objects)
    digest = outcome.output.object  # type: ignore[union-attr]
    gate = hold_at_commit(writer)
    db.gates.append(gate)
    recording = Actor("writer", lambda: WorkQueue(writer).record(item, outcome))
    recording.start()
    gate.wait_reached()
    deleting = Actor("deleter", lambda: drop_unrecorded_output(deleter, objects, digest))
    deleting.start()
    db.waits_for("deleter", "writer")
    gate.release.set()
    assert recording.outcome() is True
    assert deleting.outcome() is False
    assert objects.get(digest) == data


def test_a_thousand_input_intake_holds_row_locks_not_lock_table_entries(db: Database, tmp_path: Path) -> None:
    writer, deleter = db.engine("writer"), db.engine("deleter")
    local = ObjectStore(str(tmp_path / "objects"))
    items = [NewItem(f"{i}.jpg", "object", local.put(f"photo {i}".encode()), 8) for i in range(1000)]
    gate = hold_after(writer, "INSERT INTO job_items")  # every digest locked, every object checked
    db.gates.append(gate)
    checked: list[int] = []

    def ensure_stored(digests: list[str]) -> None:
        checked.append(len(digests))
        assert not local.missing(digests)

    creating = Actor(
        "writer", lambda: JobStore(writer).create_job(JobSpec("m", 1, ()), items, ensure_stored=ensure_stored)
    )
    creating.start()
    gate.wait_reached()
    with db.engines[0].connect() as conn:
        held = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE a.application_name = 'writer'"
            )
        ).scalar_one()
    assert checked == [1000]
    print(f"lock table entries of the writer holding 1000 digests: {held}")
    assert held < 64, f"{held} lock table entries for 1000 digests"  # max_locks_per_transaction's default
    deleting = Actor("deleter", lambda: drop_unrecorded_output(deleter, local, items[500].source))
    deleting.start()
    db.waits_for("deleter", "writer")
    gate.release.set()
    assert creating.outcome()
    assert deleting.outcome() is False  # the new job's row references it
    assert not local.missing([items[500].source])
    digests = [item.source for item in items]
    with db.engines[0].connect() as conn:
        locks = sa.select(sa.func.count()).where(stored_objects.c.digest.in_(digests))
        assert conn.execute(locks).scalar_one() == 1000
