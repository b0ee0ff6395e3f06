"""Object-store URIs the server cannot use: no credentials is a per-item input/output error or a 4xx, never an
internal error (500, a traceback); and one unreachable store holds an item for at most IMGSERVE_REMOTE_TIMEOUT_S.

The s3:// cases run the real s3fs/botocore with every credential source switched off (no network is reached:
botocore refuses before any request); the gs:// cases use a stand-in async filesystem registered for `gs`."""

import asyncio
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.asyn import AsyncFileSystem

from serving.collections.sources import SourceError, list_sources
from serving.errors import BadRequestError
from serving.jobs.errors import ItemInputError
from serving.jobs.remote_access import DEFAULT_REMOTE_TIMEOUT_S, REMOTE_TIMEOUT_ENV, remote_timeout_s
from serving.jobs.uris import read_uri, write_named_output
from serving.training.dataset import labelled_images
from tests.paths import PROJECT_ROOT
from tests.unit.test_object_store import bucket  # noqa: F401 - the moto S3 fixture

pytestmark = pytest.mark.unit
AWS_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """botocore with nothing to find credentials in: no variables, no files, no instance metadata."""
    s3fs = pytest.importorskip("s3fs")
    for name in AWS_CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    yield {name: value for name, value in os.environ.items()}
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_input_without_credentials_is_unreadable_input(no_aws_credentials: dict[str, str]) -> None:
    with pytest.raises(ItemInputError) as caught:
        read_uri("s3://bucket/b.jpg", None, 1000)
    assert caught.value.kind == "unreadable_input"
    assert "NoCredentialsError" in caught.value.message and "credentials" in caught.value.message


def test_s3_output_without_credentials_is_unwritable_output(no_aws_credentials: dict[str, str]) -> None:
    with pytest.raises(ItemInputError) as caught:
        write_named_output("s3://bucket/out", "cat_web.webp", b"data", None)
    assert caught.value.kind == "unwritable_output"
    assert "NoCredentialsError" in caught.value.message


def test_s3_source_without_credentials_cannot_be_listed(no_aws_credentials: dict[str, str]) -> None:
    with pytest.raises(SourceError, match="s3://bucket/photos: cannot be listed: NoCredentialsError"):
        list_sources(["s3://bucket/photos"])


def test_s3_training_dataset_without_credentials_is_a_400(no_aws_credentials: dict[str, str]) -> None:
    with pytest.raises(BadRequestError, match="dataset 's3://bucket/parcels' cannot be listed"):
        labelled_images("s3://bucket/parcels", None)


def test_s3_training_submission_without_credentials_is_a_400(
    no_aws_credentials: dict[str, str], tmp_path: Path
) -> None:
    """The walk's HTTP 500: TrainingService.submit lists the dataset before it records the job."""
    from serving.security.principal import Principal
    from serving.training.service import TrainingRequest
    from tests.unit.test_training_runs import World

    world = World(tmp_path)
    request = TrainingRequest(model="s3m", dataset="s3://bucket/parcels")
    owner = Principal(key_id="k1", tenant="default", role="admin")
    with pytest.raises(BadRequestError, match="NoCredentialsError"):
        asyncio.run(world.training.submit(request, owner))


def test_collection_analyze_of_s3_without_credentials_is_one_error_line(
    no_aws_credentials: dict[str, str], tmp_path: Path
) -> None:
    env = dict(no_aws_credentials, IMGSERVE_DATABASE_URL=f"sqlite:///{tmp_path / 'c.sqlite3'}")
    env["IMGSERVE_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "collection", "analyze", "s3://bucket/photos", "--name", "s3c"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: s3://bucket/photos: cannot be listed: NoCredentialsError" in done.stderr


class CloudStandIn(AsyncFileSystem):
    """A `gs://` store for the tests: `behaviour` says what every request does."""

    protocol = ("gs", "gcs")
    behaviour = "no_credentials"  # | "stuck" | "ok"
    stuck_s = 8.0
    objects: dict[str, bytes] = {}

    async def _answer(self) -> None:
        if self.behaviour == "no_credentials":
            from google.auth.exceptions import DefaultCredentialsError

            raise DefaultCredentialsError("Your default credentials were not found.")
        if self.behaviour == "stuck":
            await asyncio.sleep(self.stuck_s)

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        await self._answer()
        if path not in self.objects:
            raise FileNotFoundError(path)
        return {"name": path, "size": len(self.objects[path]), "type": "file"}

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        await self._answer()
        return self.objects[path][start:end]

    async def _pipe_file(self, path: str, data: bytes, **kwargs: Any) -> None:
        await self._answer()
        self.objects[path] = data

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        await self._answer()
        return []


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> type[CloudStandIn]:
    pytest.importorskip("google.auth")
    stand_in = type("Cloud", (CloudStandIn,), {"objects": {}, "cachable": False})
    for scheme in ("gs", "gcs"):
        monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, scheme, stand_in)
    return stand_in


