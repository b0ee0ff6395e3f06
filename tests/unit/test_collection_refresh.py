"""`imgserve collection analyze --refresh / --prune`: a file edited in place kept its first analysis and a deleted one
stayed in the collection; the only way to refresh was to delete the collection. Now --refresh analyses again the
images whose files changed (each replacing its row) and --prune removes those whose files are gone from the sources
given, refused where that cannot be told. No Ray here: `run_analysis` is a writer that records what it would analyse,
or the real one over a stand-in stream."""

import hashlib
import os
import time
import types
import zipfile
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.collections.record import ImageRecord, failed_record
from serving.collections import analyze, refresh
from serving.collections.refresh import pruned_images, refresh_plan
from serving.collections.run_stats import RunStats
from serving.collections.sources import FileState, SourceError, SourceItem, _object_state, list_sources, read_items
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import open_job_database

pytestmark = pytest.mark.unit
MAX_BYTES = 1 << 20


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.sqlite"


@pytest.fixture
def store(database: str) -> CollectionStore:
    return CollectionStore(open_job_database(database))


def _analysed(item: SourceItem, data: bytes, label: str = "first") -> RecordedImage:
    """What the metadata stage records of a file: its size and sha256 (and a label telling analyses apart)."""
    record = ImageRecord(item.name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), top_label=label)
    return RecordedImage(record, {"label": label}, item.stored_location, item.member)


def _record(store: CollectionStore, collection: str, items: Sequence[SourceItem], read_since: float) -> str:
    info = store.open(collection, ["metadata"], ["/x"])
    datas = read_items([item.to_row() for item in items], MAX_BYTES)
    store.add_each(info.id, [_analysed(i, d) for i, d in zip(items, datas, strict=True)], read_since=read_since)
    return info.id


def _rows(store: CollectionStore, collection_id: str) -> dict[str, tuple[int, str | None, int | None]]:
    """name -> (row id, top label, size) of every row."""
    return {
        image.record.name: (row_id, image.record.top_label, image.record.size_bytes)
        for row_id, image in store.images(collection_id, limit=1000)
    }


# --- the listing says each file's size and change time ---------------------------------------------------------------


def test_the_listing_says_sizes_and_change_times(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"12345")
    with zipfile.ZipFile(photos / "cards.zip", "w") as archive:
        archive.writestr("b.jpg", b"1234567")
    os.utime(photos / "a.jpg", (1_000_000, 1_000_000))  # mtime set back (cp -p, rsync -a): ctime still says now
    items = {item.name: item for item in list_sources([str(photos)])}
    a, b = items["a.jpg"].state, items["cards.zip/b.jpg"].state
    assert a is not None and a.size == 5 and a.changed_at == pytest.approx(os.stat(photos / "a.jpg").st_ctime)
    assert a.changed_at is not None and a.changed_at > 1_000_000
    assert b is not None and b.size == 7  # the member's own size; its archive's time
    assert b.changed_at == pytest.approx(
        max(os.stat(photos / "cards.zip").st_mtime, os.stat(photos / "cards.zip").st_ctime)
    )


def test_an_object_stores_listing_gives_size_and_last_modified() -> None:
    s3 = {"size": 5, "LastModified": datetime(2024, 5, 1, tzinfo=UTC), "ETag": '"abc"'}
    assert _object_state(s3) == FileState(5, datetime(2024, 5, 1, tzinfo=UTC).timestamp())
    gcs = {"size": 6, "mtime": datetime(2024, 5, 2, tzinfo=UTC), "updated": "2024-05-02T00:00:00Z"}
    assert _object_state(gcs) == FileState(6, datetime(2024, 5, 2, tzinfo=UTC).timestamp())
    assert _object_state({"name": "x"}) == FileState(None, None)  # not said: the file is read again to tell


# --- the store: a changed image replaces its own row; prune removes rows -------------------------------------------


