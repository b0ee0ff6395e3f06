"""Categories without labels: a collection saved from a batch job of one uploaded archive names its images
`parcels.zip/birds/x.jpg`, so "the first folder of each image's name" was the archive's name for every image and
training answered 400 "needs at least two categories, found ['parcels.zip']". The category is now the first folder
below the folders all the collection's images share; folder datasets are named as before."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipelines.collections.record import ImageRecord
from serving.collections.store import RecordedImage
from serving.errors import BadRequestError
from serving.training.dataset import check_classes, collection_dataset, labelled_images

pytestmark = pytest.mark.unit

JOB = "0123456789abcdef0123456789abcdef"


def _saved(names: list[str], failed: tuple[str, ...] = ()) -> tuple[list[RecordedImage], dict]:
    """A collection saved from a job (location `job:<id>`), and that job's stored inputs."""
    images = [RecordedImage(ImageRecord(name=n, ok=n not in failed), None, f"job:{JOB}") for n in names]
    return images, {JOB: {n: ("object", f"{i:064x}") for i, n in enumerate(names)}}


def _labels(names: list[str], failed: tuple[str, ...] = ()) -> dict[str, str]:
    images, inputs = _saved(names, failed)
    used, _ = collection_dataset(images, None, inputs, JOB)
    return {image.name: image.label for image in used}


def test_a_collection_of_one_archive_takes_its_categories_inside_it() -> None:
    names = ["parcels.zip/birds/a.jpg", "parcels.zip/birds/b.jpg", "parcels.zip/dogs/c.jpg", "parcels.zip/dogs/d.jpg"]
    labels = _labels([*names, "parcels.zip/top.jpg"])  # an image at the archive's top has no category
    assert labels == dict(zip(names, ["birds", "birds", "dogs", "dogs"], strict=True))
    images, inputs = _saved(names)
    assert check_classes(collection_dataset(images, None, inputs, JOB)[0]) == ["birds", "dogs"]


def test_a_common_parent_is_no_category_but_deeper_folders_stay_in_their_category() -> None:
    names = ["p.zip/data/birds/a.jpg", "p.zip/data/birds/sub/b.jpg", "p.zip/data/dogs/c.jpg"]
    assert list(_labels(names).values()) == ["birds", "birds", "dogs"]


def test_a_failed_image_outside_the_shared_folder_does_not_move_it() -> None:
    names = ["parcels.zip/birds/a.jpg", "parcels.zip/dogs/c.jpg", ".DS_Store"]
    assert list(_labels(names, failed=(".DS_Store",)).values()) == ["birds", "dogs"]


def test_two_archives_or_a_folder_collection_keep_their_first_folder() -> None:
    assert list(_labels(["a.zip/birds/x.jpg", "b.zip/birds/y.jpg"]).values()) == ["a.zip", "b.zip"]
    folder = [RecordedImage(ImageRecord(name=n), None, f"/d/{n}") for n in ("box/1.jpg", "bag/2.jpg", "3.jpg")]
    used, left_out = collection_dataset(folder, None, {})
    assert [(i.name, i.label) for i in used] == [("box/1.jpg", "box"), ("bag/2.jpg", "bag")] and left_out == 1


def test_labels_given_are_taken_as_they_are() -> None:
    images, inputs = _saved(["parcels.zip/birds/a.jpg", "parcels.zip/dogs/b.jpg"])
    used, _ = collection_dataset(images, {"parcels.zip/birds/a.jpg": "x", "parcels.zip/dogs/b.jpg": "y"}, inputs)
    assert [image.label for image in used] == ["x", "y"]


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    return out.getvalue()


def test_a_dataset_that_is_one_archive_takes_its_categories_inside_it(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "parcels.zip", "w") as archive:
        for name in ("damaged/0.jpg", "damaged/1.jpg", "intact/0.jpg", "intact/1.jpg", "loose.jpg"):
            archive.writestr(name, _jpeg())
    images, unlabelled = labelled_images(f"file://{tmp_path}/parcels.zip", tmp_path)
    assert sorted({image.label for image in images}) == ["damaged", "intact"] and unlabelled == 1


def test_a_dataset_that_is_a_tar_of_its_folder_dot_takes_the_folders_inside_it(tmp_path: Path) -> None:
    """`tar -C parcels -czf parcels.tgz .` names every member `./damaged/0.jpg`: '.' is no category."""
    with tarfile.open(tmp_path / "parcels.tgz", "w:gz") as archive:
        for name in ("./damaged/0.jpg", "./damaged/1.jpg", "./intact/0.jpg", "./intact/1.jpg"):
            data = _jpeg()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    images, _ = labelled_images(f"file://{tmp_path}/parcels.tgz", tmp_path)
    assert [image.label for image in images] == ["damaged", "damaged", "intact", "intact"]
    assert list(_labels(["p.tgz/./birds/a.jpg", "p.tgz/./dogs/b.jpg"]).values()) == ["birds", "dogs"]  # a job's


def test_a_folder_dataset_is_named_as_before(tmp_path: Path) -> None:
    """Names relative to the dataset's root: a single top folder stays the (only) category, as it was."""
    for name in ("all/damaged/0.jpg", "all/intact/0.jpg"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(_jpeg())
    images, _ = labelled_images(f"file://{tmp_path}/data", tmp_path)
    assert {image.label for image in images} == {"all"}
    with pytest.raises(BadRequestError, match=r"found \['all'\]"):
        check_classes(images)
