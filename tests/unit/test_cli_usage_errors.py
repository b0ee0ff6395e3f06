"""CLI mistakes a README walkthrough met: each is one line `imgserve: error: ...` (collections: `error: ...`) with
exit 2, found before any file is read or written, never a traceback or a file of the wrong kind; and commands that
write a file say what they wrote.

- `imgserve convert` / `enhance` with a bad option value printed pipelines' InvalidOptionError traceback (exit 1).
- `imgserve convert nonexistent` counted the path as one failed image (exit 1, no reason) and overwrote the
  report.jsonl of an earlier run.
- `imgserve analyze ... --out q.xlsx` wrote JSON lines into q.xlsx (and `collection export` CSV into anything but
  .jsonl).
- `imgserve collection export` printed nothing, even for 0 rows.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipelines.collections.record import ImageRecord
from serving.cli import main as cli_main
from serving.cli_collections import add_collection_commands
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import open_job_database
from tests.unit.test_cli_sdk_errors import Canned, canned  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "a.jpg", "JPEG")
    Image.new("RGB", (64, 48), (30, 200, 30)).save(folder / "b.png", "PNG")
    return folder


def _one_line_usage_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert err.startswith("imgserve: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


# --- 1. a bad option: one line naming it, exit 2, nothing read or written ------------------------------------------


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        ("convert", ["--to", "jpeg2000"], "format='jpeg2000' is not supported"),
        ("convert", ["--quality", "500"], "quality=500 is out of range"),
        ("convert", ["--max-side", "0"], "max_side=0 is out of range"),
        ("convert", ["--option", "quality=abc"], "quality='abc'"),
        ("convert", ["--option", "nosuch=1"], "unknown conversion options ['nosuch']"),
        ("convert", ["--option", "quality"], "--option 'quality': expected KEY=VALUE"),
        ("convert", ["--workers", "0"], "--workers 0"),
        ("enhance", ["--brightness", "5"], "brightness=5.0 is out of range"),
        ("enhance", ["--ops", "sharpen_more"], "unknown operations ['sharpen_more']"),
        ("enhance", ["--to", "webp", "--quality", "0"], "quality=0 is out of range"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2_before_anything_is_written(
    photos: Path, tmp_path: Path, command: str, options: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = cli_main([command, str(photos), *options, "--out", str(out), "--quiet"])
    _one_line_usage_error(code, capsys.readouterr().err, expected)
    assert not out.exists()


def test_a_bad_option_in_the_console_command_is_no_traceback(photos: Path, tmp_path: Path) -> None:
    """As a user runs it: the process's stderr is the one line, its exit status 2."""
    argv = ["convert", str(photos), "--to", "jpeg2000", "--out", str(tmp_path / "web"), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    _one_line_usage_error(done.returncode, done.stderr, "format='jpeg2000'")


@pytest.mark.parametrize("value", ["abc", "-3"])
def test_a_bad_malloc_arena_setting_is_one_line_and_exit_2(
    photos: Path, tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """IMGSERVE_MALLOC_ARENAS is read by the bulk commands too (serving.memory.tune_malloc): a value the server's
    start refuses was a ValueError traceback here."""
    monkeypatch.setenv("IMGSERVE_MALLOC_ARENAS", value)
    out = tmp_path / "out"
    code = cli_main(["convert", str(photos), "--to", "webp", "--out", str(out), "--quiet"])
    _one_line_usage_error(code, capsys.readouterr().err, "IMGSERVE_MALLOC_ARENAS")
    assert not out.exists()


# --- 2. a missing path: `no such file or folder`, exit 2, an earlier report kept -----------------------------------


@pytest.mark.parametrize("command", ["convert", "enhance"])
def test_a_missing_path_is_refused_and_the_earlier_report_kept(
    photos: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "web"
    assert cli_main([command, str(photos), "--to", "webp", "--out", str(out), "--quiet"]) == 0
    report = (out / "report.jsonl").read_text()
    assert len(report.splitlines()) == 2
    capsys.readouterr()
    for paths in (["nonexistent"], [str(photos), "nonexistent"]):
        code = cli_main([command, *paths, "--to", "webp", "--out", str(out), "--quiet"])
        _one_line_usage_error(code, capsys.readouterr().err, "no such file or folder: nonexistent")
        assert (out / "report.jsonl").read_text() == report


def test_a_folder_without_images_and_an_out_that_is_a_file_are_refused(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code = cli_main(["convert", str(tmp_path / "empty"), "--to", "webp", "--out", str(tmp_path / "web"), "--quiet"])
    _one_line_usage_error(code, capsys.readouterr().err, "no image files in")
    assert not (tmp_path / "web").exists()
    (tmp_path / "taken").write_text("x")
    code = cli_main(["convert", str(photos), "--to", "webp", "--out", str(tmp_path / "taken"), "--quiet"])
    _one_line_usage_error(code, capsys.readouterr().err, "is not a folder")
    assert (tmp_path / "taken").read_text() == "x"


def test_failed_images_are_counted_with_a_reason_on_screen(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "web"
    assert cli_main(["convert", str(photos), "--to", "webp", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "2 written" in captured.out and "1 failed" in captured.out
    assert "1 of 3 images failed" in captured.err and "bad.jpg" in captured.err and captured.err.count("\n") == 1
    failed = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines() if "error" in line]
    assert [Path(record["image"]).name for record in failed] == ["bad.jpg"]


# --- 3. an --out file type the command cannot write is refused ------------------------------------------------------


@pytest.mark.parametrize("name", ["q.xlsx", "q.json", "q"])
def test_analyze_refuses_an_out_type_it_cannot_write(
    canned: Canned,  # noqa: F811 - the fixture
    photos: Path,
    tmp_path: Path,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_main(["analyze", str(photos), "--url", canned.url, "--out", str(tmp_path / name)])
    _one_line_usage_error(code, capsys.readouterr().err, ".csv", ".jsonl")
    assert canned.requests == [] and not (tmp_path / name).exists()


# --- 3 and 4. collection export: the file types it writes; it says how many rows went where -------------------------


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/jobs.sqlite"
    store = CollectionStore(open_job_database(url))
    info = store.open("trip", ["classification"], ["/x"])
    images = [RecordedImage(ImageRecord(name, make=make), {}, f"/x/{name}") for name, make in
              (("a.jpg", "Canon"), ("b.jpg", "Nikon"), ("c\nd.jpg", "Canon"))]  # fmt: skip
    store.add(info.id, images)
    return url


def _export(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="imgserve")
    add_collection_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["collection", "export", "trip", *argv])
    return int(args.func(args))


def test_export_says_how_many_rows_it_wrote_where(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "canon.csv"
    assert _export("--out", str(out), "--camera-make", "Canon", "--database-url", database) == 0
    assert [row["name"] for row in csv.DictReader(out.open(encoding="utf-8"))] == ["a.jpg", "c\nd.jpg"]
    assert capsys.readouterr().out == f"exported 2 images to {out}\n"
    out = tmp_path / "none.JSONL"  # the suffix in any case
    assert _export("--out", str(out), "--camera-make", "Leica", "--database-url", database) == 0
    assert out.read_text() == "" and capsys.readouterr().out == f"exported 0 images to {out}\n"
    assert _export("--out", str(out), "--database-url", database) == 0
    assert [json.loads(line)["name"] for line in out.read_text().splitlines()] == ["a.jpg", "b.jpg", "c\nd.jpg"]
    assert capsys.readouterr().out == f"exported 3 images to {out}\n"


@pytest.mark.parametrize(
    ("name", "expected"), [("q.xlsx", ".csv or .jsonl"), ("no/such/q.csv", "its folder does not exist")]
)
def test_export_refuses_an_out_it_cannot_write(
    database: str, tmp_path: Path, name: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export("--out", str(tmp_path / name), "--database-url", database) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("imgserve: error: ") and expected in captured.err and captured.err.count("\n") == 1
    assert captured.out == "" and not (tmp_path / name).exists()