def test_a_replaced_image_keeps_its_row_and_an_unlisted_one_is_kept(store: CollectionStore) -> None:
    info = store.open("c", ["metadata"], ["/x"])
    first = [RecordedImage(ImageRecord(n, top_label="first"), {}, f"/x/{n}") for n in ("a.jpg", "b.jpg")]
    store.add(info.id, first)
    before = _rows(store, info.id)
    again = [RecordedImage(ImageRecord(n, top_label="again"), {}, f"/x/{n}") for n in ("a.jpg", "b.jpg")]
    assert store.add_each(info.id, again)[0] == 0  # without `replace`, an analysed image's row is kept
    assert store.add_each(info.id, again, replace={"a.jpg"})[0] == 1
    after = _rows(store, info.id)
    assert after["a.jpg"] == (before["a.jpg"][0], "again", None)  # the same row, its new analysis
    assert after["b.jpg"] == before["b.jpg"] and store.get(info.id).images == 2
    assert store.remove(info.id, ["a.jpg", "gone.jpg"]) == 1
    assert list(_rows(store, info.id)) == ["b.jpg"]


def test_confirm_only_moves_an_analysed_rows_time_forward(store: CollectionStore) -> None:
    info = store.open("c", ["metadata"], ["/x"])
    images = [RecordedImage(ImageRecord("a.jpg"), {}, "/x/a.jpg"), RecordedImage(failed_record("b.jpg", "bad"))]
    store.add_each(info.id, images, read_since=100.0)
    store.confirm(info.id, ["a.jpg", "b.jpg"], 200.0)
    store.confirm(info.id, ["a.jpg"], 150.0)
    assert {f.name: f.read_since for f in store.recorded_files(info.id)} == {"a.jpg": 200.0, "b.jpg": 100.0}