def test_gs_input_without_credentials_is_unreadable_input(cloud: type[CloudStandIn]) -> None:
    with pytest.raises(ItemInputError) as caught:
        read_uri("gs://bucket/b.jpg", None, 1000)
    assert caught.value.kind == "unreadable_input"
    assert "DefaultCredentialsError" in caught.value.message


def test_gs_output_without_credentials_is_unwritable_output(cloud: type[CloudStandIn]) -> None:
    with pytest.raises(ItemInputError) as caught:
        write_named_output("gs://bucket/out", "a.webp", b"data", None)
    assert caught.value.kind == "unwritable_output"


def test_gs_source_without_credentials_cannot_be_listed(cloud: type[CloudStandIn]) -> None:
    with pytest.raises(SourceError, match="DefaultCredentialsError"):
        list_sources(["gs://bucket/photos"])


def test_gs_objects_are_read_and_written_through_the_bounded_path(cloud: type[CloudStandIn]) -> None:
    cloud.behaviour = "ok"
    assert write_named_output("gs://bucket/out", "a.webp", b"0123456789", None) == "gs://bucket/out/a.webp"
    assert read_uri("gs://bucket/out/a.webp", None, 10) == b"0123456789"
    cloud.objects["bucket/empty.jpg"] = b""
    assert read_uri("gs://bucket/empty.jpg", None, 10) == b""
    with pytest.raises(ItemInputError) as caught:
        read_uri("gs://bucket/out/a.webp", None, 9)
    assert caught.value.kind == "too_large"
    with pytest.raises(ItemInputError) as missing:
        read_uri("gs://bucket/nothing.jpg", None, 10)
    assert missing.value.kind == "missing_input"


def test_an_unreachable_store_fails_the_item_within_the_timeout(
    cloud: type[CloudStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcsfs retried an unreachable host for ~49 s per item while the tenant's next job waited."""
    cloud.behaviour = "stuck"
    monkeypatch.setenv(REMOTE_TIMEOUT_ENV, "0.5")
    started = time.monotonic()
    with pytest.raises(ItemInputError) as read:
        read_uri("gs://bucket/b.jpg", None, 1000)
    with pytest.raises(ItemInputError) as write:
        write_named_output("gs://bucket/out", "a.webp", b"data", None)
    assert time.monotonic() - started < 5.0  # each alone would take stuck_s (8 s)
    assert read.value.kind == "unreadable_input" and REMOTE_TIMEOUT_ENV in read.value.message
    assert write.value.kind == "unwritable_output" and REMOTE_TIMEOUT_ENV in write.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", DEFAULT_REMOTE_TIMEOUT_S), ("7.5", 7.5), ("0", DEFAULT_REMOTE_TIMEOUT_S), ("soon", DEFAULT_REMOTE_TIMEOUT_S)],
)
def test_remote_timeout_setting(raw: str, expected: float) -> None:
    assert remote_timeout_s({REMOTE_TIMEOUT_ENV: raw}) == expected


def test_s3_objects_are_read_and_written_through_the_bounded_path(bucket: str) -> None:  # noqa: F811
    """The bounded read (size, then a range) and write (one put) on moto's S3 API: whole objects, an empty one
    (S3 refuses a range of it), one too large, one missing, and an output removed by its digest."""
    import hashlib

    from serving.jobs.uris import remove_named_output

    data = b"\xff\xd8 photo " * 100
    assert write_named_output(f"s3://{bucket}/out", "a #1.jpg", data, None) == f"s3://{bucket}/out/a #1.jpg"
    assert read_uri(f"s3://{bucket}/out/a #1.jpg", None, len(data)) == data
    write_named_output(f"s3://{bucket}/out", "empty.jpg", b"", None)
    assert read_uri(f"s3://{bucket}/out/empty.jpg", None, 10) == b""
    with pytest.raises(ItemInputError) as large:
        read_uri(f"s3://{bucket}/out/a #1.jpg", None, len(data) - 1)
    assert large.value.kind == "too_large"
    with pytest.raises(ItemInputError) as missing:
        read_uri(f"s3://{bucket}/out/none.jpg", None, 10)
    assert missing.value.kind == "missing_input"
    assert remove_named_output(f"s3://{bucket}/out", "a #1.jpg", hashlib.sha256(data).hexdigest(), None)
