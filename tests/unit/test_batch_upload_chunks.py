"""The SDK's batch upload splits a folder by files per request as well as by bytes: a folder of many small files
was one request over the server's IMGSERVE_BATCH_MAX_FILES_PER_REQUEST, and the whole submission failed with 413.
The real job API in-process (SQLite in a temporary folder, tiny models, no Ray)."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.client.batch import CHUNK_FILES, BatchClient, server_file_limit
from serving.client.errors import ImgServeError
from serving.http.app import create_http_app
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit
SERVER_LIMIT = 5
FILES = 12


class Recording(httpx.BaseTransport):
    """The app's transport, noting each request's method, path and file count."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.sent.append((request.method, request.url.path, body.count(b'name="image"')))
        return self.inner.handle_request(request)


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[tuple[BatchClient, Recording]]:
    service, settings = tiny_local_service(tmp_path)
    job_settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        object_store=str(tmp_path / "objects"),
        max_files_per_request=SERVER_LIMIT,
    )
    app = create_http_app(service, JobService(service, job_settings), settings)
    with TestClient(app, raise_server_exceptions=False) as http:
        recording = Recording(http._transport)
        client = BatchClient("http://testserver", retries=0, transport=recording, api_key="")
        yield client, recording
        client.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(FILES):
        (images / f"{i:02}.jpg").write_bytes(jpeg())
    return images


def _uploads(recording: Recording) -> list[int]:
    return [files for method, path, files in recording.sent if method == "POST" and files]


def test_no_upload_carries_more_files_than_chunk_files(batch: tuple[BatchClient, Recording], folder: Path) -> None:
    client, recording = batch
    job = client.submit(folder, chunk_files=4)
    assert job.total == FILES and job.status != "open"
    assert _uploads(recording) == [4, 4, 4]
    assert recording.sent[-1][:2] == ("POST", f"/v1/jobs/{job.job_id}/start")


def test_a_server_limit_under_the_default_is_read_from_its_413_and_the_upload_split_again(
    batch: tuple[BatchClient, Recording], folder: Path
) -> None:
    assert SERVER_LIMIT < FILES < CHUNK_FILES
    client, recording = batch
    job = client.submit(folder)  # one chunk of 12 by the default: refused with "Maximum number of files is 5"
    assert job.total == FILES
    assert _uploads(recording) == [FILES, SERVER_LIMIT, SERVER_LIMIT, FILES - 2 * SERVER_LIMIT]


def test_only_a_too_many_files_refusal_is_split_again() -> None:
    message = "multipart request: Too many files. Maximum number of files is 5."
    assert server_file_limit(ImgServeError("RESOURCE_EXHAUSTED", "too_large", message, 413)) == 5
    body_limit = "request body exceeds the limit of 134217728 bytes"
    assert server_file_limit(ImgServeError("RESOURCE_EXHAUSTED", "too_large", body_limit, 413)) is None
    assert server_file_limit(ImgServeError("INVALID_ARGUMENT", "bad_request", message, 400)) is None


def test_chunk_files_below_one_is_refused_before_any_upload(batch: tuple[BatchClient, Recording], folder: Path) -> None:
    client, recording = batch
    with pytest.raises(ValueError, match="chunk_files"):
        client.submit(folder, chunk_files=0)
    assert recording.sent == []
