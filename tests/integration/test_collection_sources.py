"""The same collection command over `s3://` (a real S3 API server: moto in server mode) and against a two-node
local Ray cluster (`ray start --head` + a worker) gives the same records as over the folder on this machine."""

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.collection_cli import cli_env, comparable, run_collection, stored_rows
from tests.integration.test_multinode import cluster  # noqa: F401 - the two-node cluster fixture
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, MOBILENET_DIR, require

pytestmark = pytest.mark.timeout(900)


def _photos(folder: Path) -> Path:
    """A small mixed folder: camera photos with GPS and web photos (copies, so `s3` and the folder hold the same)."""
    folder.mkdir()
    picks = sorted((require(EXIF_SAMPLES) / "jpg" / "gps").glob("*.jpg"))[:4]
    picks += sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:6]
    for path in picks:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _assert_same(database: Path, a: str, b: str) -> None:
    rows_a, rows_b = stored_rows(database, a), stored_rows(database, b)
    assert len(rows_a) == 11 and comparable(rows_a) == comparable(rows_b)
    for name, row in rows_a.items():
        assert row["quality_score"] == pytest.approx(rows_b[name]["quality_score"], abs=0.01), name
    assert sum(1 for row in rows_a.values() if not row["ok"]) == 1


def test_s3_gives_the_same_records_as_the_folder(tmp_path: Path, moto_s3: dict[str, Any]) -> None:
    require(MOBILENET_DIR)
    folder = _photos(tmp_path / "photos")
    s3 = moto_s3["client"]
    s3.create_bucket(Bucket="photos")
    for path in sorted(folder.iterdir()):
        s3.upload_file(str(path), "photos", f"shoot/{path.name}")
    env = cli_env(tmp_path / "jobs.sqlite", **moto_s3["env"])
    run_collection(env, "analyze", "s3://photos/shoot", "--name", "s3")
    run_collection(env, "analyze", str(folder), "--name", "folder")
    _assert_same(tmp_path / "jobs.sqlite", "s3", "folder")
    assert all(
        row["location"].startswith("s3://photos/shoot/") for row in stored_rows(tmp_path / "jobs.sqlite", "s3").values()
    )


def test_two_node_cluster_gives_the_same_records(cluster, tmp_path: Path) -> None:  # noqa: F811
    folder = _photos(tmp_path / "photos")
    database = tmp_path / "jobs.sqlite"
    run_collection(cli_env(database), "analyze", str(folder), "--name", "local")
    env = {**cluster.env, **{k: v for k, v in cli_env(database).items() if k.startswith("IMGSERVE_")}}
    result = run_collection(env, "analyze", str(folder), "--name", "cluster", "--address", cluster.address)
    assert "10 images, 1 failed" in result.stdout, result.stdout[-1000:]
    _assert_same(database, "local", "cluster")
