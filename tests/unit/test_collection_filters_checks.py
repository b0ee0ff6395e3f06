"""Collection filters that could only answer by mistake (data-team walkthrough): a date that cannot exist
(`taken_after=2022-13-01` was compared as text and answered "2023 onwards" with a 200) and `min_score=nan`, refused
over HTTP with pydantic's "less than or equal to 100" rather than the filter's own reason, as the CLI gives it."""

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.collections.record import ImageRecord
from serving.cli_collections import add_collection_commands
from serving.collections.filters import ImageFilter
from serving.collections.store import CollectionStore, RecordedImage
from serving.errors import BadRequestError
from serving.jobs.database import open_job_database

pytestmark = pytest.mark.unit

IMPOSSIBLE_DATES = {
    "2022-13-01": "month 13 does not exist",
    "2022-00": "month 00 does not exist",
    "2022-02-30": "day 30 does not exist in 2022-02",
    "2023-02-29": "day 29 does not exist in 2023-02",
    "2022-04-31": "day 31 does not exist in 2022-04",
    "2022-05-01T24:00": "hour 24 does not exist",
    "2022-05-01T10:60": "minute 60 does not exist",
    "2022-05-01 10:30:61": "second 61 does not exist",
    "2022-05-01T10:30+25:00": "offset hour 25 does not exist",
}


@pytest.mark.parametrize(("value", "reason"), IMPOSSIBLE_DATES.items())
@pytest.mark.parametrize("field", ["taken_after", "taken_before"])
def test_a_date_that_cannot_exist_is_refused_with_the_part_that_is_wrong(field: str, value: str, reason: str) -> None:
    with pytest.raises(BadRequestError, match=re.escape(f"{field}={value!r}: {reason}") + ".*expected an ISO date"):
        ImageFilter(**{field: value})


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("2024-02-29", "2024-02-29"),  # a leap day
        ("2022-12-31T23:59:59.5", "2022-12-31T23:59:59.5"),
        ("2022-05-01 00:00Z", "2022-05-01T00:00"),
        ("2022-05-01T10:30-14:00", "2022-05-01T10:30"),
        ("2022-05", "2022-05"),
        ("0000", "0000"),  # EXIF's unset year: a date, compared as text
    ],
)
def test_real_dates_are_still_accepted(value: str, kept: str) -> None:
    assert ImageFilter(taken_after=value).taken_after == kept


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.sqlite3"


@pytest.fixture
def store(url: str) -> CollectionStore:
    return CollectionStore(open_job_database(url))


def _taken_2026(store: CollectionStore) -> str:
    info = store.open("trip", ["metadata"], ["/x"])
    store.add(info.id, [RecordedImage(ImageRecord("late.jpg", taken_at="2026-11-24T10:00:00"), {}, "/x/late.jpg")])
    return info.id


def test_collection_export_refuses_an_impossible_date_in_one_line(
    url: str, store: CollectionStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _taken_2026(store)
    parser = argparse.ArgumentParser(prog="imgserve")
    add_collection_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out.csv"
    argv = ["collection", "export", "trip", "--out", str(out), "--database-url", url, "--taken-after", "2022-13-01"]
    args = parser.parse_args(argv)
    assert args.func(args) == 2  # was 0: "exported 1 images"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken_after='2022-13-01': month 13 does not exist" in err
    assert not out.exists()


@pytest.fixture
def http(tmp_path: Path, url: str, store: CollectionStore) -> Iterator[tuple[Any, str]]:
    from fastapi.testclient import TestClient

    from serving.http.app import create_http_app
    from serving.jobs.service import JobService
    from serving.jobs.settings import JobSettings
    from tests.unit.tiny_models import tiny_local_service

    service, settings = tiny_local_service(tmp_path)
    jobs = JobService(service, JobSettings(database_url=url, object_store=str(tmp_path / "objects")))
    with TestClient(create_http_app(service, jobs, settings)) as client:
        yield client, _taken_2026(store)


@pytest.mark.parametrize("route", ["images", "export"])
def test_over_http_an_impossible_date_is_a_400_not_rows(http: tuple[Any, str], route: str) -> None:
    client, collection = http
    for value, reason in (("2022-13-01", "month 13 does not exist"), ("2022-02-30", "day 30 does not exist")):
        answer = client.get(f"/v1/collections/{collection}/{route}", params={"taken_after": value})
        assert answer.status_code == 400, answer.text  # was 200 with late.jpg
        assert reason in answer.text
    assert client.get(f"/v1/collections/{collection}/{route}", params={"taken_after": "2026-11-01"}).status_code == 200


@pytest.mark.parametrize(
    ("parameter", "value", "message"),
    [
        ("min_score", "nan", "min_score=nan: quality scores are 0 to 100"),
        ("max_score", "inf", "max_score=inf: quality scores are 0 to 100"),
        ("min_score", "-1", "min_score=-1.0: quality scores are 0 to 100"),
        ("max_score", "100.5", "max_score=100.5: quality scores are 0 to 100"),
    ],
)
def test_over_http_a_score_out_of_range_gets_the_filters_reason(
    http: tuple[Any, str], parameter: str, value: str, message: str
) -> None:
    """The CLI's message; over HTTP pydantic's `le=100` answered NaN with "less than or equal to 100"."""
    client, collection = http
    answer = client.get(f"/v1/collections/{collection}/images", params={parameter: value})
    assert answer.status_code == 400, answer.text
    assert message in answer.text and "less than or equal" not in answer.text
    listing = client.get(f"/v1/collections/{collection}/images", params={"min_score": "0", "max_score": "100"})
    assert listing.status_code == 200


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_the_database_refuses_is_a_400_not_a_cut_off_200(
    http: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The first page is read before the 200 goes out: PostgreSQL refusing a filter value with a NUL in it (a
    DataError, as tests/unit/test_nul_in_stored_text.py builds) was met inside the stream, after a 200 and the CSV
    header row, and the download stopped there."""
    from sqlalchemy import exc as sa_exc

    client, collection = http

    def refusing(*args: Any, **kwargs: Any) -> Iterator[RecordedImage]:
        raise sa_exc.DataError("SELECT ...", {"camera_make_1": "Can\x00on"}, ValueError("cannot contain NUL bytes"))
        yield  # a generator, like the store's

    monkeypatch.setattr(CollectionStore, "iter_images", refusing)
    answer = client.get(f"/v1/collections/{collection}/export", params={"format": fmt, "camera_make": "Can\x00on"})
    assert answer.status_code == 400 and answer.json()["kind"] == "bad_request", answer.text
    monkeypatch.undo()
    exported = client.get(f"/v1/collections/{collection}/export", params={"format": fmt})
    assert exported.status_code == 200 and "late.jpg" in exported.text
