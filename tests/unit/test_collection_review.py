"""Collections review: an image whose classifier output held NaN made the whole collection unreadable, the same
files were recorded twice under two names, and `imgserve collection analyze` / `list` mishandled runs that could
not start and tenants with many collections."""

import argparse
import json
import types
from pathlib import Path
from typing import Any

import pytest

from pipelines.collections.record import ImageRecord
from serving.cli_collections import _cmd_list
from serving.collections.export import csv_lines, jsonl_lines
from serving.collections.reporting import collection_report
from serving.collections.sources import SourceError, list_sources
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import open_job_database

pytestmark = pytest.mark.unit


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.sqlite"


@pytest.fixture
def store(database: str) -> CollectionStore:
    return CollectionStore(open_job_database(database))


def test_a_non_finite_class_probability_does_not_make_the_collection_unreadable(store: CollectionStore) -> None:
    """NaN is stored as null (finite_json); reading it back as float(None) raised TypeError in every listing,
    export and report of the collection, for one image."""
    info = store.open("holiday", ["classification"], ["/x"])
    probs = ((3, 0.9), (7, float("nan")), (9, float("inf")))
    store.add(
        info.id,
        [
            RecordedImage(ImageRecord("a.jpg", class_probs=probs), {}, "/x/a.jpg"),
            RecordedImage(ImageRecord("b.jpg", class_probs=((1, 0.5),)), {}, "/x/b.jpg"),
        ],
    )
    records = {r.name: r for r in store.records(info.id)}
    assert records["a.jpg"].class_probs == ((3, 0.9),) and records["b.jpg"].class_probs == ((1, 0.5),)
    assert [image.record.name for _, image in store.images(info.id)] == ["a.jpg", "b.jpg"]
    assert len("".join(csv_lines(store, info.id, store_filter())).splitlines()) == 3
    assert [json.loads(line)["name"] for line in jsonl_lines(store, info.id, store_filter())] == ["a.jpg", "b.jpg"]
    assert collection_report(store, info)["images"] == 2


def store_filter() -> Any:
    from serving.collections.filters import ImageFilter

    return ImageFilter()


def test_overlapping_sources_are_refused_not_analysed_twice(tmp_path: Path) -> None:
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "photos" / "2024" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="is listed twice.*'photos/2024/a.jpg' and '2024/a.jpg'"):
        list_sources([str(tmp_path / "photos"), str(tmp_path / "photos" / "2024")])


