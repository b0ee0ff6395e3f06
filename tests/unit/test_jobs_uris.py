"""URI inputs: file:// only under the allowed root (links resolved), remote schemes only with their fsspec package,
and the content-addressed object store."""

import errno
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from serving.errors import BadRequestError, classify_error
from serving.jobs.errors import ItemInputError, UriNotAllowedError
from serving.jobs.objects import ObjectStore
from serving.jobs.uris import check_uri, read_uri

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.jpg").write_bytes(b"image a")
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    return tmp_path / "root"


def test_file_uri_under_root_is_read(root: Path) -> None:
    uri = (root / "sub" / "a.jpg").as_uri()
    assert check_uri(uri, root) == uri
    assert read_uri(uri, root, 1000) == b"image a"


@pytest.mark.parametrize("suffix", ["?v=2", "#top", "?"])
def test_a_file_uri_with_a_query_or_fragment_is_refused_not_read_without_it(root: Path, suffix: str) -> None:
    """`file:///.../a.jpg?v=2` read a.jpg: a file named `a.jpg?v=2` is written `a.jpg%3Fv=2` in a URI."""
    uri = (root / "sub" / "a.jpg").as_uri() + suffix
    with pytest.raises(BadRequestError, match="query or fragment"):
        check_uri(uri, root)
    (root / "sub" / "a.jpg?v=2").write_bytes(b"image a, version 2")
    assert read_uri((root / "sub" / "a.jpg?v=2").as_uri(), root, 1000) == b"image a, version 2"


@pytest.mark.parametrize("suffix", ["/../outside.jpg", "/sub/../../outside.jpg"])
def test_file_uri_escaping_the_root_is_refused(root: Path, suffix: str) -> None:
    uri = "file://" + str(root) + suffix
    with pytest.raises(UriNotAllowedError):
        check_uri(uri, root)
    with pytest.raises(ItemInputError) as caught:
        read_uri(uri, root, 1000)
    assert caught.value.kind == "forbidden_uri"


def test_symlink_inside_root_pointing_outside_is_refused(root: Path) -> None:
    os.symlink(root.parent / "outside.jpg", root / "link.jpg")
    with pytest.raises(UriNotAllowedError):
        check_uri((root / "link.jpg").as_uri(), root)


def test_file_uris_are_refused_without_a_root(root: Path) -> None:
    with pytest.raises(UriNotAllowedError, match="IMGSERVE_BATCH_ALLOWED_ROOT"):
        check_uri((root / "sub" / "a.jpg").as_uri(), None)


@pytest.mark.parametrize("uri", ["http://example.com/a.jpg", "ftp://x/y", "/plain/path.jpg", "file://otherhost/a.jpg"])
def test_other_schemes_and_hosts_are_refused(root: Path, uri: str) -> None:
    with pytest.raises(UriNotAllowedError):
        check_uri(uri, root)


@pytest.mark.parametrize(("scheme", "package"), [("s3", "s3fs"), ("gs", "gcsfs")])
def test_remote_scheme_without_its_package_is_a_400(root: Path, scheme: str, package: str, monkeypatch) -> None:
    fsspec = pytest.importorskip("fsspec")
    if importlib.util.find_spec(package) is not None:  # make installs both: fsspec is made to answer as without it

        def absent(protocol: str) -> None:
            raise ImportError(f"Install {package} to access {protocol}")

        monkeypatch.setattr(fsspec, "get_filesystem_class", absent)
    with pytest.raises(BadRequestError, match=package):
        check_uri(f"{scheme}://bucket/key.jpg", root)


def test_missing_and_oversized_files_are_item_errors(root: Path) -> None:
    with pytest.raises(ItemInputError) as missing:
        read_uri((root / "nope.jpg").as_uri(), root, 1000)
    assert missing.value.kind == "missing_input"
    with pytest.raises(ItemInputError) as large:
        read_uri((root / "sub" / "a.jpg").as_uri(), root, 3)
    assert large.value.kind == "too_large"
    (root / "sub" / "folder.jpg").mkdir()
    with pytest.raises(ItemInputError) as folder:
        read_uri((root / "sub" / "folder.jpg").as_uri(), root, 1000)
    assert folder.value.kind == "invalid_input" and str(folder.value).endswith("folder.jpg' is a folder"), folder.value
    os.mkfifo(root / "sub" / "pipe.jpg")
    with pytest.raises(ItemInputError) as pipe:
        read_uri((root / "sub" / "pipe.jpg").as_uri(), root, 1000)
    assert pipe.value.kind == "invalid_input" and "not a regular file" in str(pipe.value)


def test_object_store_is_content_addressed_and_verified(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path / "objects"))
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == digest and store.get(digest) == b"hello"
    path = tmp_path / "objects" / "sha256" / digest[:2] / digest
    assert path.is_file() and not list(path.parent.glob("*.part"))
    path.write_bytes(b"tampered")
    with pytest.raises(ItemInputError) as corrupt:
        store.get(digest)
    assert corrupt.value.kind == "corrupt_input"
    with pytest.raises(ItemInputError):
        store.get("0" * 64)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_object_store_full_disk_is_a_507_with_no_part_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStore(str(tmp_path / "objects"))
    real_open = store.fs.open

    class FillsUp:  # writes part of the data for real, then the disk is full
        def __init__(self, handle: Any):
            self.handle = handle

        def __enter__(self) -> "FillsUp":
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> None:
            self.handle.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device", "/srv/imgserve/objects/secret")

    monkeypatch.setattr(store.fs, "open", lambda path, mode: FillsUp(real_open(path, mode)))
    with pytest.raises(OSError) as full:
        store.put(b"x" * 1000)
    info = classify_error(full.value)
    assert (info.http_status, info.kind) == (507, "storage_full") and "/srv" not in info.message
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]  # no .part, no torn object
