"""Collections review: a date filter written in other scripts' digits passed the ISO check (`\\d` is any Unicode
digit) and was compared as text with the stored ASCII dates, matching nothing or everything; a NaN or infinite
number stored before they were refused (SQLite and PostgreSQL keep them) made the collection report a 500; a camera
filter with a space around it matched nothing; collections made at one instant could repeat or go missing between
pages of the listing."""

import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipelines.collections.record import ImageRecord
from serving.collections.filters import ImageFilter
from serving.collections.store import CollectionStore, RecordedImage
from serving.errors import BadRequestError
from serving.http.app import create_http_app
from serving.jobs.database import open_job_database
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.tables import collection_images, collections
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def _collection(root: Path) -> tuple[str, CollectionStore, str]:
    url = f"sqlite:///{root / 'jobs.sqlite3'}"
    store = CollectionStore(open_job_database(url))
    info = store.open("c", ["metadata", "quality"], ["/x"])
    images = [
        ImageRecord(f"i{i}.jpg", taken_at=f"2024-0{i}-01T10:00:00", make="Canon", quality_score=50.0 + i,
                    quality_level="HIGH", latitude=45.0 + i, longitude=7.0)
        for i in range(1, 6)
    ]  # fmt: skip
    store.add(info.id, [RecordedImage(record, {}) for record in images])
    return url, store, info.id


@pytest.mark.parametrize("date", ["２０２４-03-01", "٢٠٢٤-٠٣-٠١"])
def test_a_date_in_other_digits_is_refused(date: str) -> None:
    with pytest.raises(BadRequestError, match="expected an ISO date"):
        ImageFilter(taken_after=date)  # accepted before: 0 images after it, all 5 before it


def test_the_report_of_a_collection_holding_a_stored_infinity_is_answered() -> None:
    root = Path(tempfile.mkdtemp())
    url, store, collection = _collection(root)
    with store.engine.begin() as conn:  # as an analysis before NaN/infinity were refused left them
        values = {"quality_score": float("inf"), "latitude": float("nan")}
        conn.execute(sa.update(collection_images).where(collection_images.c.name == "i1.jpg").values(**values))
    service, settings = tiny_local_service(root)
    jobs = JobService(service, JobSettings(database_url=url, object_store=str(root / "objects")))
    with TestClient(create_http_app(service, jobs, settings), raise_server_exceptions=False) as client:
        report = client.get(f"/v1/collections/{collection}/report", params={"format": "json"})
        html = client.get(f"/v1/collections/{collection}/report")
    assert report.status_code == 200 and html.status_code == 200, report.text  # 500 before
    assert report.json()["quality"]["mean_score"] == pytest.approx(53.5)  # the four finite scores


def test_a_camera_filter_with_spaces_around_matches_the_stripped_names() -> None:
    _, store, collection = _collection(Path(tempfile.mkdtemp()))
    assert len(store.images(collection, ImageFilter(camera_make=" Canon "))) == 5  # 0 before


def test_collections_made_at_one_instant_page_without_repeats_or_gaps() -> None:
    _, store, _ = _collection(Path(tempfile.mkdtemp()))
    for name in ("b", "d", "e"):
        store.open(name, ["metadata"], ["/x"])
    with store.engine.begin() as conn:  # one created_at for all four
        conn.execute(sa.update(collections).values(created_at=1.0))
    # SQLite returns ties in one order, so this passes on the old query too; PostgreSQL promises no order for them
    pages = [store.list_collections(limit=1, offset=offset) for offset in range(4)]
    assert sorted(page[0].name for page in pages) == ["b", "c", "d", "e"]
