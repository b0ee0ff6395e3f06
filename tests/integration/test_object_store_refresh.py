"""Storing bytes the S3 object store already holds makes the object fresh (its LastModified: what the orphan sweep
and a racing purge read) with a server-side copy, without uploading the bytes again; on a real S3 API server (moto)."""

import time

import pytest

from serving.jobs.objects import ObjectStore
from tests.integration.conftest import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_storing_again_refreshes_an_s3_object_without_uploading_it(moto_s3: S3Server, monkeypatch) -> None:
    moto_s3.use_here(monkeypatch)
    moto_s3.create_bucket("inputs")
    store = ObjectStore("s3://inputs/objects")
    data = b"\xff\xd8 a photo " * 10_000
    digest = store.put(data)
    first = store.modified(digest)
    assert first is not None
    time.sleep(1.1)  # LastModified has whole seconds

    def no_upload(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bytes were uploaded again")

    monkeypatch.setattr(store.fs, "pipe_file", no_upload)
    store.fs.invalidate_cache()
    assert store.put(data) == digest
    store.fs.invalidate_cache()
    again = store.modified(digest)
    assert again is not None and again > first
    assert store.get(digest) == data  # the copy kept the object whole
