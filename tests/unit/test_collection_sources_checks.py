"""A file named on purpose as a collection source is read whatever its extension (docs/COLLECTIONS.md: "single
files"; "a file named on purpose is read"): `collection analyze photo.dat` (a JPEG) answered "0 images, 0 failed"
with exit 0, and a file that is not an image (mos.csv) left an empty collection without a word. A folder's walk
still takes image extensions only; an archive named on purpose is expanded, and one that cannot be read is a
one-line refusal (it was a BadZipFile / tarfile.ReadError traceback)."""

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.collections.sources import SourceError, list_sources
from tests.paths import MOBILENET_DIR, require

pytestmark = pytest.mark.unit


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "album"
    folder.mkdir()
    (folder / "photo.dat").write_bytes(_jpeg())  # a JPEG under a name that is not an image's
    (folder / "mos.csv").write_text("image,mos\na.jpg,3.2\n")
    (folder / "a.jpg").write_bytes(_jpeg())
    return folder


def test_a_file_named_on_purpose_is_listed_whatever_its_extension(files: Path) -> None:
    assert [item.name for item in list_sources([str(files / "photo.dat")])] == ["photo.dat"]  # was []
    assert [item.name for item in list_sources([str(files / "mos.csv")])] == ["mos.csv"]  # was []
    both = list_sources([str(files / "photo.dat"), str(files / "mos.csv")])
    assert [(item.name, item.location) for item in both] == [
        ("photo.dat", str(files / "photo.dat")),
        ("mos.csv", str(files / "mos.csv")),
    ]


def test_a_folder_walk_still_takes_image_extensions_only(files: Path) -> None:
    assert [item.name for item in list_sources([str(files)])] == ["a.jpg"]


def test_an_object_named_on_purpose_is_listed_but_not_one_under_a_prefix() -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/named-bucket/photos/photo.dat", _jpeg())
    memory.pipe("/named-bucket/photos/a.jpg", _jpeg())
    try:
        assert [item.name for item in list_sources(["memory://named-bucket/photos/photo.dat"])] == ["photo.dat"]
        assert [item.name for item in list_sources(["memory://named-bucket/photos"])] == ["a.jpg"]
    finally:
        memory.rm("/named-bucket", recursive=True)


def test_an_archive_named_on_purpose_is_expanded_to_its_images(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.jpg", _jpeg())
        zipped.writestr("notes.txt", "not an image")
    assert [(item.name, item.member) for item in list_sources([str(archive)])] == [("photos.zip/a.jpg", "a.jpg")]
    tarred = tmp_path / "photos.tar.gz"
    with tarfile.open(tarred, "w:gz") as tar:
        info = tarfile.TarInfo("b.jpg")
        data = _jpeg()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert [item.member for item in list_sources([str(tarred)])] == ["b.jpg"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("damaged.zip", "not a readable zip archive (File is not a zip file)"),
        ("damaged.tar.gz", "not a readable tar archive (neither a tar file nor a gzip, bzip2 or xz compressed one)"),
        ("damaged.tar", "not a readable tar archive"),
    ],
)
def test_an_archive_that_cannot_be_read_is_refused_in_one_line(
    tmp_path: Path, name: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.cli import main

    damaged = tmp_path / name
    damaged.write_bytes(_jpeg()[:300])
    with pytest.raises(SourceError, match=f"damaged.*: {reason.replace('(', '.').replace(')', '.')}"):
        list_sources([str(damaged)])
    argv = ["collection", "analyze", str(damaged), "--name", "x", "--database-url", f"sqlite:///{tmp_path}/j.sqlite"]
    assert main(argv) == 2  # was a traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"imgserve: error: {damaged}: {reason}")


def test_a_named_file_is_analysed_or_fails_with_its_reason(files: Path) -> None:
    """What `collection analyze` records of them: the JPEG analysed, the CSV a failed record saying why."""
    require(MOBILENET_DIR)  # analysis_setup composes the application, whose default model needs these weights
    from serving.collections.analyze import analysis_setup, prepare_batch, record_of

    setup = analysis_setup(["metadata", "quality"])
    items = list_sources([str(files / "photo.dat"), str(files / "mos.csv")])
    rows = [item.to_row() for item in items]
    batch = {key: np.array([row[key] for row in rows], dtype=object) for key in ("name", "location", "member")}
    prepared = prepare_batch(batch, setup)
    errors = dict(zip(prepared["name"], prepared["error"], strict=True))
    assert errors["photo.dat"] == ""
    assert errors["mos.csv"].startswith("unsupported_format: unrecognised image format")
    failed = record_of({"name": "mos.csv", "error": errors["mos.csv"], "output": ""}, items[1])
    assert not failed.record.ok and "unsupported_format" in (failed.record.error or "")
