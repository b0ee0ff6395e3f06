"""`imgserve collection analyze --convert ... --enhance ... --suffix ... --out DEST`: batch jobs' image operations in
a collection run. Bad options stop the command before any work with batch jobs' own messages; conversion in the read
tasks (in process, no Ray); and one real run on Ray Data over a few photos (enhance auto + WebP), checked file by
file, record by record and in the summary line."""

import hashlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.convert.names import output_name
from pipelines.errors import InvalidOptionError
from serving import cli
from serving.collections import analyze
from serving.collections.analyze import RunStats, analysis_setup, prepare_batch, record_of
from serving.collections.operations import NO_DESTINATION, output_plan, prepare_destination
from serving.collections.sources import list_sources
from serving.jobs.operations import operation_spec, parse_pairs
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, require


def _photo(seed: int, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(out, fmt)
    return out.getvalue()


def _jobs_message(convert: str | None, enhance: str | None, suffix: str | None) -> str:
    """What `POST /v1/batch` answers (400) for the same options."""
    with pytest.raises(InvalidOptionError) as raised:
        operation_spec([], parse_pairs(convert), parse_pairs(enhance), suffix)
    return str(raised.value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--convert", "format=jxl"], lambda: _jobs_message("format=jxl", None, None)),
        (["--convert", "webp"], lambda: _jobs_message("webp", None, None)),
        (["--convert", "format=png,quality=80"], lambda: _jobs_message("format=png,quality=80", None, None)),
        (["--enhance", "brightness=9"], lambda: _jobs_message(None, "brightness=9", None)),
        (["--convert", "format=webp", "--suffix", "../x"], lambda: _jobs_message("format=webp", None, "../x")),
        (["--convert", "format=webp"], lambda: NO_DESTINATION),
        (["--out", "OUT"], lambda: "--out and --suffix go with --convert and/or --enhance"),
        (["--enhance", "auto=true", "--stages", "metadata", "--out", "OUT"], lambda: "auto enhancement reads"),
        (["--convert", "format=webp", "--out", "SRC/web"], lambda: "is inside the source"),
        (["FILE_SOURCE", "--convert", "format=webp", "--out", "SRC/web"], lambda: "is inside the source"),
    ],
    ids=[
        "format",
        "pairs",
        "quality-lossless",
        "factor-range",
        "suffix",
        "no-out",
        "out-alone",
        "auto-no-quality",
        "out-in-source",
        "out-in-file-uri-source",
    ],  # fmt: skip
)
def test_bad_options_stop_the_run_before_any_work_with_the_jobs_messages(
    flags: list[str], expected: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(analyze, "analysis_setup", no_work)  # models and Ray: never reached
    monkeypatch.setattr(analyze, "run_analysis", no_work)
    source = tmp_path / "src"
    source.mkdir()
    sources = [source.as_uri()] if flags[0] == "FILE_SOURCE" else [str(source)]  # a file:// source is a folder too
    flags = [f.replace("SRC", str(source)).replace("OUT", str(tmp_path / "out")) for f in flags if f != "FILE_SOURCE"]
    database = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    code = cli.main(["collection", "analyze", *sources, "--name", "c", "--database-url", database, *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("imgserve: error: ") and expected() in err, err
    assert not (tmp_path / "out").exists() and not (source / "web").exists()


@pytest.mark.unit
def test_images_whose_outputs_would_share_a_name_keep_their_extension(tmp_path: Path) -> None:
    """`IMG_1.HEIC` and `IMG_1.JPG` both convert to `IMG_1.webp`: each keeps its extension in the output's name, so
    neither replaces the other; images without a twin keep the plain name; the local folder is created."""
    out = tmp_path / "web"
    plan = output_plan("format=webp", None, None, str(out), ["metadata"], [str(tmp_path / "src")])
    assert plan is not None and not out.exists()
    names = ["a/IMG_1.HEIC", "a/IMG_1.JPG", "b/IMG_1.JPG", "c.png", "c.jpg"]
    ready = prepare_destination(plan, names)
    assert out.is_dir()
    assert ready.renamed == {
        "a/IMG_1.HEIC": "a/IMG_1_HEIC.HEIC",
        "a/IMG_1.JPG": "a/IMG_1_JPG.JPG",
        "c.png": "c_png.png",
        "c.jpg": "c_jpg.jpg",
    }
    webp = SimpleNamespace(format="webp")  # all output_name reads of a ConvertResult
    outputs = [output_name(ready.renamed.get(n, n), "", webp) for n in names]  # type: ignore[arg-type]
    assert len(set(outputs)) == len(names) and "b/IMG_1.webp" in outputs


@pytest.mark.unit
def test_convert_runs_in_the_read_task_and_a_failed_output_is_that_images_output_error(tmp_path: Path) -> None:
    require(MOBILENET_DIR)  # analysis_setup composes the application, whose default model needs these weights
    source, out = tmp_path / "album", tmp_path / "web"
    (source / "sub").mkdir(parents=True)
    originals = {"a.jpg": _photo(0, (320, 240)), "sub/b.png": _photo(1, (200, 300), "PNG"), "c.jpg": b"\xff\xd8 no"}
    for name, data in originals.items():
        (source / name).write_bytes(data)
    plan = output_plan("format=webp,max_side=160", None, "_s", str(out), ["metadata"], [str(source)])
    assert plan is not None and plan.destination == out.as_uri() and not plan.enhancing
    (out / "sub" / "b_s.webp").mkdir(parents=True)  # the output's path is taken by a folder: that write fails
    setup = analysis_setup(["metadata"], outputs=plan)
    items = list_sources([str(source)])
    rows = [item.to_row() for item in items]
    batch = {key: np.array([row[key] for row in rows], dtype=object) for key in ("name", "location", "member")}
    prepared = prepare_batch(batch, setup)
    assert "data" not in prepared  # converting alone: no bytes travel on to the model actors

    entries = {str(n): json.loads(o) if o else None for n, o in zip(prepared["name"], prepared["output"], strict=True)}
    assert entries["c.jpg"] is None and prepared["error"][list(prepared["name"]).index("c.jpg")]  # not an image
    assert entries["sub/b.png"] == {"error": entries["sub/b.png"]["error"]}
    assert entries["sub/b.png"]["error"].startswith("unwritable_output: cannot write")
    a = entries["a.jpg"]
    written = (out / "a_s.webp").read_bytes()
    assert a["name"] == "a_s.webp" and a["uri"] == (out / "a_s.webp").as_uri() and a["size"] == [160, 120]
    assert (a["input_bytes"], a["output_bytes"]) == (len(originals["a.jpg"]), len(written))
    assert a["compression_ratio"] == round(len(originals["a.jpg"]) / len(written), 4)
    assert Image.open(io.BytesIO(written)).format == "WEBP"
    assert {name: (source / name).read_bytes() for name in originals} == originals

    # The record keeps the entry as its document's "output"; the run's totals count it.
    stats = RunStats(listed=3, skipped=0)
    images = [
        record_of({"name": n, "error": e, "document": "{}" if not e else "", "class_probs": "", "output": o}, item)
        for n, e, o, item in zip(prepared["name"], prepared["error"], prepared["output"], items, strict=True)
    ]
    stats.count(images)
    by_name = {image.record.name: image for image in images}
    assert by_name["a.jpg"].document == {"output": a} and by_name["a.jpg"].record.ok
    assert by_name["sub/b.png"].record.ok  # its analysis stands; only its output failed
    assert (stats.done, stats.failed, stats.outputs, stats.outputs_failed) == (2, 1, 1, 1)
    assert (stats.input_bytes, stats.output_bytes) == (a["input_bytes"], a["output_bytes"])


@pytest.mark.integration  # a local Ray in a subprocess, the real models: ~15 s
def test_enhance_auto_to_webp_over_photos_on_ray_data(tmp_path: Path) -> None:
    from tests.integration.collection_cli import cli_env, run_collection

    samples = require(IMAGENET_SAMPLES)
    require(MOBILENET_DIR)
    source, out = tmp_path / "photos", tmp_path / "out"
    source.mkdir()
    for photo in sorted(samples.glob("*.JPEG"))[:3]:
        (source / photo.name).write_bytes(photo.read_bytes())
    with Image.open(sorted(samples.glob("*.JPEG"))[3]) as photo:  # an underexposed shot: auto mode has work to do
        dark = Image.eval(photo.convert("RGB"), lambda v: v // 6)
    dark.save(source / "dark shot #1.jpg", quality=90)
    (source / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()}
    env = cli_env(tmp_path / "jobs.sqlite")

    result = run_collection(
        env, "analyze", str(source), "--name", "ops", "--enhance", "auto=true", "--convert", "format=webp",
        "--suffix", "_x", "--out", str(out),
    )  # fmt: skip

    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()} == digests
    photos = sorted(name for name in digests if name != "broken.jpg")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(n).stem}_x.webp" for n in photos)
    from serving.collections.store import CollectionStore
    from serving.jobs.database import open_job_database

    store = CollectionStore(open_job_database(env["IMGSERVE_DATABASE_URL"]))
    images = {image.record.name: image for image in store.iter_images(store.get("ops").id)}
    assert not images["broken.jpg"].record.ok and images["broken.jpg"].document is None
    total_in = total_out = 0
    for name in photos:
        entry = images[name].document["output"]  # type: ignore[index]
        output = out / f"{Path(name).stem}_x.webp"
        with Image.open(source / name) as original, Image.open(output) as written:
            assert written.format == "WEBP" and written.size == ImageOps.exif_transpose(original).size
        assert entry["name"] == output.name and entry["uri"] == output.as_uri()
        assert (entry["input_bytes"], entry["output_bytes"]) == ((source / name).stat().st_size, output.stat().st_size)
        assert entry["compression_ratio"] == round(entry["input_bytes"] / entry["output_bytes"], 4)
        assert entry["quality_before"]["score"] == images[name].record.quality_score
        assert isinstance(entry["operations"], list) and entry["quality_after"] is not None
        total_in, total_out = total_in + entry["input_bytes"], total_out + entry["output_bytes"]
    dark_entry = images["dark shot #1.jpg"].document["output"]  # type: ignore[index]
    assert any(step["reason"].startswith("tag ") for step in dark_entry["operations"] + dark_entry.get("reverted", []))
    summary = re.search(
        r"outputs: (\d+) written to (.+), (\d+) failed; (\d+) -> (\d+) bytes \(ratio ([\d.]+)\)", result.stdout
    )
    assert summary is not None, result.stdout
    assert summary.groups()[:5] == (str(len(photos)), str(out), "0", str(total_in), str(total_out))
    assert float(summary.group(6)) == pytest.approx(total_in / total_out, abs=0.005)
