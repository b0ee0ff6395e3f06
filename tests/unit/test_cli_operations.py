"""`imgserve convert` as a user runs it (in process, real files): outputs under OUTDIR, none replacing another."""

import io
import json
import threading
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


def test_a_bug_met_on_one_file_fails_that_file_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception while converting one file (a bug, not a bad image: the HEIF writer's KeyError once)
    is that file's failure in the report, as `internal_error`; the other files are still written."""
    import pipelines.convert

    photo(tmp_path / "in/a.jpg", (200, 30, 30), "JPEG")
    photo(tmp_path / "in/b.jpg", (30, 200, 30), "JPEG")
    real = pipelines.convert.convert_image

    def flaky(data: bytes, *args: object) -> object:
        if Image.open(io.BytesIO(data)).getpixel((5, 5))[0] > 100:  # a.jpg
            raise KeyError("HEIF")
        return real(data, *args)

    monkeypatch.setattr(pipelines.convert, "convert_image", flaky)
    assert main(["convert", str(tmp_path / "in"), "--to", "png", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = {
        Path(r["image"]).name: r for r in map(json.loads, (tmp_path / "out/report.jsonl").read_text().splitlines())
    }
    assert report["a.jpg"]["kind"] == "internal_error" and "KeyError" in report["a.jpg"]["error"]
    assert (tmp_path / "out/b.png").exists() and not (tmp_path / "out/a.png").exists()
    assert "1 of 2 images failed" in capsys.readouterr().err


# A fresh interpreter each (this process has loaded everything, and glibc's settings are per process).
_LEAN_CHECK = """
import json, sys
from serving.cli import main
code = main(["convert", sys.argv[1], "--to", "webp", "--max-side", "1300", "--out", sys.argv[2], "--quiet"])
heavy = ("httpx", "pydantic", "yaml", "onnxruntime", "ray", "cv2", "rich", "pipelines.decode", "pipelines.quality",
         "pipelines.metadata")
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def test_convert_loads_no_server_or_sdk_libraries(tmp_path: Path) -> None:
    """`imgserve convert` is a bulk command sized against a plain Pillow script (BENCHMARKS.md, "Conversion"): it
    must not carry the SDK's HTTP stack, the settings models, the quality stage, OpenCV, the metadata extractor, a
    progress bar nobody sees (--quiet) or the model runtimes (~65 MB it used to load through `pipelines.decode`,
    `serving.client`, the JPEG fast path's resize of large outputs and the frame counter's package)."""
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    Image.new("RGB", (1500, 1000), (200, 30, 30)).save(tmp_path / "in/a.jpg")  # to a 1.1 MP output: OpenCV's, once
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (30, 30, 200))).save(heif, quality=90)
    (tmp_path / "in/b.heic").write_bytes(heif.getvalue())  # the HEIF plugin loads on the first such file
    done = subprocess.run(
        [sys.executable, "-c", _LEAN_CHECK, str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.splitlines()[-1]) == {"code": 0, "heavy": []}
    assert Image.open(tmp_path / "out/a.webp").size == (1300, 867)
    assert Image.open(tmp_path / "out/b.webp").getpixel((16, 12))[2] > 150


def test_heif_output_of_jpeg_inputs_in_a_fresh_process(tmp_path: Path) -> None:
    """Pillow's HEIF writer is pillow-heif's plugin, which only HEIF inputs used to register: `imgserve convert
    --to heif` of JPEGs in a fresh process failed with a KeyError traceback once conversion stopped importing the
    metadata extractor."""
    import subprocess
    import sys

    pytest.importorskip("pillow_heif")
    photo(tmp_path / "in/a.jpg", (200, 30, 30), "JPEG")
    code = "import sys; from serving.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "convert", str(tmp_path / "in"), "--to", "heif", "--out", str(tmp_path / "out"),
         "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out/a.heic").read_bytes()[4:8] == b"ftyp"


_MMAP_CHECK = """
import ctypes, sys
from serving.memory import tune_malloc_for_bulk
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
print(tune_malloc_for_bulk())
before = libc.mallinfo2().hblks
block = libc.malloc(100 * 1024)  # below glibc's default threshold (128 KB), above the bulk one (64 KB)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(block))
"""


@pytest.mark.parametrize(("arenas", "expected"), [("2", ["True", "1"]), ("0", ["False", "0"])])
def test_bulk_commands_map_large_blocks_on_their_own(arenas: str, expected: list[str]) -> None:
    """With the bulk tuning a 100 KB block is mapped on its own (returned to the system when freed), not carved
    from the heap; IMGSERVE_MALLOC_ARENAS=0 leaves glibc's defaults, thresholds included."""
    import os
    import subprocess
    import sys

    if not Path("/lib/x86_64-linux-gnu/libc.so.6").exists() and not Path("/lib/aarch64-linux-gnu/libc.so.6").exists():
        pytest.skip("glibc only")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"IMGSERVE_MALLOC_ARENAS": arenas}
    done = subprocess.run(
        [sys.executable, "-c", _MMAP_CHECK], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    assert done.stdout.split() == expected


def test_bulk_commands_keep_a_bounded_number_of_files_in_flight() -> None:
    """`imgserve convert` of a folder of any size submits a few files per worker ahead of the one it reports (all of
    them at once held a future per file), and reports in input order."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.cli_operations import _bounded

    files = [Path(f"{i}.jpg") for i in range(100)]
    never = threading.Event()  # not stopped by Ctrl-C
    started: list[int] = []
    yielded = 0
    with ThreadPoolExecutor(2) as pool:
        for path, future in _bounded(pool, lambda index, path: started.append(index) or {"i": index}, files, 8, never):
            assert future.result() == {"i": int(path.stem)} and int(path.stem) == yielded
            yielded += 1
            assert len(started) - yielded <= 8
    assert yielded == 100 and sorted(started) == list(range(100))
