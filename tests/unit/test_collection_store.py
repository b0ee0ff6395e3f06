"""The collection store (SQLite here; PostgreSQL in tests/integration), sources listing and the exports."""

import csv
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipelines.collections.record import ImageRecord, failed_record
from serving.collections.export import csv_lines, jsonl_lines
from serving.collections.filters import ImageFilter
from serving.collections.sources import SourceError, list_sources, read_items
from serving.collections.store import CollectionStore, RecordedImage
from serving.errors import BadRequestError
from serving.jobs.database import open_job_database
from serving.jobs.errors import CollectionNotFoundError
from serving.regular_files import NotARegularFileError
from serving.security.principal import http_role


@pytest.fixture
def store(tmp_path: Path) -> CollectionStore:
    return CollectionStore(open_job_database(f"sqlite:///{tmp_path}/jobs.sqlite"))


def _image(name: str, **fields: object) -> RecordedImage:
    return RecordedImage(ImageRecord(name, **fields), {"quality": {"score": fields.get("quality_score")}}, f"/x/{name}")


def _fill(store: CollectionStore, tenant: str = "default") -> str:
    info = store.open("holiday", ["quality", "metadata"], ["/x"], tenant)
    store.add(
        info.id,
        [
            _image("a.jpg", tags=("blurry", "low_light"), quality_score=20.0, quality_level="LOW", model="EOS 80D",
                   taken_at="2023-01-05T10:00:00", format="JPEG"),
            _image("b.jpg", tags=("sharp",), quality_score=80.0, quality_level="HIGH", model="EOS 80D",
                   taken_at="2023-06-05T10:00:00", format="JPEG"),
            _image("c_d.png", tags=("blurryish", "low-light"), quality_score=50.0, quality_level="MEDIUM", model="D750",
                   format="PNG"),
            RecordedImage(failed_record("bad.jpg", "unsupported_format: not an image")),
        ],
    )  # fmt: skip
    return info.id


def _names(store: CollectionStore, collection_id: str, where: ImageFilter) -> list[str]:
    return [image.record.name for _, image in store.images(collection_id, where)]


def test_filters(store: CollectionStore) -> None:
    cid = _fill(store)
    assert _names(store, cid, ImageFilter(tag="blurry")) == ["a.jpg"]  # not "blurryish"
    assert _names(store, cid, ImageFilter(tag="low_light")) == ["a.jpg"]  # LIKE's "_" is escaped: not "low-light"
    assert _names(store, cid, ImageFilter(camera_model="EOS 80D", min_score=50)) == ["b.jpg"]
    assert _names(store, cid, ImageFilter(taken_after="2023-03-01")) == ["b.jpg"]
    assert _names(store, cid, ImageFilter(level="low")) == ["a.jpg"]
    assert _names(store, cid, ImageFilter(format="png")) == ["c_d.png"]
    assert _names(store, cid, ImageFilter(failed=True)) == ["bad.jpg"]
    page = store.images(cid, ImageFilter(), after=0, limit=2)
    assert [i.record.name for _, i in page] == ["a.jpg", "b.jpg"]
    rest = store.images(cid, ImageFilter(), after=page[-1][0], limit=10)
    assert [i.record.name for _, i in rest] == ["c_d.png", "bad.jpg"]


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ({"tag": "blury"}, "is not a quality tag"),
        ({"level": "GOOD"}, "choose one of LOW, MEDIUM, HIGH, ULTRA"),
        ({"taken_after": "05/01/2023"}, "expected an ISO date"),
        ({"taken_before": "yesterday"}, "expected an ISO date"),
    ],
)
def test_a_filter_that_cannot_match_is_refused_not_an_empty_page(
    store: CollectionStore, where: dict[str, str], named: str
) -> None:
    """A misspelt tag or level, or a date in another form (compared as text with the stored ISO dates), used to
    give an empty or wrong page that reads as "no such images"."""
    with pytest.raises(BadRequestError, match=named):
        ImageFilter(**where)


def test_dates_filter_by_prefix_and_with_a_space_or_offset(store: CollectionStore) -> None:
    cid = _fill(store)
    assert _names(store, cid, ImageFilter(taken_after="2023-06")) == ["b.jpg"]
    assert _names(store, cid, ImageFilter(taken_after="2023-06-05 09:00")) == ["b.jpg"]
    assert _names(store, cid, ImageFilter(taken_after="2023-06-05 11:00")) == []  # as ...T11:00, not ' ' < 'T'
    assert _names(store, cid, ImageFilter(taken_before="2023-06-05T09:00:00+02:00")) == ["a.jpg"]
    # an offset is dropped (local time, as stored): 'Z' sorted after the digits, '+' before them, as text
    assert _names(store, cid, ImageFilter(taken_after="2023-06-05T10Z")) == ["b.jpg"]  # was none
    assert _names(store, cid, ImageFilter(taken_before="2023-06-05T10:00:00+02:00")) == ["a.jpg"]  # b is not before
    assert _names(store, cid, ImageFilter(taken_before="2023-06-05T10:00:00Z")) == ["a.jpg"]


