"""The counts the collection store reports, on a real PostgreSQL (the project's throwaway server) and on SQLite; no
Ray. The interleavings are forced as in `test_pg_races_stores` (its `Gate`s and `Actor`s): one actor's transaction is
held at a statement or at its commit until PostgreSQL shows the other waiting for its lock.

- `add` / `add_each` say how many rows they wrote: a new name, a failed row replaced (by a later run, or by `--refresh`
  naming it in `replace`) count; a name already analysed, which the upsert's `ON CONFLICT ... WHERE` keeps, does not.
  On PostgreSQL they said 0 for every batch (the driver's rowcount of the executemany upsert).
- `delete` reports (its `CollectionInfo` and its audit entry's `images`) the images it removed, those a run recorded
  while the delete waited for it included (it said 1 where 2 were removed).
- A delete while a run re-records a name the collection has (a failed image tried again) is no deadlock: the delete
  used to remove the images before it locked the collection's row, the run locks the row, then upserts the image.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.collections.record import ImageRecord, failed_record
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.tables import collection_images
from serving.jobs.tenant_erasure import erase_tenant
from serving.security.audit import AuditEntry
from serving.security.tables import audit_log
from tests.integration.postgres import running_postgres
from tests.integration.test_pg_races_stores import Actor, Database, hold_after, hold_at_commit

pytestmark = pytest.mark.integration
TENANT = "acme"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with running_postgres() as pg:
        engine = create_store_engine(pg.url)
        migrate(engine)
        engine.dispose()
        yield pg.url


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    database.engine("monitor")
    yield database
    for gate in database.gates:  # a failed test leaves no actor held
        gate.release.set()
    for engine in database.engines:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectionStore]:
    if request.param == "sqlite":
        engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        migrate(engine)
    else:
        engine = create_store_engine(request.getfixturevalue("pg_url"))
    yield CollectionStore(engine)
    engine.dispose()


def _analysed(name: str, iso: int = 100) -> RecordedImage:
    return RecordedImage(ImageRecord(name, iso=iso), {}, f"/x/{name}")


def _failed(name: str) -> RecordedImage:
    return RecordedImage(failed_record(name, "network: timed out"), None, f"/x/{name}")


# ---- add / add_each: the rows written ---------------------------------------------------------------------------


def test_add_counts_the_rows_it_writes(store: CollectionStore) -> None:
    collection_id = store.open("counts", ["metadata"], ["/x"], TENANT).id
    assert store.add(collection_id, [_analysed("a.jpg")]) == 1  # executed alone: one set of parameters
    assert store.add(collection_id, [_analysed("b.jpg"), _failed("c.jpg"), _failed("d.jpg")]) == 3
    # a.jpg analysed (kept: not written), c.jpg failed then analysed (replaced), d.jpg failed again (replaced), e new
    again = [_analysed("a.jpg"), _analysed("c.jpg"), _failed("d.jpg"), _analysed("e.jpg")]
    assert store.add_each(collection_id, again) == (3, again)
    assert store.add(collection_id, [_analysed("a.jpg"), _analysed("b.jpg")]) == 0  # all analysed already
    # --refresh: the analysed images named in `replace` are written again, the others kept
    assert store.add_each(collection_id, [_analysed("a.jpg", 200), _analysed("b.jpg", 200)], replace={"b.jpg"})[0] == 1
    info = store.get(collection_id)
    assert (info.images, info.failed) == (4, 1)
    isos = {image.record.name: image.record.iso for _, image in store.images(collection_id)}
    assert (isos["a.jpg"], isos["b.jpg"]) == (100, 200)


def test_a_batch_stored_one_by_one_counts_each_row(store: CollectionStore) -> None:
    """A batch the database refuses (a value no column holds) is written image by image; the refused one as failed."""
    collection_id = store.open("one-by-one", ["metadata"], ["/x"], TENANT).id
    store.add(collection_id, [_analysed("kept.jpg")])
    batch = [_analysed("kept.jpg"), _analysed("a.jpg"), _analysed("hostile.jpg", 10**30), _analysed("b.jpg")]
    written, recorded = store.add_each(collection_id, batch)
    assert written == 3  # a.jpg, b.jpg, hostile.jpg (failed); kept.jpg was analysed already
    assert [image.record.ok for image in recorded] == [True, True, False, True]


# ---- delete: the images it removed ------------------------------------------------------------------------------


def _audited_images(engine: sa.Engine, collection_id: str) -> list[int]:
    with engine.connect() as conn:
        details = conn.execute(sa.select(audit_log.c.detail).where(audit_log.c.target == collection_id)).scalars()
        return [detail["images"] for detail in details]


INSERT_HELD = {
    "the insert touched the collection's row": ("UPDATE collections",),
    "the insert wrote its images, at its commit": (),
}


@pytest.mark.parametrize("held_at", list(INSERT_HELD))
def test_a_delete_that_waited_for_a_run_counts_the_images_the_run_recorded(db: Database, held_at: str) -> None:
    run, deleter = db.engine("insert"), db.engine("delete")
    collection_id = CollectionStore(db.engines[0]).open(f"waited {held_at}", ["metadata"], ["/x"], TENANT).id
    CollectionStore(db.engines[0]).add(collection_id, [_analysed("before.jpg")])
    words = INSERT_HELD[held_at]
    gate = hold_after(run, *words) if words else hold_at_commit(run)
    db.gates.append(gate)
    inserting = Actor("insert", lambda: CollectionStore(run).add_each(collection_id, [_failed("late.jpg")]))
    inserting.start()
    gate.wait_reached()
    audit = AuditEntry(action="collection.delete", tenant=TENANT)
    deleting = Actor("delete", lambda: CollectionStore(deleter).delete(collection_id, TENANT, audit))
    deleting.start()
    db.waits_for("delete", "insert")
    gate.release.set()
    assert [image.record.name for image in inserting.outcome()[1]] == ["late.jpg"]
    info = deleting.outcome()
    assert (info.images, info.failed) == (1, 1)  # was (1, 0): only the image it saw before it waited
    assert _audited_images(db.engines[0], collection_id) == [2]  # was [1]


def test_a_delete_while_a_run_tries_a_failed_image_again_is_no_deadlock(db: Database) -> None:
    """The run holds the collection's row (`_touch`) and is about to upsert `a.jpg`; the delete removed `a.jpg`, then
    waited for the row: each waited for the other, and PostgreSQL aborted the delete (DeadlockDetected)."""
    run, deleter = db.engine("insert"), db.engine("delete")
    collection_id = CollectionStore(db.engines[0]).open("retried", ["metadata"], ["/x"], TENANT).id
    CollectionStore(db.engines[0]).add(collection_id, [_failed("a.jpg")])
    gate = hold_after(run, "UPDATE collections")
    db.gates.append(gate)
    inserting = Actor("insert", lambda: CollectionStore(run).add_each(collection_id, [_analysed("a.jpg")]))
    inserting.start()
    gate.wait_reached()
    deleting = Actor("delete", lambda: CollectionStore(deleter).delete(collection_id, TENANT))
    deleting.start()
    db.waits_for("delete", "insert")
    gate.release.set()
    assert inserting.outcome()[1][0].record.ok  # the failed row replaced by the analysed one, deleted with the rest
    info = deleting.outcome()
    assert (info.images, info.failed) == (1, 0)
    with db.engines[0].connect() as conn:
        left = sa.select(sa.func.count()).where(collection_images.c.collection_id == collection_id)
        assert conn.execute(left).scalar_one() == 0


def test_a_tenant_erasure_while_a_run_tries_a_failed_image_again_is_no_deadlock(db: Database) -> None:
    """As the delete above, for `imgserve tenants erase`: it deleted the tenant's images before it locked their
    collections' rows, and deadlocked with a run holding its collection's row and about to upsert a failed image."""
    run, eraser = db.engine("insert"), db.engine("erase")
    tenant = "erased"  # its own: the module's database keeps the other tests' collections of TENANT
    collection_id = CollectionStore(db.engines[0]).open("erased", ["metadata"], ["/x"], tenant).id
    CollectionStore(db.engines[0]).add(collection_id, [_failed("a.jpg")])
    gate = hold_after(run, "UPDATE collections")
    db.gates.append(gate)
    inserting = Actor("insert", lambda: CollectionStore(run).add_each(collection_id, [_analysed("a.jpg")]))
    inserting.start()
    gate.wait_reached()
    entry = AuditEntry(action="tenant.erase", client="cli")
    erasing = Actor("erase", lambda: erase_tenant(eraser, None, None, tenant, entry))
    erasing.start()
    db.waits_for("erase", "insert")
    gate.release.set()
    assert inserting.outcome()[1][0].record.ok
    report = erasing.outcome()
    assert (report.collections, report.collection_images) == (1, 1)
    with db.engines[0].connect() as conn:
        left = sa.select(sa.func.count()).where(collection_images.c.collection_id == collection_id)
        assert conn.execute(left).scalar_one() == 0
