"""A batch job's convert outputs written to an `s3://` or `gs://` destination (`output_uri`), on a real S3 API server
(moto in server mode) and a real GCS JSON API server (gcp-storage-emulator): every output lands once under the
destination with the job's names, decodes to the asked size, and is recorded with its URI; a destination that cannot be
written fails each item with a clear kind and creates nothing."""

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import operation_spec
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from tests.integration.conftest import ObjectServer
from tests.unit.test_jobs_operations import NoAnalysis, jpeg

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def run_convert_job(tmp_path: Path, destination: str, count: int) -> tuple[JobStore, str]:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    objects = ObjectStore(settings.object_store)
    operations = operation_spec(["convert"], {"format": "webp", "max_side": "120"}, None, "_web", destination, None)
    items = [NewItem(f"trip/day{i}.jpg", "object", objects.put(jpeg(i, (400, 300))), 10) for i in range(count)]
    store = JobStore(engine)
    job_id = store.create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    asyncio.run(runner.run_job(store.get_job(job_id)))
    return store, job_id


def test_outputs_go_to_a_remote_destination(tmp_path: Path, object_server: ObjectServer, monkeypatch) -> None:
    object_server.use_here(monkeypatch)
    remote, scheme = object_server, object_server.scheme
    remote.create_bucket("exports")

    store, job_id = run_convert_job(tmp_path, f"{scheme}://exports/albums/", 4)
    job = store.get_job(job_id)
    assert job.status == "completed" and job.counts["done"] == 4, job.counts
    # named below trip/, the folder all the job's inputs share
    assert remote.keys("exports", "albums/") == [f"albums/day{i}_web.webp" for i in range(4)]
    body = remote.read("exports", "albums/day2_web.webp")
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "WEBP" and image.size == (120, 90)
    rows = {row.name: row for row in store.results_page(job_id)}
    assert rows["trip/day2.jpg"].result["output"]["uri"] == f"{scheme}://exports/albums/day2_web.webp"
    assert rows["trip/day2.jpg"].result["output"]["output_bytes"] == len(body)

    # A bucket that does not exist: each item fails with the reason (and no bucket is made), the job ends.
    store, job_id = run_convert_job(tmp_path / "missing", f"{scheme}://no-such-bucket/x", 2)
    failed = store.results_page(job_id)
    job = store.get_job(job_id)
    assert job.status == "failed" and job.counts["failed"] == 2, job.counts  # every item failed
    assert {row.error_kind for row in failed} == {"unwritable_output"}
    assert all("no-such-bucket" in (row.error or "") for row in failed)
    assert remote.buckets() == ["exports"]  # no bucket was made for it
