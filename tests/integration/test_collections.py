"""`imgserve collection analyze` on Ray Data over real photos, end to end: what the report says against ExifTool,
planted near-duplicates, an interrupted run resumed, and a planted acquisition effect found as the top insight."""

import csv
import io
import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image, ImageFilter

from serving.collections.sources import list_sources
from tests.collection_samples import EXPECTED_SAMPLE_GROUPS, PLANTED_ORIGINALS, plant_copies
from tests.integration.collection_cli import cli_env, collection_command, report_json, run_collection, stored_rows
from tests.paths import DATA, EXIF_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.timeout(900)


def _stored_count(database: Path) -> int:
    """Images recorded as analysed (`ok`): what a resumed run keeps. A failed image is tried again by any run
    (docs/COLLECTIONS.md), so counting it made the resume check depend on whether `corrupted.jpg` came early."""
    if not database.exists():
        return 0
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM collection_images WHERE ok")).scalar_one()
    except sa.exc.OperationalError:  # not migrated yet
        return 0
    finally:
        engine.dispose()


def _exiftool(paths: list[Path], tmp: Path) -> list[dict[str, Any]]:
    argfile = tmp / "exiftool.args"
    argfile.write_text("\n".join(str(p) for p in paths) + "\n")
    # ExifTool's own pick for camera and date (standard EXIF, else maker notes, Canon CIFF, Olympus APP12, XMP: what
    # imgserve reads too, docs/METADATA.md), and the GPS IFD.
    tags = ["-Make", "-Model", "-DateTimeOriginal", "-GPS:GPSLatitude", "-GPS:GPSLongitude"]
    out = subprocess.run(["exiftool", "-json", "-n", *tags, "-@", str(argfile)], capture_output=True, timeout=300)
    return json.loads(out.stdout)


def _iso(value: Any) -> str | None:
    """ExifTool's 'YYYY:MM:DD HH:MM:SS' as the record's ISO form; None for blank or zero dates (as the summary)."""
    text = str(value or "").strip()
    if len(text) < 19 or text.startswith("0000") or not text[:4].isdigit():
        return None
    return f"{text[:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"


