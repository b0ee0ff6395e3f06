"""A training dataset's files are checked again as they are read (security review): the listing refused links to
outside the tenant's root, but the files were read later through the collections reader, links followed, so a file
swapped for a link to another tenant's folder after the listing put that tenant's image into this tenant's model.
Batch inputs were already read this way (serving.jobs.uris.read_uri)."""

import os
import zipfile
from pathlib import Path

import pytest

from serving.jobs.errors import ItemInputError
from serving.training.dataset import labelled_images, read_dataset_files
from tests.unit.test_edges_in_process import jpeg

pytestmark = pytest.mark.unit
LIMIT = 1 << 20


def _tenants(tmp_path: Path) -> Path:
    for tenant in ("a", "b"):
        for category in ("cat", "dog"):
            (tmp_path / tenant / category).mkdir(parents=True)
            for i in range(2):
                data = jpeg((i * 30, 10, 10)) if tenant == "a" else b"B-SECRET" + jpeg()
                (tmp_path / tenant / category / f"{i}.jpg").write_bytes(data)
    return tmp_path


def test_a_file_swapped_for_a_link_out_of_the_root_after_listing_is_refused(tmp_path: Path) -> None:
    root = _tenants(tmp_path) / "a"
    images, _ = labelled_images(f"file://{root}", root)
    victim = root / "cat" / "0.jpg"
    victim.unlink()
    os.symlink(tmp_path / "b" / "cat" / "0.jpg", victim)  # after the listing checked it
    read = dict(zip((image.name for image in images), read_dataset_files(images, root, None, LIMIT), strict=True))
    refused = read.pop("cat/0.jpg")
    assert isinstance(refused, ItemInputError) and refused.kind == "forbidden_uri", refused  # b's bytes before
    assert all(isinstance(data, bytes) and data.startswith(b"\xff\xd8") for data in read.values())


def test_links_inside_the_root_and_archives_are_still_read(tmp_path: Path) -> None:
    root = _tenants(tmp_path) / "a"
    with zipfile.ZipFile(root / "more.zip", "w") as archive:
        archive.writestr("cat/2.jpg", jpeg((90, 10, 10)))
    images, _ = labelled_images(f"file://{root}", root)
    (root / "dog" / "1.jpg").unlink()
    os.symlink(root / "dog" / "0.jpg", root / "dog" / "1.jpg")  # a link that stays in the tenant's root
    read = read_dataset_files(images, root, None, LIMIT)
    assert len(read) == 5 and all(isinstance(data, bytes) and data.startswith(b"\xff\xd8") for data in read), read


@pytest.mark.parametrize("target", ["inside", "outside"])
def test_a_category_folder_that_is_a_link_is_refused_by_name(tmp_path: Path, target: str) -> None:
    """The listing does not follow folder links: a category folder that was one vanished from the model without a
    word (a link inside the root), or the dataset was refused for 'needing two categories' (a link out of it)."""
    from serving.errors import BadRequestError

    root = _tenants(tmp_path) / "a"  # a/cat, a/dog: two real categories
    elsewhere = root.parent / "b" / "cat"  # another tenant's folder
    if target == "inside":
        elsewhere = root / "kept" / "food"
        elsewhere.mkdir(parents=True)
        (elsewhere / "0.jpg").write_bytes(jpeg())
    os.symlink(elsewhere, root / "food")
    with pytest.raises(BadRequestError, match="'food' is a link to a folder"):
        labelled_images(f"file://{root}", root)
