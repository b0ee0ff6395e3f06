"""Every call the object store (serving.jobs.objects.ObjectStore) makes to s3:// / gs:// is bounded by
IMGSERVE_REMOTE_TIMEOUT_S, its transient failures tried again within it: reading an item's stored input, the
existence check and refresh of a submission's input, the deletions and modification times of a purge or the orphan
sweep. They were the storage client's own calls, unbounded: s3fs's retries and botocore's allowed minutes, a
deleter holding the digest's lock (SQLite's write lock) meanwhile, and an input read failing the item `internal`.

On moto's S3 API server in this process, failures from the stand-in client of tests/unit/test_object_checks_retry."""

import time

import pytest

from serving.jobs.errors import JobStoreUnavailableError
from serving.jobs.remote_access import REMOTE_TIMEOUT_ENV
from tests.unit.test_object_checks_retry import _stored, flaky
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]
DATA = b"\xff\xd8 a stored input " * 100


def test_reading_a_stored_input_tries_a_transient_failure_again(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    store, digest = _stored(bucket, DATA)
    client = flaky(monkeypatch, store.fs, "get_object", "refused", failures=2)
    assert store.get(digest) == DATA and client.calls == 3


def test_a_store_that_keeps_failing_a_read_is_unavailable_within_the_bound(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JobStoreUnavailableError: the runner hands the item back and fails it `store_unavailable` at its attempt limit
    (an OSError was `internal`)."""
    store, digest = _stored(bucket, DATA)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")  # after the setup: a loaded machine may take longer
    flaky(monkeypatch, store.fs, "get_object", "503", failures=10**6)
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailableError, match=f"could not be read.*{REMOTE_TIMEOUT_ENV}"):
        store.get(digest)
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("delete_object", lambda store, digest: store.delete(digest)),
        ("head_object", lambda store, digest: store.modified(digest)),
        ("head_object", lambda store, digest: store.exists(digest)),
    ],
    ids=["delete", "modified", "exists"],
)
def test_a_deleters_and_a_writers_calls_end_at_the_bound(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
    call: object,
) -> None:
    store, digest = _stored(bucket, DATA)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")  # after the setup: a loaded machine may take longer
    client = flaky(monkeypatch, store.fs, operation, "503", failures=10**6)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=REMOTE_TIMEOUT_ENV):
        call(store, digest)  # type: ignore[operator]
    assert time.monotonic() - started < 4.0 and client.calls >= 2, "tried again until the bound, not beyond"


@pytest.mark.parametrize("operation", ["head_object", "copy_object"])  # is it there; then made fresh again
def test_storing_a_submissions_input_is_unavailable_at_the_bound(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    """A submission's 503 store_unavailable (retryable), not a 500 after the client's own retries."""
    store, _ = _stored(bucket, DATA)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")  # after the setup: a loaded machine may take longer
    flaky(monkeypatch, store.fs, operation, "503", failures=10**6)
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailableError, match=f"could not be stored.*{REMOTE_TIMEOUT_ENV}"):
        store.put(DATA)
    assert time.monotonic() - started < 4.0


def test_a_collection_image_on_a_store_that_keeps_failing_is_that_images_error_within_the_bound(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`collection analyze s3://...` reads each image in one bounded call (serving.collections.sources.read_items);
    a transient failure is tried again, one that stays is the image's error, not minutes of the client's retries."""
    from serving.collections.sources import read_items

    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    store, digest = _stored(bucket, DATA)
    row = {"location": f"s3://{store._path(digest)}", "member": None}
    client = flaky(monkeypatch, store.fs, "get_object", "reset", failures=2)
    assert read_items([row], 1 << 20) == [DATA] and client.calls == 3
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")
    client.failures = 10**6
    started = time.monotonic()
    (error,) = read_items([row], 1 << 20)
    assert isinstance(error, TimeoutError) and REMOTE_TIMEOUT_ENV in str(error)
    assert time.monotonic() - started < 4.0
    client.failures = 0
    assert isinstance(read_items([row], 100)[0], ValueError)  # the size limit still applies


def test_the_orphan_sweeps_listing_is_bounded_per_page(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ObjectStore.stored` (the orphan sweep's list of every stored object) was one unbounded `find`."""
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    store, digest = _stored(bucket, DATA)
    client = flaky(monkeypatch, store.fs, "list_objects_v2", "503", failures=2)
    assert set(store.stored()) == {digest} and client.calls == 3
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")
    client.failures = 10**6
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=REMOTE_TIMEOUT_ENV):
        store.stored()
    assert time.monotonic() - started < 4.0