# --- which files changed ---------------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("same.jpg", "edited.jpg", "grown.jpg", "deleted.jpg"):
        (folder / name).write_bytes(b"first " + name.encode())
    return folder


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names `refresh_plan` reads again."""
    read: list[str] = []
    real = refresh.current_digests

    def digests(items: Sequence[SourceItem], max_bytes: int) -> Any:
        read.extend(item.name for item in items)
        return real(items, max_bytes)

    monkeypatch.setattr(refresh, "current_digests", digests)
    return read


def test_refresh_finds_the_edited_files_and_reads_only_those_touched(
    store: CollectionStore, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = list_sources([str(photos)])
    collection_id = _record(store, "c", items, read_since=time.time() - 100)  # analysed before the files were made
    (photos / "edited.jpg").write_bytes(b"other edited.jpg")  # same size, other bytes
    (photos / "grown.jpg").write_bytes(b"first grown.jpg, then more")
    (photos / "deleted.jpg").unlink()
    read = _reads(monkeypatch)
    plan = refresh_plan(store, collection_id, list_sources([str(photos)]), MAX_BYTES)
    assert plan.changed == {"edited.jpg", "grown.jpg"}  # the grown one by its size, the edited one by its sha256
    assert plan.unchanged == ("same.jpg",)  # touched since (made after the analysis), the same bytes
    assert sorted(read) == ["edited.jpg", "same.jpg"]  # the grown one needs no read; the deleted one is --prune's
    store.confirm(collection_id, plan.unchanged, plan.read_since)

    # Analysed after the last change: nothing is read, nothing changed.
    read.clear()
    collection_id = _record(store, "later", list_sources([str(photos)]), read_since=time.time() + 60)
    plan = refresh_plan(store, collection_id, list_sources([str(photos)]), MAX_BYTES)
    assert (plan.changed, plan.unchanged, read) == (frozenset(), (), [])


def test_a_touched_file_without_a_recorded_sha256_is_analysed_again(store: CollectionStore, photos: Path) -> None:
    items = list_sources([str(photos)])
    info = store.open("c", ["classification"], ["/x"])
    no_digest = [RecordedImage(ImageRecord(i.name, top_label="cat"), {}, i.stored_location) for i in items]
    store.add_each(info.id, no_digest, read_since=time.time() - 100)  # no metadata stage: no size, no sha256
    plan = refresh_plan(store, info.id, items, MAX_BYTES)
    assert plan.changed == {item.name for item in items} and plan.unchanged == ()
    store.add_each(info.id, no_digest, read_since=time.time() + 60)
    assert refresh_plan(store, info.id, items, MAX_BYTES).changed == {item.name for item in items}  # the rows kept
    later = store.open("later", ["classification"], ["/x"])
    store.add_each(later.id, no_digest, read_since=time.time() + 60)
    assert refresh_plan(store, later.id, items, MAX_BYTES).changed == frozenset()


def test_an_archive_member_changes_with_its_archive_and_is_told_by_its_bytes(
    store: CollectionStore, tmp_path: Path
) -> None:
    archive = tmp_path / "cards.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.jpg", b"aaaa")
        handle.writestr("b.jpg", b"bbbb")
    collection_id = _record(store, "c", list_sources([str(archive)]), read_since=time.time() - 100)
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.jpg", b"aaaa")
        handle.writestr("b.jpg", b"BBBB")
    plan = refresh_plan(store, collection_id, list_sources([str(archive)]), MAX_BYTES)
    assert (plan.changed, plan.unchanged) == ({"cards.zip/b.jpg"}, ("cards.zip/a.jpg",))


# --- which images are gone -------------------------------------------------------------------------------------------


def test_prune_removes_only_files_gone_from_the_sources_given(store: CollectionStore, tmp_path: Path) -> None:
    """A collection made from ~/photos, then ~/more (names `a.jpg`, `b.jpg`: names do not say the source); pruning
    ~/more keeps every image of ~/photos, and an image saved from a batch job."""
    for folder, names in (("photos", ("a.jpg", "gone-too.jpg")), ("more", ("b.jpg", "c.jpg"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(name.encode())
    recorded = list_sources([str(tmp_path / "photos")]) + list_sources([str(tmp_path / "more")])
    collection_id = _record(store, "c", recorded, read_since=time.time())
    store.add(collection_id, [RecordedImage(ImageRecord("job.jpg"), {}, "job:1234")])
    (tmp_path / "photos" / "gone-too.jpg").unlink()
    (tmp_path / "more" / "c.jpg").unlink()
    more = [str(tmp_path / "more")]
    assert pruned_images(store, "c", "default", more, list_sources(more)) == ["c.jpg"]
    assert pruned_images(store, "new", "default", more, list_sources(more)) == []  # no such collection yet


def test_prune_over_an_object_store_prefix(store: CollectionStore) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for name in ("a.jpg", "b.jpg"):
        memory.pipe(f"/refresh-bucket/photos/{name}", name.encode())
    memory.pipe("/refresh-bucket/other/b.jpg", b"x")
    try:
        recorded = list_sources(["memory://refresh-bucket/photos"]) + list_sources(["memory://refresh-bucket/other"])
        _record(store, "c", [*recorded[:2], SourceItem("o.jpg", recorded[2].location)], read_since=time.time())
        memory.rm("/refresh-bucket/photos/b.jpg")
        sources = ["memory://refresh-bucket/photos/"]
        assert pruned_images(store, "c", "default", sources, list_sources(sources)) == ["b.jpg"]
    finally:
        memory.rm("/refresh-bucket", recursive=True)


def test_prune_is_refused_where_it_cannot_be_told(store: CollectionStore, tmp_path: Path) -> None:
    photos, empty = tmp_path / "photos", tmp_path / "empty"
    photos.mkdir()
    empty.mkdir()
    (photos / "a.jpg").write_bytes(b"a")
    info = store.open("old", ["metadata"], ["photos"])
    store.add(info.id, [RecordedImage(ImageRecord("a.jpg"), {}, "photos/a.jpg")])  # a relative path, as runs once did
    with pytest.raises(SourceError, match="recorded by a relative path.*'a.jpg' read from photos/a.jpg"):
        pruned_images(store, "old", "default", [str(photos)], list_sources([str(photos)]))
    # A source that lists nothing (unmounted share?) while the collection has images from it.
    (empty / "b.jpg").write_bytes(b"b")
    _record(store, "c", list_sources([str(empty)]), read_since=time.time())
    (empty / "b.jpg").unlink()
    with pytest.raises(SourceError, match=r"empty lists no image, and collection 'c' has 1 from it: refusing"):
        pruned_images(store, "c", "default", [str(empty)], [])


# --- the command ---------------------------------------------------------------------------------------------------


def _writer(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`run_analysis` as a writer without Ray: it records each image to analyse (not yet analysed, or `changed`) as
    the metadata stage would, replacing the changed ones' rows, and says which it analysed."""
    analysed: list[list[str]] = []

    def run_analysis(
        items: Sequence[SourceItem],
        setup: Any,
        store: CollectionStore,
        collection_id: str,
        address: Any,
        actors: Any,
        on_progress: Any,
        changed: Collection[str] = frozenset(),
    ) -> RunStats:
        read_since = time.time()
        done = store.done_names(collection_id)
        todo = [item for item in items if item.name not in done or item.name in changed]
        datas = read_items([item.to_row() for item in todo], MAX_BYTES)
        images = [_analysed(item, data, f"run {len(analysed)}") for item, data in zip(todo, datas, strict=True)]
        store.add_each(collection_id, images, changed, read_since)
        store.finish(collection_id)
        analysed.append([item.name for item in todo])
        return RunStats(listed=len(items), skipped=len(items) - len(todo), done=len(todo))

    monkeypatch.setattr(analyze, "run_analysis", run_analysis)
    setup = types.SimpleNamespace(selected=("metadata",), max_bytes=MAX_BYTES)
    monkeypatch.setattr(analyze, "analysis_setup", lambda *a, **k: setup)
    return analysed


