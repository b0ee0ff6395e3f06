"""The job API over the real FastAPI app (SQLite in a temporary folder, tiny models, no Ray).

A job store that fails while the server runs: the job API answers 503 `store_unavailable` with Retry-After, and the
replica logs one line per failure, not a traceback as an unhandled error (a PostgreSQL outage used to put ~80 lines
per request into the log: tests/integration/test_faults.py's server log)."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.http.app import create_http_app
from serving.jobs.database import create_store_engine
from serving.jobs.records import ResultRecord
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    service, settings = tiny_local_service(tmp_path)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    job_settings = JobSettings(database_url=url, object_store=str(tmp_path / "objects"))
    jobs = JobService(service, job_settings)
    with TestClient(create_http_app(service, jobs, settings)) as client:
        yield {"http": client, "engine": create_store_engine(url), "jobs": jobs}


def _lose_the_jobs_table(engine: sa.Engine) -> None:
    """A real store failure: every query on `jobs` now raises sqlalchemy's OperationalError (no such table)."""
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE jobs RENAME TO jobs_gone"))


def test_job_api_answers_503_with_retry_after_and_no_traceback_while_the_store_fails(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    http = world["http"]
    submitted = http.post("/v1/batch", files=[("image", ("a.jpg", jpeg(), "image/jpeg"))])
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["job_id"]
    _lose_the_jobs_table(world["engine"])
    caplog.set_level(logging.WARNING)
    answers = [
        http.get(f"/v1/jobs/{job}"),
        http.get("/v1/jobs"),
        http.post("/v1/batch", files=[("image", ("b.jpg", jpeg(), "image/jpeg"))]),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["kind"] == "store_unavailable"
        assert "jobs_gone" not in answer.text and "SELECT" not in answer.text  # no SQL or schema to the client
        assert float(answer.headers["retry-after"]) > 0
    assert not [r for r in caplog.records if r.exc_info or "unhandled" in r.getMessage()], [
        r.getMessage() for r in caplog.records
    ]
    assert any("store" in r.getMessage() for r in caplog.records)  # the outage is still in the log, one line each
    assert http.post("/v1/classify", content=jpeg()).status_code == 200  # online inference goes on


def test_a_job_store_that_cannot_be_opened_is_the_same_503_as_an_outage(tmp_path: Path) -> None:
    """It answered 503 `jobs_unavailable` without Retry-After, with the driver's text (on PostgreSQL: the database
    server's host name and address)."""
    service, settings = tiny_local_service(tmp_path)
    (tmp_path / "a-folder").mkdir()
    job_settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'a-folder'}", object_store=str(tmp_path / "o"))
    with TestClient(create_http_app(service, JobService(service, job_settings), settings)) as http:
        answer = http.get("/v1/jobs")
    assert answer.status_code == 503 and answer.json()["kind"] == "store_unavailable", answer.text
    assert answer.headers["retry-after"] == "5"
    assert "sqlite" not in answer.text.lower() and str(tmp_path) not in answer.text


def test_too_many_files_is_413_too_large_and_a_malformed_form_400_bad_request(tmp_path: Path) -> None:
    """Starlette's own 400 came through as kind `http_400` (undocumented), for too many files as well, which the
    README lists as 413 `too_large`."""
    service, settings = tiny_local_service(tmp_path)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    job_settings = JobSettings(database_url=url, object_store=str(tmp_path / "o"), max_files_per_request=2)
    with TestClient(create_http_app(service, JobService(service, job_settings), settings)) as http:
        files = [("image", (f"{i}.jpg", jpeg(), "image/jpeg")) for i in range(3)]
        many = http.post("/v1/batch", files=files)
        assert many.status_code == 413 and many.json()["kind"] == "too_large", many.text
        assert "Too many files" in many.json()["error"]
        huge_field = http.post("/v1/batch", files=[("uri", (None, "s3://b/" + "x" * 1_100_000))])
        assert huge_field.status_code == 413 and huge_field.json()["kind"] == "too_large", huge_field.text
        body = b'--B\r\nContent-Disposition: form-data; name="image"\r\n\r\nno closing boundary'
        for path in ("/v1/batch", "/v1/classify"):
            broken = http.post(path, content=body, headers={"content-type": "multipart/form-data; boundary=X"})
            assert broken.status_code == 400 and broken.json()["kind"] == "bad_request", (path, broken.text)


def test_listing_jobs_by_a_state_that_does_not_exist_is_a_bad_request(world: dict[str, Any]) -> None:
    """?status=runing used to answer an empty list, which reads as "nothing is running"."""
    http = world["http"]
    assert http.post("/v1/batch", files=[("image", ("a.jpg", jpeg(), "image/jpeg"))]).status_code == 202
    refused = http.get("/v1/jobs", params={"status": "runing"})
    assert refused.status_code == 400 and refused.json()["kind"] == "bad_request", refused.text
    states = {job["status"] for job in http.get("/v1/jobs", params={"status": ""}).json()["jobs"]}  # "": any
    assert len(http.get("/v1/jobs", params={"status": states.pop()}).json()["jobs"]) == 1


def test_an_unknown_field_of_a_json_batch_request_is_named_in_a_400(world: dict[str, Any]) -> None:
    """{"uris": [...], "stage": [...]} ran the job with the default stages: the misspelt field was dropped."""
    refused = world["http"].post("/v1/batch", json={"uris": ["s3://bucket/a.jpg"], "stage": ["quality"]})
    assert refused.status_code == 400 and refused.json()["kind"] == "bad_request", refused.text
    assert "stage: unknown; known: uris, model, top_k, stages," in refused.json()["error"]
    long_name = "x" * 10_000
    refused = world["http"].post("/v1/batch", json={"uris": ["s3://bucket/a.jpg"], long_name: 1})
    assert refused.status_code == 400 and "x" * 81 not in refused.json()["error"]  # the name is not echoed whole
    assert len(refused.json()["error"]) < 300


def test_results_of_a_job_purged_while_they_stream_end_cleanly(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The API fuzzer purged a job while another request streamed its results: the next page raised
    JobNotFoundError after the response had started, the replica logged an unhandled error and the client got a
    broken connection. The stream now ends after the rows already sent."""
    http = world["http"]
    job = http.post("/v1/batch", files=[("image", ("a.jpg", jpeg(), "image/jpeg"))]).json()["job_id"]
    read_page = JobService.results
    pages: list[int] = []

    async def purged_after_the_first_page(self: JobService, *args: Any, **kwargs: Any) -> Any:
        pages.append(1)
        if len(pages) == 1:  # a page of one row (the tiny job does not run here: no worker in this process)
            return [ResultRecord(0, "a.jpg", "done", "tiny", {}, None, None, 1.0, 1)]
        await self.purge(job)  # meanwhile, an admin purges the job: the real store then has no such job
        return await read_page(self, *args, **kwargs)

    monkeypatch.setattr(JobService, "results", purged_after_the_first_page)
    caplog.set_level(logging.WARNING)
    answer = http.get(f"/v1/jobs/{job}/results")
    assert answer.status_code == 200 and len(answer.text.splitlines()) == 1, answer.text
    assert not [r for r in caplog.records if r.exc_info or "unhandled" in r.getMessage()]
    assert http.get(f"/v1/jobs/{job}").status_code == 404


def test_a_batch_of_only_hidden_named_uploads_says_why_it_has_no_input(world: dict[str, Any]) -> None:
    """`curl -F image=@.x.jpg /v1/batch` answered "the batch has no inputs: send files..." after the file was sent:
    hidden names are left out (as folder walks leave them out) and the 400 now says so; with one ordinary file
    beside it the job runs on that one."""
    http = world["http"]
    refused = http.post("/v1/batch", files=[("image", (".x.jpg", jpeg(), "image/jpeg"))])
    assert refused.status_code == 400 and refused.json()["kind"] == "bad_request", refused.text
    assert "'.x.jpg'" in refused.json()["error"] and "hidden" in refused.json()["error"]
    files = [("image", (name, jpeg(), "image/jpeg")) for name in ("._a.jpg", "@eaDir/b.jpg")]
    assert "and 1 more" in http.post("/v1/batch", files=files).json()["error"]
    files.append(("image", ("c.jpg", jpeg(), "image/jpeg")))
    accepted = http.post("/v1/batch", files=files)
    assert accepted.status_code == 202 and accepted.json()["counts"]["total"] == 1, accepted.text


def test_an_unknown_stage_is_refused_with_the_operations_among_the_known_ones(world: dict[str, Any]) -> None:
    """The message was the analysis stages' ('available: classification, quality, ...'), without convert/enhance."""
    refused = world["http"].post("/v1/batch", params={"stages": "classify,convrt"}, json={"uris": ["s3://b/a.jpg"]})
    assert refused.status_code == 400 and refused.json()["kind"] == "bad_request", refused.text
    assert "unknown stages ['convrt']; available: classification, " in refused.json()["error"]
    assert refused.json()["error"].endswith(", convert, enhance"), refused.text
