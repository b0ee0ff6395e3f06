"""`imgserve convert` as a user runs it (in process, real files): outputs under OUTDIR, none replacing another."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.cli import main

pytestmark = pytest.mark.unit


def photo(path: Path, colour: tuple[int, int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, fmt)


def test_convert_keeps_folders_and_names_twins_apart(tmp_path: Path) -> None:
    """A phone's pair (`IMG_1.HEIC`-like: `IMG_1.png` beside `IMG_1.jpg`) and the same file name in two folders given
    as separate arguments: every input gets its own output (none replaced), folders are kept below a folder
    argument, and the report names each output."""
    source, other, out = tmp_path / "src", tmp_path / "other", tmp_path / "out"
    photo(source / "trip/IMG_1.jpg", (200, 30, 30), "JPEG")
    photo(source / "trip/IMG_1.png", (30, 200, 30), "PNG")
    photo(source / "trip/IMG_2.jpg", (30, 30, 200), "JPEG")
    photo(other / "IMG_2.jpg", (220, 220, 30), "JPEG")  # a file argument: named after itself, like trip/IMG_2's stem
    photo(other / "x/IMG_2.jpg", (30, 220, 220), "JPEG")
    args = ["convert", str(source), str(other / "IMG_2.jpg"), str(other / "x/IMG_2.jpg"), "--to", "png"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["4_IMG_2.png", "IMG_2.png", "trip/IMG_1_jpg.png", "trip/IMG_1_png.png", "trip/IMG_2.png"]
    report = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    by_input = {Path(r["image"]).relative_to(tmp_path).as_posix(): Path(r["output"]).relative_to(out) for r in report}
    colours = {
        "src/trip/IMG_1.jpg": (200, 30, 30),
        "src/trip/IMG_1.png": (30, 200, 30),
        "src/trip/IMG_2.jpg": (30, 30, 200),
        "other/IMG_2.jpg": (220, 220, 30),
        "other/x/IMG_2.jpg": (30, 220, 220),
    }
    for name, colour in colours.items():  # each output holds its own input's pixels
        pixels = np.asarray(Image.open(io.BytesIO((out / by_input[name]).read_bytes())).convert("RGB"), dtype=int)
        assert np.abs(pixels.mean(axis=(0, 1)) - colour).max() < 6, name