def test_file_format_filter_takes_aliases_and_refuses_what_is_no_format(store: CollectionStore) -> None:
    """file_format=jpg answered an empty page (records say JPEG), as did any misspelling."""
    cid = _fill(store)
    store.add(cid, [_image("camera.jpg", format="MPO")])  # a camera JPEG with multi-picture data
    for value in ("jpeg", "JPEG", "jpg"):
        assert _names(store, cid, ImageFilter(format=value)) == ["a.jpg", "b.jpg", "camera.jpg"], value
    assert _names(store, cid, ImageFilter(format="mpo")) == ["camera.jpg"]
    with pytest.raises(BadRequestError, match="not an image format"):
        ImageFilter(format="bogus")


def test_each_image_recorded_once_and_resume_lists_done(store: CollectionStore) -> None:
    cid = _fill(store)
    assert store.done_names(cid) == {"a.jpg", "b.jpg", "c_d.png"}  # the failed one is tried again
    assert store.add(cid, [_image("a.jpg", quality_score=99.0), _image("new.jpg")]) == 1
    (record,) = [i.record for _, i in store.images(cid) if i.record.name == "a.jpg"]
    assert record.quality_score == 20.0  # an analysed image's first result stands
    info = store.get("holiday")
    assert (info.images, info.failed, info.status) == (4, 1, "analyzing")
    store.add(cid, [_image("bad.jpg", quality_score=61.0)])  # analysed on a later run: replaces the failure
    info = store.get("holiday")
    assert (info.images, info.failed) == (5, 0) and "bad.jpg" in store.done_names(cid)
    assert len(store.images(cid, limit=100)) == 5
    store.finish(cid)
    assert store.get(cid).status == "ready"


def test_reopen_with_other_stages_is_refused(store: CollectionStore) -> None:
    _fill(store)
    with pytest.raises(BadRequestError):
        store.open("holiday", ["classification"], ["/y"])
    assert store.open("holiday", ["metadata", "quality"], ["/y"]).sources == ["/x", "/y"]


def test_tenants_do_not_see_each_other(store: CollectionStore) -> None:
    cid = _fill(store, "acme")
    with pytest.raises(CollectionNotFoundError):
        store.get(cid, "globex")
    with pytest.raises(CollectionNotFoundError):
        store.delete(cid, "globex")
    assert store.list_collections("globex") == [] and len(store.list_collections("acme")) == 1
    assert store.list_collections(None)[0].id == cid  # operators read every tenant
    assert store.delete("holiday", "acme").images == 3
    with pytest.raises(CollectionNotFoundError):
        store.get(cid)
    assert store.images(cid) == []


def test_exports(store: CollectionStore) -> None:
    cid = _fill(store)
    rows = list(csv.DictReader(io.StringIO("".join(csv_lines(store, cid, ImageFilter(tag="blurry"))))))
    assert [(r["name"], r["tags"], r["quality_score"], r["location"]) for r in rows] == [
        ("a.jpg", "blurry;low_light", "20.0", "/x/a.jpg")
    ]
    lines = [json.loads(line) for line in jsonl_lines(store, cid, ImageFilter(max_score=60))]
    assert [line["name"] for line in lines] == ["a.jpg", "c_d.png"]
    assert lines[0]["analysis"] == {"quality": {"score": 20.0}}


def test_roles() -> None:
    assert http_role("GET", "/v1/collections") == "viewer"
    assert http_role("GET", "/v1/collections/x/report") == "viewer"
    assert http_role("DELETE", "/v1/collections/x") == "analyst"
    assert http_role("POST", "/v1/jobs/x/collection") == "analyst"


def test_sources_folders_archives_and_names(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "1.jpg").write_bytes(b"one")
    (tmp_path / "a" / "sub" / "2.PNG").write_bytes(b"two")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(tmp_path / "a" / "more.zip", "w") as archive:
        archive.writestr("z/3.jpg", b"three")
        archive.writestr("readme.md", b"no")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("t/4.webp")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"four"))
    items = list_sources([str(tmp_path / "a")])
    assert [i.name for i in items] == ["1.jpg", "more.zip/z/3.jpg", "sub/2.PNG"]
    both = list_sources([str(tmp_path / "a"), str(tmp_path / "b.tar.gz")])
    assert [i.name for i in both][-1] == "b.tar.gz/t/4.webp" and both[0].name == "a/1.jpg"
    datas = read_items([i.to_row() for i in both], max_bytes=5)
    assert datas == [b"one", b"three", b"two", b"four"]
    too_big = read_items([both[1].to_row()], max_bytes=4)[0]
    assert isinstance(too_big, ValueError)
    missing = read_items([{"location": str(tmp_path / "gone.jpg"), "member": ""}], max_bytes=10)[0]
    assert isinstance(missing, FileNotFoundError)
    # A FIFO named like an image is not listed, and reading one (named directly) is an error at once: opening it
    # used to wait for a writer forever.
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    assert [i.name for i in list_sources([str(tmp_path / "a")])] == ["1.jpg", "more.zip/z/3.jpg", "sub/2.PNG"]
    fifo, folder = read_items(
        [{"location": str(tmp_path / "a" / "pipe.jpg"), "member": ""}, {"location": str(tmp_path / "a"), "member": ""}],
        max_bytes=10,
    )
    assert isinstance(fifo, NotARegularFileError) and "not a regular file" in str(fifo)
    assert isinstance(folder, NotARegularFileError) and "is a folder" in str(folder)
    with pytest.raises(SourceError):
        list_sources([str(tmp_path / "nowhere")])
    (tmp_path / "other" / "a").mkdir(parents=True)
    (tmp_path / "other" / "a" / "1.jpg").write_bytes(b"same name")
    with pytest.raises(SourceError, match="both named"):
        list_sources([str(tmp_path / "a"), str(tmp_path / "other" / "a")])


