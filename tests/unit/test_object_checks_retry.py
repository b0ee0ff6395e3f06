"""A writer's check of its stored objects (serving.jobs.objects.hold_objects: a HEAD each, under the digests' locks)
against a store that fails now and then. A transient failure (a 5xx, throttling, a reset or refused connection, a read
timeout) used to end the check at once: the 503 became an OSError, which the worker's store calls took for the job
database's outage and retried without end, and a refused connection failed the item. Now each HEAD is tried again
within IMGSERVE_REMOTE_TIMEOUT_S, and only a failure still there at the bound, or an answer that is no failure of the
moment (403), ends it, as a JobStoreUnavailableError (never an OSError).

On moto's S3 API server in this process (tests.unit.test_object_store's `bucket`); the failures come from a stand-in
around s3fs's real client that fails the first N calls of one operation and passes the rest to moto."""

import asyncio
import hashlib
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import JobStoreUnavailableError
from serving.jobs.objects import ObjectStore, hold_objects
from serving.jobs.operations import _ensure_stored
from serving.jobs.records import ItemOutput, JobSpec, NewItem, Outcome
from serving.jobs.remote_access import REMOTE_TIMEOUT_ENV, transient_storage_error
from serving.jobs.store import JobStore
from serving.jobs.tables import job_results
from serving.jobs.work_queue import WorkQueue
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def _client_error(code: str, status: int, operation: str = "HeadObject") -> Exception:
    from botocore.exceptions import ClientError

    # a HEAD's error has no body: botocore's code is the status ("503"); other calls carry S3's code (SlowDown)
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def _failure(kind: str) -> Exception:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    url = "http://127.0.0.1:1"
    return {
        "503": lambda: _client_error("503", 503),
        "500": lambda: _client_error("500", 500),
        "slow_down": lambda: _client_error("SlowDown", 503),
        "reset": lambda: ConnectionClosedError(endpoint_url=url),
        "refused": lambda: EndpointConnectionError(endpoint_url=url),
        "read_timeout": lambda: ReadTimeoutError(endpoint_url=url),
        "forbidden": lambda: _client_error("403", 403),
    }[kind]()


class FlakyClient:
    """s3fs's aiobotocore client, whose first `failures` calls of `operation` raise `kind`'s error; each call of it
    answered `delay_s` late."""

    def __init__(self, real: Any, operation: str, kind: str, failures: int, delay_s: float = 0.0) -> None:
        self.real, self.operation, self.kind, self.failures, self.calls = real, operation, kind, failures, 0
        self.delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.real, name)
        if name != self.operation:
            return attribute

        async def call(**kwargs: Any) -> Any:
            self.calls += 1
            await asyncio.sleep(self.delay_s)
            if self.calls <= self.failures:
                raise _failure(self.kind)
            return await attribute(**kwargs)

        call.__name__ = name
        return call


def flaky(
    monkeypatch: pytest.MonkeyPatch, fs: Any, operation: str, kind: str, failures: int, delay_s: float = 0.0
) -> FlakyClient:
    """Route `fs`'s calls through a FlakyClient around its real client."""
    real_get_s3 = fs.get_s3
    holder: list[FlakyClient] = []

    async def get_s3(name: str | None = None) -> FlakyClient:
        if not holder:
            holder.append(FlakyClient(await real_get_s3(name), operation, kind, failures, delay_s))
        return holder[0]

    monkeypatch.setattr(fs, "get_s3", get_s3)
    fs.call_s3("list_buckets")  # makes the stand-in (the first call of `operation` is what fails)
    return holder[0]


def _stored(bucket_name: str, data: bytes) -> tuple[ObjectStore, str]:
    store = ObjectStore(f"s3://{bucket_name}/objects")
    return store, store.put(data)


def _delete_behind(store: ObjectStore, digest: str) -> None:
    """What a deleter on another replica does: the object goes, this process's listing cache never hears of it."""
    import boto3
    import fsspec

    bucket_name, key = store._path(digest).split("/", 1)
    endpoint = fsspec.config.conf["s3"]["endpoint_url"]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").delete_object(Bucket=bucket_name, Key=key)


