"""Collections review: a capture time longer than `taken_at` holds (PostgreSQL refused the image), a collection
deleted while `collection analyze` records into it (a traceback), and `collection export` without the HTTP export's
filters (camera_make, file_format, label, failed)."""

import argparse
import csv
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.collections.record import ImageRecord, failed_record
from serving.cli_collections import add_collection_commands
from serving.collections import analyze
from serving.collections.filter_parameters import FILTER_PARAMETERS
from serving.collections.filters import ImageFilter
from serving.collections.storable import storable_taken_at
from serving.collections.store import CollectionStore, RecordedImage
from serving.errors import BadRequestError
from serving.jobs.database import open_job_database
from serving.jobs.errors import CollectionNotFoundError
from serving.jobs.tables import collection_images

pytestmark = pytest.mark.unit


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.sqlite"


@pytest.fixture
def store(url: str) -> CollectionStore:
    return CollectionStore(open_job_database(url))


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imgserve")
    add_collection_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


# --- 1. taken_at: one ISO form within the column ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stated", "stored"),
    [
        ("2021-03-04T05:06:07", "2021-03-04T05:06:07"),  # what EXIF and XMP give today: unchanged
        ("2021-03-04T05:06:07.123456789+05:30", "2021-03-04T05:06:07.123456789+05:30"),
        ("2021-03-04T05:06:07.123456+05:30:15", "2021-03-04T05:06:07.123456"),  # an offset with seconds: not ISO
        ("2021-03-04T05:06:07.123456789+05:30:15.123456", "2021-03-04T05:06:07.123456789"),  # 45 characters
        ("2021-03-04T05:06:07.12345678901234567890-08:00:00", "2021-03-04T05:06:07.123456789-08:00"),
        ("2021-03-04 05:06Z", "2021-03-04T05:06:00+00:00"),
        ("2021-03-04T05:06:07+0530", "2021-03-04T05:06:07+05:30"),
        ("2021-03-04", "2021-03-04"),
        ("2021-02-30T10:00:00", None),  # no such day
        ("2021:03:04 05:06:07", None),  # not ISO: compared as text, it matched no date filter
        ("x" * 80, None),
        (None, None),
    ],
)
def test_a_capture_time_is_stored_in_one_iso_form(stated: str | None, stored: str | None) -> None:
    assert storable_taken_at(stated) == stored


def test_a_long_capture_time_fits_the_column_and_is_still_filtered_on(store: CollectionStore) -> None:
    """SQLite keeps a VARCHAR(40) value of any length; PostgreSQL refused the row (the image was recorded failed,
    'unstorable'). The value stored must fit the column as the table declares it."""
    info = store.open("trip", ["metadata"], ["/x"])
    long_form = "2021-03-04T05:06:07.123456789+05:30:15.123456"
    store.add(info.id, [RecordedImage(ImageRecord("a.jpg", taken_at=long_form), {}, "/x/a.jpg")])
    ((_, image),) = store.images(info.id)
    assert image.record.ok
    assert image.record.taken_at == "2021-03-04T05:06:07.123456789"
    assert len(image.record.taken_at) <= collection_images.c.taken_at.type.length
    assert [i.record.name for _, i in store.images(info.id, ImageFilter(taken_after="2021-03-04T05:06:07"))] == [
        "a.jpg"
    ]
    assert store.images(info.id, ImageFilter(taken_before="2021-03-04T05:06:07")) == []


# --- 2. a collection deleted during a run ----------------------------------------------------------------------------


def test_recording_into_a_deleted_collection_says_so(store: CollectionStore) -> None:
    info = store.open("trip", ["metadata"], ["/x"])
    store.add(info.id, [RecordedImage(ImageRecord("a.jpg"), {}, "/x/a.jpg")])
    store.delete(info.id)
    batch = [RecordedImage(ImageRecord("b.jpg"), {}, "/x/b.jpg"), RecordedImage(failed_record("c.jpg", "bad"))]
    with pytest.raises(CollectionNotFoundError, match="was deleted while images were recorded into it"):
        store.add_each(info.id, batch)  # was: IntegrityError (FOREIGN KEY constraint failed), b.jpg logged unstorable
    with pytest.raises(CollectionNotFoundError):
        store.finish(info.id)  # was: nothing updated, silently
    with store.engine.connect() as conn:  # nothing recorded that no collection owns
        assert conn.execute(collection_images.select()).all() == []


