"""Hidden and system folders in a dataset (a Mac's `__MACOSX` and `._*` AppleDouble files, `.thumbnails`, a
Synology NAS's `@eaDir`) are not images and not categories: they used to become training categories (a model
served with a `.thumbnails` label) or undecodable "images" that failed the job after all features were computed."""

import io
import zipfile
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from serving.collections.sources import list_sources
from serving.training.dataset import labelled_images

pytestmark = pytest.mark.unit


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 60)).save(out, "JPEG")
    return out.getvalue()


SYSTEM_FILES = [
    "__MACOSX/damaged/._1.jpg",
    ".thumbnails/a.jpg",
    "@eaDir/0.jpg/SYNOFILE_THUMB_S.jpg",
    "damaged/._0.jpg",
    "damaged/.hidden/x.jpg",
    ".DS_Store",
]
PHOTOS = ["damaged/0.jpg", "damaged/1.jpg", "intact/0.jpg", "intact/sub/1.jpg"]


def _dataset(root: Path) -> Path:
    for name in [*SYSTEM_FILES, *PHOTOS]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_jpeg())
    return root


def test_a_folder_dataset_lists_photos_and_categories_only(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "data")
    images, unlabelled = labelled_images(f"file://{dataset}", tmp_path)
    assert sorted(image.name for image in images) == PHOTOS and unlabelled == 0
    assert sorted({image.label for image in images}) == ["damaged", "intact"]


def test_an_archive_in_a_dataset_lists_no_macos_metadata(tmp_path: Path) -> None:
    dataset = tmp_path / "data"
    (dataset / "intact").mkdir(parents=True)
    with zipfile.ZipFile(dataset / "intact" / "batch.zip", "w") as archive:
        for name in ("p/0.jpg", "__MACOSX/p/._0.jpg", "p/._0.jpg", ".cache/t.jpg"):
            archive.writestr(name, _jpeg())
    assert [item.name for item in list_sources([str(dataset)])] == ["intact/batch.zip/p/0.jpg"]


def test_an_object_store_prefix_lists_no_hidden_objects() -> None:
    memory = fsspec.filesystem("memory")
    for name in [*SYSTEM_FILES, *PHOTOS]:
        memory.pipe(f"/hidden-test/{name}", _jpeg())
    try:
        assert sorted(item.name for item in list_sources(["memory://hidden-test"])) == PHOTOS
    finally:
        memory.rm("/hidden-test", recursive=True)


def test_a_single_file_is_listed_whatever_its_name(tmp_path: Path) -> None:
    """Only what lies under a folder is filtered: a file named on purpose is read."""
    photo = tmp_path / ".shot.jpg"
    photo.write_bytes(_jpeg())
    assert [item.name for item in list_sources([str(photo)])] == [".shot.jpg"]
