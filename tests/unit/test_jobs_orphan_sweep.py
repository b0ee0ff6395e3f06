"""Review of the orphan sweep (serving.jobs.erasure.drop_orphaned_objects): it decided on the modification times of a
listing of the whole store (minutes on a big bucket) and deleted what no job held. An input that a submission stored
again after the listing (`ObjectStore.put` of bytes stored before makes the object fresh; the submission has no row
yet) was deleted with it, and the new job's item failed `missing_input`: the purge already re-checks such inputs, the
sweep did not. Local object store, real SQLite store."""

import os
import time
from pathlib import Path

import pytest

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import ORPHAN_GRACE_S, drop_orphaned_objects
from serving.jobs.objects import ObjectStore

pytestmark = pytest.mark.unit


def test_an_input_stored_again_after_the_listing_is_not_dropped(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    objects = ObjectStore(str(tmp_path / "objects"))
    again, orphan = b"stored again by a submission", b"an orphan nobody sends again"
    digests = [objects.put(again), objects.put(orphan)]
    long_ago = time.time() - 2 * ORPHAN_GRACE_S
    for digest in digests:
        os.utime(objects._path(digest), (long_ago, long_ago))
    listing = objects.stored

    def listed_then_stored_again() -> dict[str, float]:
        listed = listing()
        time.sleep(0.01)
        objects.put(again)  # a submission being taken in, after the listing: no job row holds it yet
        return listed

    objects.stored = listed_then_stored_again  # type: ignore[method-assign]
    assert drop_orphaned_objects(engine, objects) == 1
    assert objects.exists(digests[0]), "the input a submission stored again was deleted"
    assert not objects.exists(digests[1])
