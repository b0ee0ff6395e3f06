"""The same collection command over `s3://` and `gs://` (real API servers: moto in server mode, gcp-storage-emulator)
and against a two-node local Ray cluster (`ray start --head` + a worker) gives the same records as over the folder on
this machine (analysed once for the module)."""

import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.integration.collection_cli import cli_env, comparable, run_collection, stored_rows
from tests.integration.conftest import ObjectServer
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


class Analysed(NamedTuple):
    folder: Path
    database: Path  # holds the folder's collection, "folder"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Analysed:
    """The photos analysed from their folder once; each test adds its own collection to the same database."""
    require(MOBILENET_DIR)
    tmp = tmp_path_factory.mktemp("sources")
    folder, database = _photos(tmp / "photos"), tmp / "jobs.sqlite"
    run_collection(cli_env(database), "analyze", str(folder), "--name", "folder")
    return Analysed(folder, database)


def test_remote_source_gives_the_same_records_as_the_folder(analysed: Analysed, object_server: ObjectServer) -> None:
    scheme = object_server.scheme
    object_server.create_bucket("photos")
    for path in sorted(analysed.folder.iterdir()):
        object_server.upload(path, "photos", f"shoot/{path.name}")
    run_collection(
        cli_env(analysed.database, **object_server.env), "analyze", f"{scheme}://photos/shoot", "--name", scheme
    )
    _assert_same(analysed.database, scheme, "folder")
    locations = [row["location"] for row in stored_rows(analysed.database, scheme).values()]
    assert all(location.startswith(f"{scheme}://photos/shoot/") for location in locations)


def test_two_node_cluster_gives_the_same_records(analysed: Analysed, cluster) -> None:  # noqa: F811 - folder first
    env = {**cluster.env, **{k: v for k, v in cli_env(analysed.database).items() if k.startswith("IMGSERVE_")}}
    args = ["analyze", str(analysed.folder), "--name", "cluster", "--address", cluster.address]
    result = run_collection(env, *args)
    assert "10 images, 1 failed" in result.stdout, result.stdout[-1000:]
    _assert_same(analysed.database, "folder", "cluster")