@pytest.mark.parametrize("kind", ["503", "500", "slow_down", "reset", "refused", "read_timeout"])
def test_a_transient_head_failure_is_tried_again(
    bucket: str,  # noqa: F811
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    store, present = _stored(bucket, b"\xff\xd8 kept " * 100)
    _, gone = _stored(bucket, b"\xff\xd8 deleted " * 100)
    _delete_behind(store, gone)
    client = flaky(monkeypatch, store.fs, "head_object", kind, failures=2)
    assert store.missing([present, gone]) == {gone}
    assert client.calls >= 4, "each HEAD that failed was made again"


def test_a_head_that_keeps_failing_fails_within_the_timeout_and_is_no_oserror(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OSError would be taken for the job database's outage (serving.jobs.outage.STORE_ERRORS) and the record
    retried for ever; the item must fail instead."""
    store, digest = _stored(bucket, b"\xff\xd8 photo " * 100)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "1")  # after the setup: a loaded machine may take longer
    client = flaky(monkeypatch, store.fs, "head_object", "503", failures=10**6)
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailableError, match=f"{REMOTE_TIMEOUT_ENV}.*Service Unavailable|503") as caught:
        store.missing([digest])
    assert time.monotonic() - started < 4.0
    assert not isinstance(caught.value, OSError)
    assert client.calls > 2, "tried again until the bound"


def test_a_refusal_is_not_tried_again(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    store, digest = _stored(bucket, b"\xff\xd8 photo " * 100)
    client = flaky(monkeypatch, store.fs, "head_object", "forbidden", failures=10**6)
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailableError):
        store.missing([digest])
    assert client.calls == 1 and time.monotonic() - started < 2.0


def test_a_transient_failure_when_an_output_is_recorded_does_not_fail_it(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The item's output was deleted behind it (a purge on another replica) and the first HEAD at record time got a
    503: the result is recorded done and the output is in the store again (it raised OSError before)."""
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    data = b"\xff\xd8 the item's output " * 100
    store, digest = _stored(bucket, data)
    _delete_behind(store, digest)
    jobs, queue = JobStore(engine), WorkQueue(engine)
    job_id = jobs.create_job(JobSpec("m", 1, ("classification",)), [NewItem("a.jpg", "uri", "s3://in/a.jpg", 1)])
    queue.mark_running(job_id)
    (item,) = queue.claim(job_id, 1)
    output = ItemOutput(digest, "a.webp", 1, len(data), partial(_ensure_stored, store, digest, data))
    client = flaky(monkeypatch, store.fs, "head_object", "503", failures=1)
    assert queue.record(item, Outcome("done", "m", {}, output=output))
    with engine.connect() as conn:
        assert conn.execute(sa.select(job_results.c.status, job_results.c.output_object)).one() == ("done", digest)
    assert client.calls >= 2
    assert store.get(digest) == data


def test_the_check_under_the_lock_still_stores_a_deleted_input_again(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The purge race the lock closes, with the store answering 503 at first: a submission's input deleted after its
    intake stored it is in the store again when its rows commit."""
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "10")
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    data = b"\xff\xd8 an input " * 100
    store, digest = _stored(bucket, data)
    _delete_behind(store, digest)
    flaky(monkeypatch, store.fs, "head_object", "503", failures=3)

    def ensure(digests: list[str]) -> None:
        for missing in store.missing(digests):
            assert missing == hashlib.sha256(data).hexdigest()
            store.store_again(data)

    with engine.begin() as conn:
        hold_objects(conn, [digest], ensure)
    assert store.get(digest) == data


def _gcs_error(code: int) -> Exception:
    from gcsfs.retry import HttpError

    return HttpError({"code": code, "message": "x"})


def _translated(kind: str) -> Exception:
    """An error as s3fs raises it: translated into an OSError from botocore's."""
    from s3fs.errors import translate_boto_error

    return translate_boto_error(_failure(kind))


TRANSIENT: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("503", lambda: _failure("503"), True),
    ("SlowDown", lambda: _failure("slow_down"), True),
    ("429", lambda: _client_error("TooManyRequests", 429), True),
    ("s3fs 503", lambda: _translated("503"), True),
    ("s3fs 500", lambda: _translated("500"), True),
    ("reset", lambda: _failure("reset"), True),
    ("refused", lambda: _failure("refused"), True),
    ("read timeout", lambda: _failure("read_timeout"), True),
    ("ConnectionResetError", lambda: ConnectionResetError(104, "reset"), True),
    ("TimeoutError", lambda: TimeoutError(), True),
    ("gcs 503", lambda: _gcs_error(503), True),
    ("404", lambda: _client_error("NoSuchKey", 404), False),
    ("403", lambda: _failure("forbidden"), False),
    ("s3fs 403", lambda: _translated("forbidden"), False),
    ("FileNotFoundError", lambda: FileNotFoundError("b/k"), False),
    ("gcs 400", lambda: _gcs_error(400), False),
    ("ValueError", lambda: ValueError("bad"), False),
]


@pytest.mark.parametrize(
    ("error", "transient"), [(make, t) for _, make, t in TRANSIENT], ids=[n for n, _, _ in TRANSIENT]
)
def test_which_failures_are_transient(error: Callable[[], BaseException], transient: bool) -> None:
    pytest.importorskip("s3fs")
    pytest.importorskip("gcsfs")
    assert transient_storage_error(error()) is transient


def test_no_credentials_is_not_transient() -> None:
    botocore = pytest.importorskip("botocore.exceptions")
    assert not transient_storage_error(botocore.NoCredentialsError())