def test_exif_samples_report_agrees_with_exiftool_groups_planted_copies_and_resumes(tmp_path: Path) -> None:
    samples = require(EXIF_SAMPLES)
    require(MOBILENET_DIR)
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (Debian package libimage-exiftool-perl; .ci/run installs it)")
    planted = tmp_path / "planted"
    planted.mkdir()
    original_of: dict[str, str] = {}
    for original in PLANTED_ORIGINALS:
        for variant, data in plant_copies((samples / original).read_bytes()).items():
            name = f"{Path(original).stem}__{variant}"
            (planted / name).write_bytes(data)
            original_of[f"planted/{name}"] = f"exif-samples/{original}"
    database = tmp_path / "jobs.sqlite"
    env = cli_env(database)
    sources = [str(samples), str(planted)]

    # Interrupted once some images are stored (Ctrl-C), then the same command again: it resumes.
    first = subprocess.Popen(
        collection_command("analyze", *sources, "--name", "exif"), env=env, cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _stored_count(database) < 16 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    interrupted_at = _stored_count(database)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode != 0 and 16 <= interrupted_at, "the first run was not interrupted mid-way"
    second = run_collection(env, "analyze", *sources, "--name", "exif")
    analysed, already = re.search(r"this run analysed (\d+) .* (\d+) already done", second.stdout).groups()
    rows = stored_rows(database, "exif")
    total = len(list_sources(sources))
    assert int(already) >= interrupted_at and int(analysed) + int(already) == total, second.stdout
    assert len(rows) == total and total > len(original_of) + 90
    # The CLI prints its own progress; Ray Data's console notices stay in its session log.
    assert "Progress bars disabled" not in second.stderr and "execution finished" not in second.stderr, second.stderr

    report = report_json(env, "exif", tmp_path)
    ok_names = [name for name, row in rows.items() if row["ok"]]
    assert report["images"] == len(ok_names) and report["failed"] == len(rows) - len(ok_names)

    # Cameras, date range and the geotagged count: ExifTool over exactly the analysed files.
    def path_of(name: str) -> Path:
        prefix, rest = name.split("/", 1)
        return (samples if prefix == "exif-samples" else planted) / rest

    tool = _exiftool([path_of(n) for n in ok_names], tmp_path)
    assert len(tool) == len(ok_names)
    cameras = Counter(
        (
            str(t["Make"]).strip() or None if "Make" in t else None,
            str(t["Model"]).strip() or None if "Model" in t else None,
        )
        for t in tool
        if str(t.get("Make", "")).strip() or str(t.get("Model", "")).strip()
    )
    assert Counter({(c["make"], c["model"]): c["count"] for c in report["cameras"]}) == cameras
    dates = sorted(d for t in tool if (d := _iso(t.get("DateTimeOriginal"))))
    assert (report["date_range"]["first"][:19], report["date_range"]["last"][:19]) == (dates[0], dates[-1])
    geotagged = sum(
        1
        for t in tool
        if isinstance(t.get("GPSLatitude"), (int, float)) and isinstance(t.get("GPSLongitude"), (int, float))
    )
    assert report["geotagged"] == geotagged

    # Every planted copy with its original; no other group than the samples' own known variants.
    groups = [set(g) for g in report["duplicates"]]
    group_of = {name: i for i, g in enumerate(groups) for name in g}
    for copy, original in original_of.items():
        assert copy in group_of and group_of.get(original) == group_of[copy], (copy, original, report["duplicates"])
    known = [{f"exif-samples/{n}" for n in g} for g in EXPECTED_SAMPLE_GROUPS]
    for group in groups:
        samples_in = {n for n in group if not n.startswith("planted/")}
        assert any(samples_in <= k for k in known) or len(samples_in) == 1, f"unexpected group {sorted(group)}"

    # Exports: the filtered CSV lists exactly the matching images.
    out = tmp_path / "blurry.csv"
    run_collection(env, "export", "exif", "--out", str(out), "--tag", "blurry")
    with out.open(newline="") as handle:
        exported = {row["name"] for row in csv.DictReader(handle)}
    assert exported, "nothing tagged blurry: the filter is not exercised"
    assert exported == {n for n, row in rows.items() if ",blurry," in row["tags"]}


CAMERAS = [("Canon", "Canon EOS 80D"), ("NIKON CORPORATION", "NIKON D750"), ("SONY", "ILCE-7M3"), ("Blurmatic", "B1")]


def _camera_collection(folder: Path, photos: list[Path], blur_model: str | None) -> None:
    """The photos as if shot by four cameras in turn (EXIF Make/Model written); `blur_model`'s are defocused."""
    folder.mkdir(parents=True)
    for i, photo in enumerate(photos):
        make, model = CAMERAS[i % len(CAMERAS)]
        with Image.open(photo) as image:
            rgb = image.convert("RGB")
        if model == blur_model:
            rgb = rgb.filter(ImageFilter.GaussianBlur(radius=4))
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = make, model
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
        (folder / f"{i:03d}_{photo.name}").write_bytes(buffer.getvalue())


def test_planted_camera_effect_is_the_top_insight_and_none_without_it(tmp_path: Path) -> None:
    biq = require(DATA / "biq2021-train")
    require(MOBILENET_DIR)
    # Photos people rated well (MOS >= 0.6), so the planted defocus is the effect to find, not the photos' own.
    good = [
        line.split(",")[0]
        for line in (biq / "mos.csv").read_text().splitlines()[1:]
        if float(line.split(",")[1]) >= 0.6
    ]
    photos = [biq / "images" / name for name in sorted(good)[:200]]
    assert len(photos) == 200, "too few well-rated photos in biq2021-train"
    _camera_collection(tmp_path / "planted", photos[:100], blur_model="B1")
    _camera_collection(tmp_path / "plain", photos[100:], blur_model=None)
    env = cli_env(tmp_path / "jobs.sqlite")
    run_collection(env, "analyze", str(tmp_path / "planted"), "--name", "planted")
    run_collection(env, "analyze", str(tmp_path / "plain"), "--name", "plain")

    insights = report_json(env, "planted", tmp_path)["insights"]
    assert insights, "the planted effect was not found"
    top = insights[0]["evidence"]
    assert (top["tag"], top["factor"], top["group"]) == ("blurry", "camera", "Blurmatic B1"), insights[0]["text"]
    assert top["p_value"] < top["threshold"] < 0.01 and top["n"] == 25
    assert all(i["evidence"]["p_value"] < i["evidence"]["threshold"] for i in insights)

    plain = report_json(env, "plain", tmp_path)
    assert plain["images"] == 100 and plain["insights"] == [], [i["text"] for i in plain["insights"]]