def test_analyze_refresh_and_prune(
    photos: Path,
    database: str,
    store: CollectionStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serving.cli import main

    analysed = _writer(monkeypatch)
    command = ["collection", "analyze", str(photos), "--name", "c", "--stages", "metadata", "--database-url", database]
    assert main(command) == 0
    first = _rows(store, store.get("c").id)
    with store.engine.begin() as conn:  # analysed a while ago: the files have not changed since
        conn.exec_driver_sql("UPDATE collection_images SET created_at = created_at + 60")
    (photos / "edited.jpg").write_bytes(b"other edited.jpg")
    (photos / "grown.jpg").write_bytes(b"first grown.jpg, then more")
    (photos / "deleted.jpg").unlink()
    with store.engine.begin() as conn:  # ... but edited after: their rows were recorded before the edits
        conn.exec_driver_sql(
            "UPDATE collection_images SET created_at = created_at - 120 WHERE name IN ('edited.jpg', 'grown.jpg')"
        )
    capsys.readouterr()

    # Without the flags nothing changes: the edited files keep their first analysis, the deleted one stays.
    assert main(command) == 0 and analysed[-1] == [] and _rows(store, store.get("c").id) == first

    assert main([*command, "--refresh", "--prune"]) == 0
    assert sorted(analysed[-1]) == ["edited.jpg", "grown.jpg"]
    out = capsys.readouterr().out
    assert "refresh: 2 changed since their analysis, analysed again" in out and "0 read again to check" in out
    assert "prune: 1 no longer in the sources, removed" in out
    after = _rows(store, store.get("c").id)
    assert sorted(after) == ["edited.jpg", "grown.jpg", "same.jpg"] and store.get("c").images == 3
    assert after["same.jpg"] == first["same.jpg"]  # untouched
    assert after["grown.jpg"] == (first["grown.jpg"][0], "run 2", len(b"first grown.jpg, then more"))  # same row
    assert after["edited.jpg"][:2] == (first["edited.jpg"][0], "run 2")

    # Run again: nothing left to do.
    assert main([*command, "--refresh", "--prune"]) == 0 and analysed[-1] == []
    out = capsys.readouterr().out
    assert "refresh: 0 changed" in out and "prune: 0 no longer in the sources" in out
    assert _rows(store, store.get("c").id) == after


def test_files_made_just_before_their_analysis_are_read_once_by_the_next_refresh(
    photos: Path,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The walkthrough's "10 touched but with the same bytes" after copying the files and analysing them at once:
    their change time is within CHANGE_SLACK_S of the analysis's start (a coarse or skewed clock could put a change
    after the read there), so one refresh reads them again to check, says so, and the next reads nothing."""
    from serving.cli import main

    analysed = _writer(monkeypatch)
    command = ["collection", "analyze", str(photos), "--name", "c", "--stages", "metadata", "--database-url", database]
    assert main(command) == 0  # within a second of the files' making
    later = time.time() + 60  # the refreshes run a minute later
    monkeypatch.setattr(refresh, "time", types.SimpleNamespace(time=lambda: later))
    read = _reads(monkeypatch)
    capsys.readouterr()
    assert main([*command, "--refresh"]) == 0 and analysed[-1] == []
    assert sorted(read) == ["deleted.jpg", "edited.jpg", "grown.jpg", "same.jpg"]
    out = capsys.readouterr().out
    assert (
        "refresh: 0 changed" in out and "4 read again to check (changed within 2 s of their analysis or later)" in out
    )
    read.clear()
    assert main([*command, "--refresh"]) == 0 and analysed[-1] == [] and read == []
    assert "0 read again to check" in capsys.readouterr().out


def test_analyze_prune_refused_leaves_the_collection_as_it_was(
    tmp_path: Path,
    database: str,
    store: CollectionStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serving.cli import main

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"a")
    info = store.open("old", ["metadata"], ["photos"])
    store.add(info.id, [RecordedImage(ImageRecord("gone.jpg"), {}, "photos/gone.jpg")])
    store.finish(info.id)
    analysed = _writer(monkeypatch)
    command = ["collection", "analyze", str(tmp_path / "photos"), "--name", "old", "--stages", "metadata"]
    assert main([*command, "--prune", "--database-url", database]) == 2
    refusal = "imgserve: error: --prune: collection 'old' has 1 image(s) recorded by a relative path"
    assert refusal in capsys.readouterr().err
    after = store.get("old")
    assert analysed == [] and (after.images, after.status, after.sources) == (1, "ready", ["photos"])


# --- the real run_analysis, over a stand-in stream ------------------------------------------------------------------


def test_run_analysis_streams_the_changed_images_and_replaces_their_rows(
    store: CollectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [SourceItem(name, f"/x/{name}") for name in ("a.jpg", "b.jpg", "c.jpg")]
    info = store.open("c", ["metadata"], ["/x"])
    store.add(info.id, [RecordedImage(ImageRecord(item.name, iso=100), {}, item.location) for item in items[:2]])
    before = _rows(store, info.id)
    streamed: list[list[str]] = []

    def stream(todo: Sequence[SourceItem], setup: Any, actors: Any) -> Any:
        streamed.append([item.name for item in todo])
        names = np.array([item.name for item in todo])
        empty = np.array([""] * len(todo))
        document = np.array(['{"metadata": {"exif": {"iso": 800}}}'] * len(todo))
        yield {"name": names, "error": empty, "document": document, "class_probs": empty, "output": empty}

    monkeypatch.setattr(analyze, "_stream", stream)
    monkeypatch.setattr(analyze, "init_ray", lambda address: None)
    started = time.time()
    stats = analyze.run_analysis(items, None, store, info.id, "ray://test", changed={"b.jpg"})  # type: ignore[arg-type]
    assert streamed == [["b.jpg", "c.jpg"]] and (stats.skipped, stats.done) == (1, 2)
    isos = {image.record.name: (row_id, image.record.iso) for row_id, image in store.images(info.id)}
    assert isos == {
        "a.jpg": (before["a.jpg"][0], 100),
        "b.jpg": (before["b.jpg"][0], 800),
        "c.jpg": (isos["c.jpg"][0], 800),
    }
    read_since = {f.name: f.read_since for f in store.recorded_files(info.id)}
    assert started <= read_since["b.jpg"] <= time.time()  # the run's start: at or before its files were read
