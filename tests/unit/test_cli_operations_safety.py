"""`imgserve convert` / `enhance` never lose a file (CLI review): an output inside an input folder replaced another
input of the same relative name (only an output's own input was checked); `--suffix '/../x'` wrote outside --out;
outputs were written in place, so Ctrl-C or a full disk left truncated and empty files; the first Ctrl-C raised
KeyboardInterrupt wherever it landed (a traceback, and outputs on disk the report left out); a sub-folder that could
not be listed was left out in silence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from serving.cli import main
from serving.image_files import folder_images
from serving.regular_files import write_file_atomically
from tests.paths import IMAGENET_SAMPLES, PROJECT_ROOT, require

pytestmark = pytest.mark.unit


def _photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")
    return path.read_bytes()


def test_an_output_inside_an_input_folder_never_replaces_another_input(tmp_path: Path) -> None:
    _photo(tmp_path / "photos" / "a.jpg", (200, 10, 10))
    original = _photo(tmp_path / "photos" / "web" / "a.jpg", (10, 200, 10))
    code = main(["convert", str(tmp_path / "photos"), "--out", str(tmp_path / "photos" / "web"), "--quiet"])
    assert (tmp_path / "photos" / "web" / "a.jpg").read_bytes() == original  # replaced by the red one before
    report = [json.loads(line) for line in (tmp_path / "photos" / "web" / "report.jsonl").read_text().splitlines()]
    refused = [row for row in report if "error" in row]
    assert code == 0 and len(refused) == 1 and "would overwrite an input" in refused[0]["error"]


def test_a_suffix_with_a_path_separator_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "in" / "a.jpg", (1, 2, 3))
    code = main(
        ["convert", str(tmp_path / "in"), "--to", "webp", "--suffix", "/../../escaped", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "--suffix" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "o").exists()


def test_a_failed_write_leaves_neither_a_part_nor_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.png"

    def half_then_full(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        write_file_atomically(target, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []  # a truncated out.png before


def test_a_folder_that_cannot_be_listed_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _photo(tmp_path / "in" / "a.jpg", (1, 2, 3))
    _photo(tmp_path / "in" / "locked" / "b.jpg", (1, 2, 3))
    scandir = os.scandir

    def refuse_locked(path: object) -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", refuse_locked)  # as chmod 000 does for a user other than root
    unreadable: list[Path] = []
    assert folder_images(tmp_path / "in", unreadable) == [tmp_path / "in" / "a.jpg"]
    assert unreadable == [tmp_path / "in" / "locked"]


def test_ctrl_c_stops_after_the_images_in_progress_and_the_report_matches_the_disk(tmp_path: Path) -> None:
    source = require(IMAGENET_SAMPLES)
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(source.glob("*.JPEG"))[:60]:
        (photos / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "serving.cli", "convert", str(photos), "--to", "png", "--workers", "1"]
    run = subprocess.Popen(
        [*command, "--out", str(out), "--quiet"], cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("*.png")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped by Ctrl-C" in stderr
    reported = {json.loads(line)["output"] for line in (out / "report.jsonl").read_text().splitlines()}
    on_disk = {str(path) for path in out.iterdir() if path.name != "report.jsonl"}
    assert reported == on_disk and 0 < len(on_disk) < 60  # no .part files, nothing unreported
