"""Hidden and system entries of a batch upload (names starting with '.' or '@', `__MACOSX`, at every depth) are
skipped as datasets and collections skip them: a Mac- or Synology-made zip gave a job `@eaDir/birds/thumb.jpg` and
`._x.JPEG` as analysed images and `.DS_Store` as a failed item (unsupported_format). Only `__MACOSX/` was dropped."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from serving.collections.sources import list_sources
from serving.jobs.intake import InputPart, Intake
from serving.jobs.objects import ObjectStore
from serving.jobs.settings import JobSettings

pytestmark = pytest.mark.unit

SYSTEM = ["@eaDir/birds/thumb.jpg", "birds/._x.JPEG", ".DS_Store", "__MACOSX/birds/._y.jpg", "dogs/.cache/t.jpg"]
PHOTOS = ["birds/x.JPEG", "dogs/y.jpg", "top.jpg"]


def _zip(names: list[str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"photo bytes of " + name.encode())
    buffer.seek(0)
    return buffer


def _tar(names: list[str], prefix: str = "") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in names:
            data = b"photo bytes of " + name.encode()
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _intake(tmp_path: Path) -> Intake:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    return Intake(ObjectStore(settings.object_store), settings, "default")


@pytest.mark.parametrize(
    "part",
    [
        lambda: InputPart("archive", "parcels.zip", _zip(SYSTEM + PHOTOS)),
        lambda: InputPart("archive", "parcels.tar.gz", _tar(SYSTEM + PHOTOS)),
        lambda: InputPart("archive", "", _zip(SYSTEM + PHOTOS)),  # a raw archive body: no name of its own
    ],
    ids=["zip", "tar.gz", "raw body"],
)
def test_an_uploaded_archive_gives_no_item_for_hidden_or_system_entries(tmp_path: Path, part) -> None:
    archive = part()
    items = _intake(tmp_path).items([archive])
    prefix = f"{archive.name}/" if archive.name else ""
    assert [item.name for item in items] == [prefix + name for name in PHOTOS]
    assert all(item.error_kind is None for item in items)


def test_a_tar_made_of_its_folder_dot_keeps_its_photos(tmp_path: Path) -> None:
    """`tar -C photos -czf p.tgz .` names every member `./...`: '.' is the archive's top, not a hidden folder."""
    items = _intake(tmp_path).items([InputPart("archive", "p.tgz", _tar(SYSTEM + PHOTOS, prefix="./"))])
    assert [item.name for item in items] == [f"p.tgz/./{name}" for name in PHOTOS]


def test_a_collection_or_dataset_from_such_a_tar_lists_its_photos(tmp_path: Path) -> None:
    """The rule is shared: a collection listed nothing at all from a `./`-named tar."""
    (tmp_path / "p.tgz").write_bytes(_tar(SYSTEM + PHOTOS, prefix="./").getvalue())
    assert [item.member for item in list_sources([str(tmp_path / "p.tgz")])] == [f"./{name}" for name in PHOTOS]


def test_uploads_named_as_hidden_files_of_a_folder_are_skipped(tmp_path: Path) -> None:
    """What a client's folder walk sends (the SDK names uploads by their path under the folder it was given)."""
    parts = [InputPart("image", name, io.BytesIO(b"bytes")) for name in [*SYSTEM, *PHOTOS]]
    assert [item.name for item in _intake(tmp_path).items(parts)] == PHOTOS


def test_unsafe_names_are_still_reported_not_skipped(tmp_path: Path) -> None:
    """'..' starts with a dot: a traversal entry must stay a visible failed item, not vanish as 'hidden'."""
    items = _intake(tmp_path).items([InputPart("archive", "h.tar.gz", _tar(["../.evil.jpg", "/.abs.jpg", "ok.jpg"]))])
    assert [(item.name, item.error_kind) for item in items] == [
        ("h.tar.gz/../.evil.jpg", "unsafe_entry"),
        ("h.tar.gz//.abs.jpg", "unsafe_entry"),
        ("h.tar.gz/ok.jpg", None),
    ]


def test_the_rule_is_the_datasets_one() -> None:
    from serving.hidden_names import is_hidden_path  # one rule: archives, sources.py and the SDK read it

    assert is_hidden_path("a/@eaDir/x.jpg") and is_hidden_path("__MACOSX/a.jpg") and is_hidden_path("._a.jpg")
    assert not is_hidden_path("./a/b.jpg") and not is_hidden_path("a/b.c.jpg") and not is_hidden_path("a@b/c.jpg")


def test_the_sdk_does_not_upload_what_the_server_would_skip(tmp_path) -> None:  # noqa: ANN001
    from serving.client.batch import batch_files

    for name in ("birds/a.jpg", "birds/._a.jpg", "@eaDir/birds/thumb.jpg", ".thumbnails/b.jpg", "fish/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [name for name, _ in batch_files(tmp_path)] == ["birds/a.jpg", "fish/b.png"]


def test_the_cli_does_not_send_what_the_server_would_skip(tmp_path) -> None:  # noqa: ANN001
    from serving.image_files import expand_images

    for name in ("birds/a.jpg", "birds/._a.jpg", "@eaDir/birds/thumb.jpg", "fish/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert expand_images([str(tmp_path)]) == [str(tmp_path / "birds/a.jpg"), str(tmp_path / "fish/b.png")]
