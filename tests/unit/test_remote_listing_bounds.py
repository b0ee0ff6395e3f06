"""Listing an `s3://` / `gs://` training dataset or collection source is bounded as its reads are: each request (the
lookup, each page) within IMGSERVE_REMOTE_TIMEOUT_S (serving.jobs.remote_listing). An unreachable store took minutes
(botocore's read timeouts and retries; gcsfs retried six times with backoff, about 49 s) before the 400; a store of many
pages must still be listed whatever its pages take together.

The unreachable stores are local: a socket that takes connections and never answers, or a closed port. The listings
run on moto's S3 API server in this process (tests.unit.test_object_store's `bucket`) and, when it is installed, on
gcp-storage-emulator (a subprocess), whose pages are asked 10 objects at a time here."""

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.collections.sources import SourceError, list_sources
from serving.errors import BadRequestError
from serving.jobs import remote_listing
from serving.jobs.remote_access import REMOTE_TIMEOUT_ENV
from serving.training.dataset import labelled_images
from tests.paths import PROJECT_ROOT
from tests.unit.test_object_checks_retry import flaky
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]
GCS_EMULATOR = PROJECT_ROOT / ".venv" / "bin" / "gcp-storage-emulator"
# under photos/: 23 images in two categories at two depths, one hidden, one not an image; beside it, photos2/
KEYS = [f"photos/cats/{i:02}.jpg" for i in range(12)] + [f"photos/dogs/big/{i:02}.png" for i in range(11)]
OTHER_KEYS = ["photos/.hidden.jpg", "photos/notes.txt", "photos2/x.jpg"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that takes connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for connection in held:
            connection.close()


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


def _point_s3_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    import fsspec

    pytest.importorskip("s3fs")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})


@pytest.fixture
def gcs_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """`gcs_at(endpoint)` points gcsfs at `endpoint` without credentials (anonymous, as tests/integration's emulator);
    gcsfs's instances are made afresh around it."""
    pytest.importorskip("gcsfs")
    import fsspec

    gcs = fsspec.get_filesystem_class("gs")

    def point(endpoint: str) -> None:
        gcs.clear_instance_cache()
        env = {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_APPLICATION_CREDENTIALS": "", "NO_GCE_CHECK": "true"}
        for name, value in {**env, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}.items():
            monkeypatch.setenv(name, value)

    yield point
    gcs.clear_instance_cache()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
@pytest.mark.parametrize("port_kind", ["silent_port", "closed_port"])
def test_an_unreachable_store_fails_the_listing_within_the_timeout(
    scheme: str, port_kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, gcs_at: Any
) -> None:
    endpoint = f"http://127.0.0.1:{request.getfixturevalue(port_kind)}"
    if scheme == "s3":
        _point_s3_at(monkeypatch, endpoint)
    else:
        gcs_at(endpoint)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "0.5")
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"{scheme}://bucket/photos: cannot be listed: .*{REMOTE_TIMEOUT_ENV}"):
        list_sources([f"{scheme}://bucket/photos"])
    with pytest.raises(
        BadRequestError, match=f"dataset '{scheme}://bucket/parcels' cannot be listed.*{REMOTE_TIMEOUT_ENV}"
    ):
        labelled_images(f"{scheme}://bucket/parcels", None)
    assert time.monotonic() - started < 6.0  # two listings, each bounded by 0.5 s (and minutes, or ~49 s, before)


def _upload(bucket_name: str, keys: list[str]) -> None:
    import boto3
    import fsspec

    client = boto3.client("s3", endpoint_url=fsspec.config.conf["s3"]["endpoint_url"], region_name="us-east-1")
    for key in keys:
        client.put_object(Bucket=bucket_name, Key=key, Body=key.encode())


def _s3(bucket_name: str) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(f"s3://{bucket_name}")[0]


def test_an_s3_prefix_is_listed_page_by_page_as_s3fs_finds_it(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remote_listing, "PAGE_SIZE", 10)
    _upload(bucket, KEYS + OTHER_KEYS)
    fs = _s3(bucket)
    expected = fs.find(f"{bucket}/photos", detail=True)
    fs.invalidate_cache()
    pages = flaky(monkeypatch, fs, "list_objects_v2", "503", failures=0)
    found = remote_listing.find_objects(fs, f"{bucket}/photos")
    assert pages.calls == 3  # 25 objects, 10 a page
    assert {name: entry["size"] for name, entry in found.items()} == {n: e["size"] for n, e in expected.items()}
    items = list_sources([f"s3://{bucket}/photos/"])
    assert [item.name for item in items] == sorted(key.removeprefix("photos/") for key in KEYS)
    assert all(item.state is not None and item.state.size == len(f"photos/{item.name}") for item in items)
    assert all(item.state is not None and item.state.changed_at for item in items)


