"""Review of the S3 re-store by self-copy (serving.jobs.objects): once the store had been listed (the orphan sweep's
`stored()`, which fills s3fs's listing cache), `modified()` answered the listing's LastModified for ever, so an input
stored again since (a submission being taken in) looked old and a purge deleted it from under its new job. On moto's
S3 API server, in this process (skips without moto, boto3 or s3fs)."""

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import purge_job
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.store import JobStore

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on a moto S3 server in a thread; fsspec pointed at it."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    import fsspec

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
        name = f"inputs-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
        yield name
    finally:
        server.stop()


def test_an_object_stored_again_after_a_listing_is_modified_now(bucket: str) -> None:
    store = ObjectStore(f"s3://{bucket}/objects")
    data = b"\xff\xd8 a photo " * 1000
    digest = store.put(data)
    listed = store.stored()[digest]  # what the orphan sweep does every interval
    time.sleep(1.1)  # LastModified has whole seconds
    assert store.put(data) == digest
    again = store.modified(digest)
    assert again is not None and again > listed, (listed, again)


def test_a_purge_keeps_an_input_a_submission_stored_again_after_the_store_was_listed(
    bucket: str, tmp_path: Path
) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path}/jobs.sqlite3")
    migrate(engine)
    store = ObjectStore(f"s3://{bucket}/objects")
    data = b"\xff\xd8 shared photo " * 1000
    jobs = JobStore(engine)
    purged = jobs.create_job(JobSpec("m", 1, ("classification",)), [NewItem("a.jpg", "object", store.put(data), 1)])
    store.stored()
    time.sleep(1.1)
    store.put(data)  # a new submission of the same bytes, still being taken in: no row holds it yet
    purge_job(engine, store, purged, None, None)
    assert store.exists(hashlib.sha256(data).hexdigest()), "the input stored again was deleted"


def test_storing_bytes_another_replica_deleted_after_a_listing_stores_them_again(bucket: str) -> None:
    """The listing cache said the object was there (another replica's purge or sweep had deleted it): the copy onto
    itself failed (a submission answered 500) where writing the bytes stores them again."""
    import boto3
    import fsspec

    store = ObjectStore(f"s3://{bucket}/objects")
    data = b"\xff\xd8 deleted elsewhere " * 1000
    digest = store.put(data)
    store.stored()
    endpoint = fsspec.config.conf["s3"]["endpoint_url"]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").delete_object(
        Bucket=bucket, Key=f"objects/sha256/{digest[:2]}/{digest}"
    )
    assert store.put(data) == digest
    assert store.get(digest) == data


def test_storing_bytes_deleted_between_the_check_and_the_refresh_stores_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On local disk too: the orphan sweep or a purge deleted the object right after `put` saw it (os.utime raised
    FileNotFoundError: the submission failed)."""
    store = ObjectStore(str(tmp_path / "objects"))
    data = b"deleted right after the check"
    digest = store.put(data)
    store.delete(digest)
    monkeypatch.setattr(store.fs, "exists", lambda path: True)  # what it answered a moment before the delete
    assert store.put(data) == digest
    monkeypatch.undo()
    assert store.get(digest) == data
