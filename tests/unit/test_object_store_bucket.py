"""Operator walkthrough (walk4, finding 4): `IMGSERVE_OBJECT_STORE=s3://nosuchbucket/x` made the server create the
bucket (s3fs's `makedirs` creates it), so a mistyped bucket name kept every input in a new bucket; and
`s3:/malformed` (one slash) was taken by fsspec for a local folder relative to the replica's working directory. The
URL must be an absolute local path or `<protocol>://<bucket>[/prefix]` (refused at start otherwise), and an object
store's bucket is checked, never created. The remote half runs on moto's S3 API server in this process
(tests.unit.test_object_store's `bucket`; skips without moto, boto3 or s3fs)."""

from pathlib import Path

import pytest

from serving.jobs.objects import ObjectStore, ObjectStoreUnusableError
from serving.jobs.settings import JobSettings
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def _bucket_names() -> set[str]:
    import boto3
    import fsspec

    client = boto3.client("s3", endpoint_url=fsspec.config.conf["s3"]["endpoint_url"], region_name="us-east-1")
    return {entry["Name"] for entry in client.list_buckets()["Buckets"]}


def test_a_missing_bucket_is_refused_and_never_created(bucket: str) -> None:  # noqa: F811 - the fixture
    typo = f"{bucket}-typo"
    with pytest.raises(ObjectStoreUnusableError) as refused:
        ObjectStore(f"s3://{typo}/objects")
    assert f"bucket {typo!r} does not exist" in str(refused.value)
    assert f"s3://{typo}/objects" in str(refused.value)
    assert typo not in _bucket_names(), "the server created the mistyped bucket"


def test_an_existing_bucket_is_used_without_making_anything(bucket: str) -> None:  # noqa: F811 - the fixture
    before = _bucket_names()
    store = ObjectStore(f"s3://{bucket}/a/new/prefix")
    digest = store.put(b"photo bytes")
    assert store.get(digest) == b"photo bytes"
    assert _bucket_names() == before


def _object_store_setting(tmp_path: Path, value: str) -> str:
    env = {"IMGSERVE_CACHE_DIR": str(tmp_path / "cache"), "IMGSERVE_OBJECT_STORE": value}
    return JobSettings.from_env(env).object_store


@pytest.mark.parametrize(
    "value", ["s3:/malformed", "objects", "./objects", "s3://", "s3:///prefix", "nosuchprotocol://b/x", "file://rel"]
)
def test_an_object_store_that_is_neither_an_absolute_path_nor_a_bucket_url_is_refused(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ValueError) as refused:
        _object_store_setting(tmp_path, value)
    message = str(refused.value)
    assert message.startswith("invalid setting: IMGSERVE_OBJECT_STORE=") and repr(value) in message, message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["/srv/imgserve/objects", "file:///srv/imgserve/objects", "s3://bucket/prefix"])
def test_absolute_paths_and_bucket_urls_are_accepted(tmp_path: Path, value: str) -> None:
    pytest.importorskip("s3fs")
    assert _object_store_setting(tmp_path, value) == value


def test_the_default_store_under_a_relative_cache_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = JobSettings.from_env({"IMGSERVE_CACHE_DIR": "cache"}).object_store
    assert store == str(tmp_path / "cache" / "objects")


def test_the_start_refuses_a_missing_bucket_in_one_line(bucket: str) -> None:  # noqa: F811 - the fixture
    from serving.serve_file import StartRefused
    from serving.start_checks import check_object_store

    with pytest.raises(StartRefused) as refused:
        check_object_store("s3://no-such-bucket-at-start/objects")
    message = str(refused.value)
    assert message.startswith("invalid setting: IMGSERVE_OBJECT_STORE=") and "does not exist" in message, message
    assert "\n" not in message
    check_object_store("/srv/imgserve/objects")  # local: made by the replica, nothing checked here