def test_the_bound_is_per_page_not_for_the_whole_listing(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three pages of 1 s each take longer than the 3 s bound together: the listing still completes. The first
    request (s3fs's lookup of the prefix: a one-key listing) fails with a 503 and is asked again within its bound."""
    monkeypatch.setattr(remote_listing, "PAGE_SIZE", 10)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "3")
    _upload(bucket, KEYS)
    pages = flaky(monkeypatch, _s3(bucket), "list_objects_v2", "503", failures=1, delay_s=1.0)
    started = time.monotonic()
    images, unlabelled = labelled_images(f"s3://{bucket}/photos", None)
    assert time.monotonic() - started > 3.0 and pages.calls == 2 + 3  # the lookup twice, 3 pages
    assert len(images) == len(KEYS) and unlabelled == 0
    assert {image.label for image in images} == {"cats", "dogs"}


def test_a_page_that_never_answers_fails_the_listing(
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remote_listing, "PAGE_SIZE", 10)
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "0.5")
    _upload(bucket, KEYS)
    flaky(monkeypatch, _s3(bucket), "list_objects_v2", "503", failures=0, delay_s=30.0)
    started = time.monotonic()
    with pytest.raises(SourceError, match=REMOTE_TIMEOUT_ENV):
        list_sources([f"s3://{bucket}/photos"])
    assert time.monotonic() - started < 3.0


def test_one_object_an_empty_bucket_and_a_missing_prefix(bucket: str) -> None:  # noqa: F811
    _upload(bucket, ["photos/cats/01.jpg"])
    (item,) = list_sources([f"s3://{bucket}/photos/cats/01.jpg"])
    assert (item.name, item.location) == ("01.jpg", f"s3://{bucket}/photos/cats/01.jpg")
    assert item.state is not None and item.state.size == len(b"photos/cats/01.jpg")
    with pytest.raises(SourceError, match="no such object or prefix"):
        list_sources([f"s3://{bucket}/nothing"])
    import boto3
    import fsspec

    empty = f"empty-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=fsspec.config.conf["s3"]["endpoint_url"], region_name="us-east-1").create_bucket(
        Bucket=empty
    )
    assert list_sources([f"s3://{empty}"]) == []


@pytest.fixture
def gcs_emulator(tmp_path: Path, gcs_at: Any) -> Iterator[str]:
    """gcp-storage-emulator on a free port, gcsfs pointed at it; yields its endpoint."""
    if not GCS_EMULATOR.exists():
        pytest.skip(f"{GCS_EMULATOR} is absent: gcp-storage-emulator comes with the dev extras")
    httpx = pytest.importorskip("httpx")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    command = [str(GCS_EMULATOR), "start", "--host", "127.0.0.1", "--in-memory", "--port", str(port)]
    log = (tmp_path / "gcs-emulator.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"gcp-storage-emulator did not start: {(tmp_path / 'gcs-emulator.log').read_text()}")
                time.sleep(0.2)
        gcs_at(endpoint)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_a_gcs_prefix_is_listed_page_by_page_as_gcsfs_finds_it(
    gcs_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec
    import httpx

    monkeypatch.setattr(remote_listing, "PAGE_SIZE", 10)
    with httpx.Client(base_url=gcs_emulator) as http:
        http.post("/storage/v1/b", params={"project": "test"}, json={"name": "bkt"}).raise_for_status()
        for key in KEYS + OTHER_KEYS:
            upload = {"uploadType": "media", "name": key}
            http.post("/upload/storage/v1/b/bkt/o", params=upload, content=key.encode()).raise_for_status()
    fs = fsspec.core.url_to_fs("gs://bkt")[0]
    expected = fs.find("bkt/photos", detail=True)
    fs.invalidate_cache()
    calls: list[dict[str, Any]] = []
    real_call = fs._call

    async def paged(*args: Any, **kwargs: Any) -> Any:
        """GCS's paging, which the emulator does not do (it answers every object at once): `maxResults` objects from
        the offset `pageToken` holds."""
        calls.append(kwargs)
        page = await real_call(*args, **kwargs)
        start, size = int(kwargs.get("pageToken") or 0), kwargs["maxResults"]
        more = start + size < len(page["items"])
        return {
            **page,
            "items": page["items"][start : start + size],
            **({"nextPageToken": str(start + size)} if more else {}),
        }

    monkeypatch.setattr(fs, "_call", paged)
    found = remote_listing.find_objects(fs, "bkt/photos")
    assert [call.get("pageToken") for call in calls] == [None, "10", "20"]  # 25 objects, 10 a page
    assert all(call["prefix"] == "photos/" and call["maxResults"] == 10 for call in calls)
    monkeypatch.setattr(fs, "_call", real_call)
    assert {name: entry["size"] for name, entry in found.items()} == {n: e["size"] for n, e in expected.items()}
    items = list_sources(["gs://bkt/photos"])
    assert [item.name for item in items] == sorted(key.removeprefix("photos/") for key in KEYS)
    assert all(item.state is not None and item.state.changed_at for item in items)
