"""The same collection command over `s3://` (a real S3 API server: moto in server mode) and against a two-node
local Ray cluster (`ray start --head` + a worker) gives the same records as over the folder on this machine."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.collection_cli import cli_env, comparable, run_collection, stored_rows
from tests.integration.test_multinode import cluster  # noqa: F401 - the two-node cluster fixture
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.timeout(900)
MOTO = PROJECT_ROOT / ".venv" / "bin" / "moto_server"


def _photos(folder: Path) -> Path:
    """A small mixed folder: camera photos with GPS and web photos (copies, so `s3` and the folder hold the same)."""
    folder.mkdir()
    picks = sorted((require(EXIF_SAMPLES) / "jpg" / "gps").glob("*.jpg"))[:4]
    picks += sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:6]
    for path in picks:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same(database: Path, a: str, b: str) -> None:
    rows_a, rows_b = stored_rows(database, a), stored_rows(database, b)
    assert len(rows_a) == 11 and comparable(rows_a) == comparable(rows_b)
    for name, row in rows_a.items():
        assert row["quality_score"] == pytest.approx(rows_b[name]["quality_score"], abs=0.01), name
    assert sum(1 for row in rows_a.values() if not row["ok"]) == 1


def test_s3_gives_the_same_records_as_the_folder(tmp_path: Path) -> None:
    require(MOBILENET_DIR)
    if not MOTO.exists():
        pytest.skip(f"{MOTO} is absent: moto[server] comes with the dev extras")
    pytest.importorskip("s3fs", reason="s3fs comes with the s3 extra that make installs")
    pytest.importorskip("boto3", reason="boto3 comes with the dev extras")
    folder = _photos(tmp_path / "photos")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (tmp_path / "moto.log").open("wb") as log:
        moto = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or moto.poll() is not None:
                    pytest.fail(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.3)
        credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                       "FSSPEC_S3_ENDPOINT_URL": endpoint}  # fmt: skip
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        s3.create_bucket(Bucket="photos")
        for path in sorted(folder.iterdir()):
            s3.upload_file(str(path), "photos", f"shoot/{path.name}")
        env = cli_env(tmp_path / "jobs.sqlite", **credentials)
        run_collection(env, "analyze", "s3://photos/shoot", "--name", "s3")
        run_collection(env, "analyze", str(folder), "--name", "folder")
        _assert_same(tmp_path / "jobs.sqlite", "s3", "folder")
        assert all(
            row["location"].startswith("s3://photos/shoot/")
            for row in stored_rows(tmp_path / "jobs.sqlite", "s3").values()
        )
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def test_two_node_cluster_gives_the_same_records(cluster, tmp_path: Path) -> None:  # noqa: F811
    folder = _photos(tmp_path / "photos")
    database = tmp_path / "jobs.sqlite"
    run_collection(cli_env(database), "analyze", str(folder), "--name", "local")
    env = {**cluster.env, **{k: v for k, v in cli_env(database).items() if k.startswith("IMGSERVE_")}}
    result = run_collection(env, "analyze", str(folder), "--name", "cluster", "--address", cluster.address)
    assert "10 images, 1 failed" in result.stdout, result.stdout[-1000:]
    _assert_same(database, "local", "cluster")