def test_a_name_the_collection_has_from_another_folder_is_refused_not_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two folders with an IMG_0001.jpg each, analysed into one collection one after the other: the second one's
    photo was taken as analysed already (names are unique in a collection) and never read, without a word."""
    from serving.cli import main

    for year in ("2023", "2024"):
        (tmp_path / year).mkdir()
        (tmp_path / year / "IMG_0001.jpg").write_bytes(year.encode())
    database = f"sqlite:///{tmp_path}/jobs.sqlite"
    store = CollectionStore(open_job_database(database))
    (first,) = list_sources([str(tmp_path / "2023")])
    assert first.location == str(tmp_path / "2023" / "IMG_0001.jpg")
    info = store.open("holiday", ["metadata"], [str(tmp_path / "2023")])
    store.add(info.id, [RecordedImage(ImageRecord(first.name), {}, first.location)])

    (second,) = list_sources([str(tmp_path / "2024")])
    assert store.names_recorded_elsewhere("holiday", "default", {first.name: first.place}) == {}  # a resumed run
    assert store.names_recorded_elsewhere("holiday", "default", {second.name: second.place}) == {
        "IMG_0001.jpg": first.location
    }
    assert store.names_recorded_elsewhere("other", "default", {second.name: second.place}) == {}
    assert store.names_recorded_elsewhere("holiday", "acme", {second.name: second.place}) == {}
    (prefixed,) = list_sources([str(tmp_path / "2024")], prefix="2024/")
    assert prefixed.name == "2024/IMG_0001.jpg"
    assert store.names_recorded_elsewhere("holiday", "default", {prefixed.name: prefixed.place}) == {}
    saved = store.open("from-a-job", ["metadata"], ["job:0123"])
    store.add(saved.id, [RecordedImage(ImageRecord(second.name), {})])  # saved from a batch job: no place
    assert store.names_recorded_elsewhere("from-a-job", "default", {second.name: second.place}) == {
        second.name: "a batch job saved into the collection"
    }

    # The same folder named from another working directory is the same source (places are absolute).
    monkeypatch.chdir(tmp_path / "2024")
    (relative,) = list_sources(["../2023"])
    assert relative.place == first.place
    argv = ["collection", "analyze", "../2024", "--database-url", database, "--name", "holiday", "--stages", "metadata"]
    assert main(argv) == 2  # refused before anything is analysed or recorded
    err = capsys.readouterr().err
    assert "already has 1 image(s)" in err and str(tmp_path / "2024" / "IMG_0001.jpg") in err and "--prefix" in err
    after = store.get("holiday")
    assert (after.images, after.sources, after.status) == (1, [str(tmp_path / "2023")], "analyzing")


def test_a_name_two_tenants_use_asked_across_tenants_says_so(store: CollectionStore) -> None:
    """An operator (no tenant scope) asking for 'holiday' that two tenants have got a 404 "not found"."""
    first = store.open("holiday", ["quality"], ["/a"], "acme")
    store.open("holiday", ["quality"], ["/b"], "globex")
    with pytest.raises(BadRequestError, match=r"used by tenants \['acme', 'globex'\]: ask for it by its id"):
        store.get("holiday")
    assert store.get(first.id).tenant == "acme" and store.get("holiday", "acme").id == first.id


@pytest.mark.parametrize("name", ["trip ", " trip", "trip\u00a0", "tr/ip", "trip\x85", "", "x" * 201])
def test_collection_names_people_cannot_tell_apart_or_type_are_refused(store: CollectionStore, name: str) -> None:
    # "trip " was accepted beside "trip": two collections listed alike, and typing the name found the other one
    with pytest.raises(BadRequestError, match="1 to 200 characters"):
        store.open(name, ["quality"], ["/x"])


@pytest.mark.parametrize("name", ["t", "trip 2023", "Île de Ré", "x" * 200, "旅行 写真"])
def test_collection_names_with_inner_spaces_and_letters_are_kept(store: CollectionStore, name: str) -> None:
    assert store.open(name, ["quality"], ["/x"]).name == name
