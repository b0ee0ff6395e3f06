"""The benchmark harness: image mixes, peak/ratio arithmetic, the bench.json/BENCHMARKS.md writers, the baselines."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtests import bench
from loadtests.baselines import naive_server, triton_server
from loadtests.closed_loop import LevelResult
from loadtests.images import camera_candidates, decode_problem, load_mix, megapixels, select_camera, web_paths
from pipelines.decode import decode_for_model
from pipelines.preprocess import reference_preprocess
from tests.paths import DATA, IMAGENET_SAMPLES, MOBILENET_DIR, require

pytestmark = pytest.mark.unit


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ image mixes


def test_camera_selection_keeps_large_clean_jpegs_only(tmp_path: Path) -> None:
    good = jpeg(300, 200)
    files = {
        "blur-samples/big.jpg": good,  # 0.06 MP: above the test threshold
        "blur-samples/small.jpg": jpeg(100, 80),  # below it
        "exif-samples/jpg/deep/nested.JPEG": jpeg(320, 240, seed=1),
        "exif-samples/jpg/truncated.jpg": good[: len(good) // 2],  # Pillow: image file is truncated
        # Pillow decodes this silently (pads the missing data); only libjpeg says it is corrupt.
        "exif-samples/jpg/corrupt_scan.jpg": good[: len(good) // 2] + b"\xff\xd9",
        "exif-samples/jpg/notes.txt": b"not an image",
        "imagenet-samples/ignored.JPEG": good,  # not a camera folder
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)

    candidates = camera_candidates(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in candidates] == [
        "blur-samples/big.jpg",
        "blur-samples/small.jpg",
        "exif-samples/jpg/corrupt_scan.jpg",
        "exif-samples/jpg/deep/nested.JPEG",
        "exif-samples/jpg/truncated.jpg",
    ]
    accepted, rejected = select_camera(candidates, min_mp=0.05)
    assert [p.name for p in accepted] == ["big.jpg", "nested.JPEG"]
    reasons = {Path(k).name: v for k, v in rejected.items()}
    assert set(reasons) == {"corrupt_scan.jpg", "truncated.jpg"}
    assert reasons["truncated.jpg"].startswith("Pillow:")
    assert "libjpeg" in reasons["corrupt_scan.jpg"]


def test_camera_mix_on_the_shared_photos() -> None:
    require(DATA)
    large = [p for p in camera_candidates(DATA) if megapixels(p) >= 3.0]
    names = {p.name for p in large}
    assert "176_HONOR-7X_S.jpg" in names and "iphone_hdr_YES.jpg" in names
    assert "106_NIKON-D3400-35MM_S.JPG" not in names  # 2048x1365 = 2.8 MP
    assert all(3.0 <= megapixels(p) <= 12.5 for p in large)
    assert "premature end" in (decode_problem((DATA / "exif-samples/jpg/corrupted.jpg").read_bytes()) or "")
    assert decode_problem((DATA / "exif-samples/jpg/Reconyx_HC500_Hyperfire.jpg").read_bytes()) is None


def test_web_mix_is_the_1000_imagenet_samples_and_subsets_spread_evenly() -> None:
    require(IMAGENET_SAMPLES)
    paths = web_paths(DATA)
    assert len(paths) == 1000 and paths == sorted(paths)
    mix = load_mix("web", DATA, limit=10)
    assert mix.paths == [paths[i * 100] for i in range(10)]
    assert len(mix.images) == len(mix.sizes) == 10
    info = mix.describe(DATA)
    assert info["images"] == 10 and info["files"][0] == "imagenet-samples/" + paths[0].name
    with pytest.raises(ValueError, match="unknown mix"):
        load_mix("thumbnails", DATA)


# ------------------------------------------------------------------------------------------------ peaks and ratios


def levels(*rates: float) -> dict[str, dict]:
    return {
        str(c): {"images_per_s": r, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}
        for c, r in zip((1, 8, 32, 64), rates, strict=False)
    }


SERVERS = {
    "naive": {"web": levels(20.0, 25.0, 24.0, 22.0), "camera": levels(5.0, 6.0, 6.0, 5.5)},
    "triton": {"web": levels(30.0, 80.0, 120.0, 110.0), "camera": levels(10.0, 30.0, 35.0, 36.0)},
    "imgserve_http": {"web": levels(40.0, 150.0, 180.0, 190.0), "camera": levels(20.0, 60.0, 70.0, 66.0)},
    "imgserve_grpc": {"web": levels(45.0, 160.0, 200.0, 195.0), "camera": levels(18.0, 55.0, 60.0, 61.0)},
}
LIMIT = {"combined": {"web": 250.0, "camera": 100.0}}


def test_peak_is_the_best_level() -> None:
    assert bench.peak(levels(1.0, 3.0, 2.0)) == (8, 3.0)
    assert bench.peak({}) is None and bench.peak(None) is None


def test_ratios_take_each_server_at_its_own_peak() -> None:
    ratios, peaks = bench.compute_ratios(SERVERS, LIMIT)
    # web: imgserve = grpc at c32 (200) beats http's 190; naive peaks at c8 (25), triton at c32 (120).
    assert peaks["web"]["imgserve"] == {"server": "imgserve_grpc", "concurrency": 32, "images_per_s": 200.0}
    assert ratios["imgserve_vs_naive"] == 8.0
    assert ratios["imgserve_vs_triton"] == pytest.approx(1.67)
    assert ratios["imgserve_vs_limit"] == 0.8
    # camera: imgserve = http at c32 (70); naive peaks at 6 (first of the two equal levels).
    assert peaks["camera"]["imgserve"]["server"] == "imgserve_http"
    assert peaks["camera"]["naive"]["concurrency"] == 8
    assert ratios["camera_imgserve_vs_naive"] == pytest.approx(11.67)
    assert ratios["camera_imgserve_vs_triton"] == pytest.approx(1.94)


def test_ratios_are_null_when_a_server_was_not_measured() -> None:
    servers = {**SERVERS, "triton": {"web": {}, "camera": {}, "error": "tritonserver did not start"}}
    ratios, peaks = bench.compute_ratios(servers, {})
    assert ratios["imgserve_vs_triton"] is None and ratios["imgserve_vs_limit"] is None
    assert ratios["imgserve_vs_naive"] == 8.0
    assert "triton" not in peaks["web"]


def test_level_record_and_generator_verdict() -> None:
    result = LevelResult(8, 400, 2, 20.0, 19.9, 35.0, 80.0, client_cpu_s=3.0)
    record = bench.level_record(result, cpu_s=30.0, peak_rss_mb=1234.56, monitor_cpu_s=1.0)
    assert {"images_per_s", "p50_ms", "p99_ms", "errors", "cpu_s", "peak_rss_mb"} <= set(record)
    assert record["server_cores"] == 1.5 and record["client_cpu_s"] == 2.0 and record["client_cores"] == 0.1
    assert record["peak_rss_mb"] == 1234.6 and record["errors"] == 2
    summary = bench.generator_summary({"naive": {"web": {"8": record}}})
    assert summary["bottleneck"] is False and summary["at"] == "naive/web/c8"
    busy = bench.generator_summary({"naive": {"web": {"8": {**record, "client_cores": 0.7}}}})
    assert busy["bottleneck"] is True


def test_level_record_without_answers_has_no_latency() -> None:
    result = LevelResult(1, 0, 0, 1.0, 0.0, float("nan"), float("nan"), 0.0)
    record = bench.level_record(result, 0.0, 0.0)
    assert record["p50_ms"] is None and record["p99_ms"] is None


# ------------------------------------------------------------------------------------------------ writers


def report() -> dict:
    machine = {"date": "2026-01-01 00:00 UTC", "cpu_model": "Test CPU", "logical_cpus": 2, "contended": True}
    return bench.build_report(
        machine={**machine, "loadavg_start": [3.0, 2.0, 1.0]},
        command=".venv/bin/python -m loadtests.bench --quick",
        mixes={"web": {"images": 1000, "median_kb": 104.6, "median_mp": 0.19, "mp_range": [0.0, 3.8]}},
        servers={
            **SERVERS,
            "triton": {"web": {}, "camera": {}, "error": "RuntimeError: no | tritonserver"},
            "imgserve_http": {**SERVERS["imgserve_http"], "failed_starts": ["imgserve_http exited with 1: Boom"]},
        },
        limit={
            "model": {"images_per_s": 300.0, "best_batch": 16, "batch_images_per_s": {"1": 200.0, "16": 300.0}},
            "decode": {"web": {"images_per_s": 600.0}, "camera": {"images_per_s": 120.0}},
            **LIMIT,
        },
        settings={
            "quick": True,
            "make_command": "make bench BENCH_ARGS=--quick",
            "concurrency": [1, 8, 32, 64],
            "seconds": 4.0,
            "warmup": 2.0,
        },
    )


def test_bench_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "results" / "bench.json"
    bench.write_json(report(), out)
    data = json.loads(out.read_text())
    assert {"machine", "command", "mixes", "servers", "limit", "ratios"} <= set(data)
    assert set(data["servers"]) == {"naive", "triton", "imgserve_http", "imgserve_grpc"}
    assert {"imgserve_vs_naive", "imgserve_vs_triton", "imgserve_vs_limit", "camera_imgserve_vs_naive"} <= set(
        data["ratios"]
    )
    assert all(v is None or isinstance(v, float) for v in data["ratios"].values())
    assert data["servers"]["naive"]["web"]["8"]["images_per_s"] == 25.0
    assert data["ratios"]["imgserve_vs_triton"] is None  # triton failed: recorded, not fatal
    assert data["servers"]["triton"]["error"].startswith("RuntimeError")


def test_markdown_section_is_generated_and_replaced_in_place(tmp_path: Path) -> None:
    section = bench.render_markdown(report())
    assert "Smoke run" in section and "Contended machine" in section
    assert (
        "Command: `make bench BENCH_ARGS=--quick`, which runs `.venv/bin/python -m loadtests.bench --quick`" in section
    )
    assert "| imgserve_grpc | 32 | **200.0** |" in section
    assert "| triton | – | not measured: RuntimeError: no / tritonserver |" in section
    assert "| imgserve_vs_naive | 8.00 | imgserve_grpc c32: 200.0 | naive c8: 25.0 |" in section
    assert "imgserve_http: a start attempt failed and it was started again: `imgserve_http exited" in section
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nHand-written method.\n")
    bench.update_markdown(path, section)
    bench.update_markdown(path, section.replace("200.0", "201.0"))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written method.\n")
    assert text.count(bench.MD_BEGIN) == 1 and text.count(bench.MD_END) == 1
    assert "**201.0**" in text and "**200.0**" not in text


def test_server_failures_are_reported_by_their_verdict_line() -> None:
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nTimeoutError: Serve application isn't running\n"
    assert bench.last_error(log) == "TimeoutError: Serve application isn't running"
    assert bench.last_error("just a line\n\n") == "just a line"
    assert bench.last_error("") == "(no output)"


# ------------------------------------------------------------------------------------------------ baselines


def test_baseline_preprocessing_matches_imgserve(mobilenet_spec) -> None:  # noqa: ANN001 - conftest fixture
    require(IMAGENET_SAMPLES)
    web = (IMAGENET_SAMPLES / "n01440764_tench.JPEG").read_bytes()
    reference = reference_preprocess(Image.open(io.BytesIO(web)), mobilenet_spec)
    np.testing.assert_array_equal(naive_server.preprocess(web)[0], reference)
    np.testing.assert_array_equal(triton_server.preprocess(web), decode_for_model(web, mobilenet_spec).tensor)
    camera = (DATA / "blur-samples" / "176_HONOR-7X_S.jpg").read_bytes()  # 2048x1536: decoded at 1/4 scale
    decoded = decode_for_model(camera, mobilenet_spec)
    assert decoded.decode_scale > 1
    np.testing.assert_array_equal(triton_server.preprocess(camera), decoded.tensor)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_naive_server_classifies_a_real_photo() -> None:
    require(MOBILENET_DIR)
    require(IMAGENET_SAMPLES)
    from fastapi.testclient import TestClient

    with TestClient(naive_server.create_app()) as client:
        photo = (IMAGENET_SAMPLES / "n01440764_tench.JPEG").read_bytes()
        response = client.post("/classify", content=photo, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200
        top = response.json()["predictions"][0]
        assert top["index"] == 1 and top["label"].startswith("tench,") and top["score"] > 0.5
        assert client.post("/classify", content=b"not an image").status_code == 400


def test_steal_share_comes_from_proc_stat_deltas() -> None:
    assert bench.steal_pct((100, 1000), (150, 1500)) == 10.0
    assert bench.steal_pct((0, 0), (0, 0)) is None
    steal, total = bench.cpu_times()
    if Path("/proc/stat").exists():
        assert total > 0 and 0 <= steal <= total


def test_quiet_gate_off_only_probes_and_on_waits_at_most_its_bound() -> None:
    import time

    off = bench.QuietGate(max_wait_s=0)
    started = time.monotonic()
    probe = off.wait()
    assert time.monotonic() - started < 1.0 and off.waited_s == 0
    assert 0 < probe == off.fastest_probe_ms  # the probe is still taken and remembered
    # Threshold -1 %: never quiet enough, so it must give up after max_wait_s (plus one sample).
    stubborn = bench.QuietGate(max_steal_pct=-1, max_wait_s=0.2, sample_s=0.05)
    started = time.monotonic()
    stubborn.wait()
    assert 0.2 <= time.monotonic() - started < 2.0 and stubborn.waited_s > 0
    # A probe can never be faster than half the fastest: the speed condition alone keeps it waiting too.
    slow = bench.QuietGate(max_steal_pct=100, max_slowdown=0.5, max_wait_s=0.2, sample_s=0.05)
    started = time.monotonic()
    slow.wait()
    assert 0.2 <= time.monotonic() - started < 2.0 and slow.waited_s > 0


def test_speed_probe_sees_a_slower_machine() -> None:
    """Two busy threads on this process's cores make the single-thread probe slower (GIL + shared cores)."""
    import threading

    quiet = min(bench.speed_probe_ms() for _ in range(3))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))  # holds the GIL: the probe's Python-level work waits for it

    workers = [threading.Thread(target=spin) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        busy = bench.speed_probe_ms()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert busy > quiet


def test_limit_rate_is_the_fastest_window() -> None:
    import time

    calls = []

    def work(i: int) -> int:
        calls.append(i)
        time.sleep(0.001 if i < 40 else 0.02)  # fast first, then slow (as if the CPU were taken away)
        return 1

    quiet, bench.QUIET = bench.QUIET, bench.QuietGate(max_wait_s=0)
    try:
        rate = bench._rate(work, seconds=0.6, window_s=0.05)
    finally:
        bench.QUIET = quiet
    assert rate > 200  # the fast phase (~1000/s at 1 ms), not the ~50/s average of the slow one


def test_best_of_rounds_keeps_each_levels_fastest_round_and_every_rate() -> None:
    def level(rate: float) -> dict:
        return {"images_per_s": rate, "p50_ms": 1000 / rate}

    first = {"web": {"1": level(50.0), "8": level(90.0)}, "startup_s": 3.0}
    second = {"web": {"1": level(60.0), "8": level(80.0)}, "error": "RuntimeError: boom"}
    merged = bench.best_of_rounds([first, second])
    assert merged["web"]["1"]["images_per_s"] == 60.0 and merged["web"]["8"]["images_per_s"] == 90.0
    assert merged["web"]["1"]["round_rates"] == [50.0, 60.0]
    assert merged["rounds"] == 2 and merged["startup_s"] == 3.0 and "boom" in merged["error"]
    assert bench.best_of_rounds([first]) == first  # one round: unchanged