def test_analyze_stops_with_one_error_line_when_the_collection_is_deleted(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer half of `run_analysis` (no Ray here): its first batch is recorded, then the collection is deleted
    (`collection delete` from another shell) before the second."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"not decoded here")

    def run_analysis(items: Any, setup: Any, store: CollectionStore, collection_id: str, *rest: Any) -> Any:
        store.add_each(collection_id, [RecordedImage(ImageRecord(items[0].name), {}, items[0].place)])
        CollectionStore(open_job_database(url)).delete(collection_id)
        store.add_each(collection_id, [RecordedImage(ImageRecord(items[1].name), {}, items[1].place)])
        store.finish(collection_id)
        raise AssertionError("the run went on after its collection was deleted")

    monkeypatch.setattr(analyze, "analysis_setup", lambda *args: SimpleNamespace(selected=("metadata",)))
    monkeypatch.setattr(analyze, "run_analysis", run_analysis)
    args = _cli("collection", "analyze", str(photos), "--name", "trip", "--stages", "metadata", "--database-url", url)
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("imgserve: error: collection trip (") and "was deleted while this run recorded into it" in err


# --- 3. collection export offers the HTTP export's filters -----------------------------------------------------------


def test_export_takes_every_filter_of_the_http_export(
    url: str, store: CollectionStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = store.open("trip", ["classification", "metadata"], ["/x"])
    store.add(
        info.id,
        [
            RecordedImage(ImageRecord("a.jpg", make="Canon", format="JPEG", top_label="cat"), {}, "/x/a.jpg"),
            RecordedImage(ImageRecord("b.png", make="Nikon", format="PNG", top_label="cat"), {}, "/x/b.png"),
            RecordedImage(ImageRecord("c.mpo", make="Canon", format="MPO", top_label="dog"), {}, "/x/c.mpo"),
            RecordedImage(failed_record("d.jpg", "unsupported_format: not an image"), None, "/x/d.jpg"),
        ],
    )  # fmt: skip
    out = tmp_path / "out.csv"

    def exported(*options: str) -> list[str]:
        args = _cli("collection", "export", "trip", "--out", str(out), "--database-url", url, *options)
        assert args.func(args) == 0
        return [row["name"] for row in csv.DictReader(out.open(encoding="utf-8"))]

    assert exported("--camera-make", "Canon") == ["a.jpg", "c.mpo"]
    assert exported("--file-format", "jpg") == ["a.jpg", "c.mpo"]  # JPEG finds MPO camera JPEGs, as over HTTP
    assert exported("--label", "cat", "--file-format", "png") == ["b.png"]
    assert exported("--failed") == ["d.jpg"]
    assert exported("--no-failed") == ["a.jpg", "b.png", "c.mpo"]
    args = _cli("collection", "export", "trip", "--out", str(out), "--database-url", url, "--min-score", "150")
    assert args.func(args) == 2  # HTTP's bound (0..100): 150 could only match nothing
    assert "min_score=150.0: quality scores are 0 to 100" in capsys.readouterr().err


def test_the_cli_http_and_image_filter_name_the_same_filters() -> None:
    """One list of filters for every interface: the HTTP route's query parameters (serving/http/collection_routes.py),
    the CLI's options, and ImageFilter's fields they set."""
    from serving.http.collection_routes import image_filter

    names = [parameter.name for parameter in FILTER_PARAMETERS]
    assert list(inspect.signature(image_filter).parameters) == names
    assert [parameter.field for parameter in FILTER_PARAMETERS] == list(ImageFilter.__dataclass_fields__)
    export = _cli("collection", "export", "trip", "--out", "x.csv")
    assert set(names) <= set(vars(export))


def test_a_score_filter_outside_0_to_100_is_refused() -> None:
    for where in ({"min_score": -1.0}, {"max_score": 100.5}, {"min_score": float("nan")}):
        with pytest.raises(BadRequestError, match="quality scores are 0 to 100"):
            ImageFilter(**where)
    assert ImageFilter.from_parameters({"min_score": 0.0, "max_score": 100.0, "file_format": "jpg", "out": "x"}) == (
        ImageFilter(min_score=0.0, max_score=100.0, format="JPEG")
    )