def _no_analysis(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`analyze` without models or Ray: the setup is a stand-in, and a run that would start is recorded instead."""
    from serving.collections import analyze
    from serving.collections.run_stats import RunStats

    started: list[Any] = []

    def run_analysis(items: Any, *args: Any, **kwargs: Any) -> RunStats:
        started.append(items)
        return RunStats(listed=len(items), skipped=len(items))

    monkeypatch.setattr(analyze, "run_analysis", run_analysis)
    monkeypatch.setattr(analyze, "analysis_setup", lambda *a, **k: types.SimpleNamespace(selected=("metadata",)))
    return started


def test_the_same_files_under_other_names_are_refused_not_recorded_twice(
    tmp_path: Path,
    database: str,
    store: CollectionStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A collection made from ~/photos names its images `a.jpg`; `analyze ~/photos ~/more` names them
    `photos/a.jpg`: no name clashed, so every photo was analysed and recorded a second time (counted twice in
    every summary). Likewise a rerun with another --prefix."""
    from serving.cli import main

    for folder, image in (("photos", "a.jpg"), ("more", "b.jpg")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / image).write_bytes(b"x" + image.encode())
    (first,) = list_sources([str(tmp_path / "photos")])
    info = store.open("holiday", ["metadata"], [str(tmp_path / "photos")])
    store.add(info.id, [RecordedImage(ImageRecord(first.name), {}, first.stored_location)])
    started = _no_analysis(monkeypatch)
    base = ["--database-url", database, "--name", "holiday", "--stages", "metadata"]

    both = ["collection", "analyze", str(tmp_path / "photos"), str(tmp_path / "more"), *base]
    assert main(both) == 2 and started == []
    err = capsys.readouterr().err
    assert "already records 1 of this run's file(s) under other names" in err and "'photos/a.jpg'" in err
    assert main(["collection", "analyze", str(tmp_path / "photos"), "--prefix", "2024", *base]) == 2
    assert started == [] and store.get("holiday").images == 1

    # The way to add a folder (only the new one), and a plain rerun (resume), still run.
    assert main(["collection", "analyze", str(tmp_path / "more"), *base]) == 0
    assert main(["collection", "analyze", str(tmp_path / "photos"), *base]) == 0
    assert [[item.name for item in items] for items in started] == [["b.jpg"], ["a.jpg"]]


def test_a_run_that_cannot_start_leaves_the_collection_as_it_was(
    tmp_path: Path,
    database: str,
    store: CollectionStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The collection was opened (status `analyzing`, the new source recorded) before the --out folder was made:
    a folder that cannot be made stopped the run but left a ready collection `analyzing`, naming a source it has no
    image of."""
    from serving.cli import main

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.jpg").write_bytes(b"y")
    (tmp_path / "a-file").write_bytes(b"")
    info = store.open("holiday", ["metadata"], [str(tmp_path / "photos")])
    store.finish(info.id)
    started = _no_analysis(monkeypatch)
    argv = ["collection", "analyze", str(tmp_path / "more"), "--database-url", database, "--name", "holiday"]
    argv += ["--stages", "metadata", "--convert", "format=webp", "--out", str(tmp_path / "a-file" / "out")]
    assert main(argv) == 2 and started == []
    assert "error:" in capsys.readouterr().err
    after = store.get("holiday")
    assert (after.status, after.sources) == ("ready", [str(tmp_path / "photos")])
    fresh = [item if item != "holiday" else "fresh" for item in argv]
    assert main(fresh) == 2 and started == []
    assert [i.name for i in store.list_collections()] == ["holiday"]  # no empty collection left behind


def test_max_actors_below_one_is_an_error_before_the_run(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.cli import main

    (tmp_path / "a.jpg").write_bytes(b"x")
    started = _no_analysis(monkeypatch)
    argv = ["collection", "analyze", str(tmp_path), "--database-url", database, "--name", "h", "--max-actors", "0"]
    assert main(argv) == 2 and started == []
    assert "--max-actors 0" in capsys.readouterr().err


def test_list_shows_every_collection_not_the_newest_100(
    database: str, store: CollectionStore, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(105):
        store.open(f"c{i:03d}", ["metadata"], ["/x"])
    assert _cmd_list(argparse.Namespace(database_url=database, tenant="default", json=True)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(c["name"] for c in listed) == [f"c{i:03d}" for i in range(105)]


def test_a_collection_made_by_another_run_in_the_same_instant_is_reopened(
    store: CollectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs (or two `POST /v1/jobs/{id}/collection`) opening one new name: the second's insert broke the unique
    (tenant, name) and raised IntegrityError (a traceback, a 500) instead of adding to the first's collection."""
    import serving.collections.store as store_module

    first = store.open("holiday", ["metadata"], ["/a"])
    by_name = store_module._by_name
    calls: list[str] = []

    def not_seen_yet(conn: Any, name: str, tenant: str) -> Any:  # the other run had not committed when looked up
        calls.append(name)
        return None if len(calls) == 1 else by_name(conn, name, tenant)

    monkeypatch.setattr(store_module, "_by_name", not_seen_yet)
    second = store.open("holiday", ["metadata"], ["/b"])
    assert second.id == first.id and second.sources == ["/a", "/b"]


@pytest.mark.parametrize("field", ["camera_make", "camera_model", "label"])
@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_name_filter_is_refused_not_an_empty_page(field: str, value: str) -> None:
    """`?camera_model=` (a form's empty field) compared model = '' and answered an empty page: recorded makes,
    models and labels are never blank, so it could only match nothing, as a misspelt tag (a 400)."""
    from serving.collections.filters import ImageFilter
    from serving.errors import BadRequestError

    with pytest.raises(BadRequestError, match=f"{field}=.* is blank"):
        ImageFilter(**{field: value})


def test_a_refused_run_prints_file_names_without_their_escape_sequences(
    tmp_path: Path, database: str, store: CollectionStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal names files by their paths (an archive's members, a bucket's keys: anyone's text): an ESC or BEL
    in a name reached the terminal as is (a title change, a cleared screen)."""
    from serving.cli import main

    hostile = "x\x1b]0;owned\x07.jpg"
    for year in ("2023", "2024"):
        (tmp_path / year).mkdir()
        (tmp_path / year / hostile).write_bytes(year.encode())
    (first,) = list_sources([str(tmp_path / "2023")])
    info = store.open("h", ["metadata"], [str(tmp_path / "2023")])
    store.add(info.id, [RecordedImage(ImageRecord(first.name), {}, first.stored_location)])
    argv = ["collection", "analyze", str(tmp_path / "2024"), "--name", "h", "--stages", "metadata"]
    assert main([*argv, "--database-url", database]) == 2
    err = capsys.readouterr().err
    assert "already has 1 image(s)" in err and "\x1b" not in err and "\x07" not in err
    assert "x\\x1b]0;owned\\x07.jpg" in err
