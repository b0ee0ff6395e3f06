"""The benchmark harness: image mixes, peak/ratio arithmetic, the bench.json/BENCHMARKS.md writers, the baselines."""

import asyncio
import functools
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtests.baselines import naive_server, triton_server
from loadtests.bench import limits, machine
from loadtests.bench.auth import BenchKey, parse_key, scrub, verify_enforced
from loadtests.bench.catalog import (
    AUTH_PAIRS,
    IMGSERVE_ENV,
    IMGSERVE_EXTRA_ARGS,
    imgserve_command_line,
    is_grpc,
    key_command_line,
)
from loadtests.bench.catalog import SERVERS as SERVER_NAMES
from loadtests.bench.cli import Plan, parse_args, result_files, settings_record
from loadtests.bench.markdown import MD_BEGIN, MD_END, render_markdown, update_markdown
from loadtests.bench.measure import best_of_rounds
from loadtests.bench.monitor import TreeMonitor
from loadtests.bench.report import (
    auth_overhead,
    build_report,
    compute_ratios,
    generator_summary,
    level_record,
    peak,
    write_json,
)
from loadtests.bench.servers import Server, build_servers, last_error
from loadtests.closed_loop import LevelResult, grpc_sender, http_sender
from loadtests.images import camera_candidates, decode_problem, load_mix, megapixels, select_camera, web_paths
from loadtests.server_process import ProcessSession, StartError, free_port, imgserve_command, session_pids
from pipelines.decode import decode_image
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
    assert peak(levels(1.0, 3.0, 2.0)) == (8, 3.0)
    assert peak({}) is None and peak(None) is None


def test_ratios_take_each_server_at_its_own_peak() -> None:
    ratios, peaks = compute_ratios(SERVERS, LIMIT)
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


def test_the_int8_ceiling_is_a_ratio_and_two_limit_rows_when_the_int8_model_was_measured() -> None:
    limit = {**LIMIT, "model_int8": {"images_per_s": 500.0, "best_batch": 16}, "parallel_int8": {"web": 320.0}}
    ratios, peaks = compute_ratios(SERVERS, limit)
    assert ratios["imgserve_vs_int8_ceiling"] == 0.62  # imgserve_grpc's 200 of 320
    assert ratios["camera_imgserve_vs_int8_ceiling"] is None  # not measured for that mix
    assert compute_ratios(SERVERS, LIMIT)[0]["imgserve_vs_int8_ceiling"] is None  # no INT8 model built
    data = report()
    data["limit"], data["ratios"], data["peaks"] = limit, ratios, peaks
    section = render_markdown(data)
    assert "| limit: INT8 model only (ORT, batch 16) | – | 500.0 |" in section
    assert "| limit: decode on all cores + INT8 model (parallel) | – | 320.0 |" in section
    assert (
        "| imgserve_vs_int8_ceiling | 0.62 | imgserve_grpc c32: 200.0 | decode on all cores + INT8 model limit: 320.0 |"
        in section
    )


def test_the_limits_of_both_models_follow_their_formulas() -> None:
    from loadtests.bench.limits import ceilings

    combined, parallel = ceilings({"web": {"images_per_s": 400.0}, "none": {"images_per_s": 0}}, 500.0, cores=2)
    assert combined == {"web": 222.2} and parallel == {"web": 307.7}  # 1/(1/400+1/500), 1/(1/800+1/500)


def test_ratios_are_null_when_a_server_was_not_measured() -> None:
    servers = {**SERVERS, "triton": {"web": {}, "camera": {}, "error": "tritonserver did not start"}}
    ratios, peaks = compute_ratios(servers, {})
    assert ratios["imgserve_vs_triton"] is None and ratios["imgserve_vs_limit"] is None
    assert ratios["imgserve_vs_naive"] == 8.0
    assert "triton" not in peaks["web"]


def with_c16(servers: dict[str, dict], **c16: dict) -> dict[str, dict]:
    """`servers` with a web level at concurrency 16 added for the servers named."""
    out = dict(servers)
    for name, level in c16.items():
        out[name] = {**servers.get(name, {}), "web": {**(servers.get(name) or {}).get("web", {}), "16": level}}
    return out


PLACEMENTS = with_c16(
    SERVERS,
    naive={"images_per_s": 24.0},
    imgserve_http={"images_per_s": 150.0},
    imgserve_grpc={"images_per_s": 160.0},
    imgserve_graph_grpc={"images_per_s": 200.0, "server_cores": 2.0},
)


def test_placement_ratios_compare_the_default_placement_at_c16() -> None:
    ratios, peaks = compute_ratios(PLACEMENTS, LIMIT)
    # default placement at c16 = grpc's 160 (beats http's 150); the best of every placement at c16 is the graph's 200.
    assert peaks["web"]["default_c16"] == {"server": "imgserve_grpc", "concurrency": 16, "images_per_s": 160.0}
    assert peaks["web"]["best_c16"]["server"] == "imgserve_graph_grpc"
    assert ratios["default_c16_vs_best_placement_c16"] == 0.8
    assert ratios["default_c16_vs_naive_peak"] == 6.4  # naive's peak is still 25 at c8, not its c16 level
    # graph: its peak is c16 (its only level), 2.0 cores / 200 img/s = 10 CPU-ms per image = 100 images per CPU-s.
    assert peaks["web"]["graph_cpu"]["cpu_ms_per_image"] == 10.0
    assert ratios["graph_images_per_cpu_s"] == 100.0
    assert ratios["imgserve_vs_naive"] == 8.0  # the peak ratios ignore the graph placement
    slower_graph = with_c16(PLACEMENTS, imgserve_graph_grpc={"images_per_s": 100.0, "server_cores": 2.0})
    assert compute_ratios(slower_graph, LIMIT)[0]["default_c16_vs_best_placement_c16"] == 1.0


def test_placement_ratios_are_null_without_c16_or_graph_levels() -> None:
    ratios, peaks = compute_ratios(SERVERS, LIMIT)
    assert ratios["default_c16_vs_best_placement_c16"] is None and ratios["default_c16_vs_naive_peak"] is None
    assert ratios["graph_images_per_cpu_s"] is None
    assert not {"default_c16", "best_c16", "graph_cpu"} & set(peaks["web"])


def test_level_record_and_generator_verdict() -> None:
    result = LevelResult(8, 400, 2, 20.0, 19.9, 35.0, 80.0, client_cpu_s=3.0)
    record = level_record(result, cpu_s=30.0, peak_rss_mb=1234.56, monitor_cpu_s=1.0)
    assert {"images_per_s", "p50_ms", "p99_ms", "errors", "cpu_s", "peak_rss_mb"} <= set(record)
    assert record["server_cores"] == 1.5 and record["client_cpu_s"] == 2.0 and record["client_cores"] == 0.1
    assert record["peak_rss_mb"] == 1234.6 and record["errors"] == 2
    summary = generator_summary({"naive": {"web": {"8": record}}})
    assert summary["bottleneck"] is False and summary["at"] == "naive/web/c8"
    busy = generator_summary({"naive": {"web": {"8": {**record, "client_cores": 0.7}}}})
    assert busy["bottleneck"] is True


def test_level_record_without_answers_has_no_latency() -> None:
    result = LevelResult(1, 0, 0, 1.0, 0.0, float("nan"), float("nan"), 0.0)
    record = level_record(result, 0.0, 0.0)
    assert record["p50_ms"] is None and record["p99_ms"] is None


# ------------------------------------------------------------------------------------------------ writers


def report() -> dict:
    machine = {"date": "2026-01-01 00:00 UTC", "cpu_model": "Test CPU", "logical_cpus": 2, "contended": True}
    return build_report(
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
    write_json(report(), out)
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
    section = render_markdown(report())
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
    update_markdown(path, section)
    update_markdown(path, section.replace("200.0", "201.0"))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written method.\n")
    assert text.count(MD_BEGIN) == 1 and text.count(MD_END) == 1
    assert "**201.0**" in text and "**200.0**" not in text


def test_markdown_renders_the_placement_ratios_and_imgserve_commands() -> None:
    section = render_markdown(report())  # no c16 levels: the placement rows are there, empty
    assert "| default_c16_vs_best_placement_c16 | – | – | – |" in section
    assert "| default_c16_vs_naive_peak | – | – | naive c8: 25.0 |" in section
    assert "imgserve servers" not in section  # a report from before the commands were recorded
    data = report()
    data["ratios"], data["peaks"] = compute_ratios(PLACEMENTS, LIMIT)
    data["settings"]["imgserve_commands"] = {
        "imgserve_http": "imgserve serve --config serve_config.yaml",
        "imgserve_grpc": "imgserve serve --config serve_config.yaml",
        "imgserve_graph_grpc": "imgserve serve --config serve_config.yaml --placement graph",
    }
    section = render_markdown(data)
    assert (
        "| default_c16_vs_best_placement_c16 | 0.80 | imgserve_grpc c16: 160.0 | imgserve_graph_grpc c16: 200.0 |"
        in section
    )
    assert "| default_c16_vs_naive_peak | 6.40 | imgserve_grpc c16: 160.0 | naive c8: 25.0 |" in section
    assert (
        "| graph_images_per_cpu_s | 100.00 | imgserve_graph_grpc c16: 200.0 "
        "| 2.00 server cores: 10.0 CPU-ms per image |" in section
    )
    assert (
        "imgserve servers (on free ports, each started fresh): imgserve_http, imgserve_grpc: "
        "`imgserve serve --config serve_config.yaml`; imgserve_graph_grpc: "
        "`imgserve serve --config serve_config.yaml --placement graph`." in section
    )
    assert section.count("default_c16_vs_naive_peak") == 1  # in the placement table, not among the peak ratios


def test_server_failures_are_reported_by_their_verdict_line() -> None:
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nTimeoutError: Serve application isn't running\n"
    assert last_error(log) == "TimeoutError: Serve application isn't running"
    assert last_error("just a line\n\n") == "just a line"
    assert last_error("") == "(no output)"


# ------------------------------------------------------------------------------------------------ baselines


def test_baseline_preprocessing_matches_imgserve(mobilenet_spec) -> None:  # noqa: ANN001 - conftest fixture
    require(IMAGENET_SAMPLES)
    web = (IMAGENET_SAMPLES / "n01440764_tench.JPEG").read_bytes()
    reference = reference_preprocess(Image.open(io.BytesIO(web)), mobilenet_spec)
    np.testing.assert_array_equal(naive_server.preprocess(web)[0], reference)
    np.testing.assert_array_equal(triton_server.preprocess(web), decode_image(web, mobilenet_spec).tensor)
    camera = (DATA / "blur-samples" / "176_HONOR-7X_S.jpg").read_bytes()  # 2048x1536: decoded at 1/4 scale
    decoded = decode_image(camera, mobilenet_spec)
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
    assert machine.steal_pct((100, 1000), (150, 1500)) == 10.0
    assert machine.steal_pct((0, 0), (0, 0)) is None
    steal, total = machine.cpu_times()
    if Path("/proc/stat").exists():
        assert total > 0 and 0 <= steal <= total


def test_quiet_gate_off_only_probes_and_on_waits_at_most_its_bound() -> None:
    import time

    off = machine.QuietGate(max_wait_s=0)
    started = time.monotonic()
    probe = off.wait()
    assert time.monotonic() - started < 1.0 and off.waited_s == 0
    assert 0 < probe == off.fastest_probe_ms  # the probe is still taken and remembered
    # Threshold -1 %: never quiet enough, so it must give up after max_wait_s (plus one sample).
    stubborn = machine.QuietGate(max_steal_pct=-1, max_wait_s=0.2, sample_s=0.05)
    started = time.monotonic()
    stubborn.wait()
    assert 0.2 <= time.monotonic() - started < 2.0 and stubborn.waited_s > 0
    # A probe can never be faster than half the fastest: the speed condition alone keeps it waiting too.
    slow = machine.QuietGate(max_steal_pct=100, max_slowdown=0.5, max_wait_s=0.2, sample_s=0.05)
    started = time.monotonic()
    slow.wait()
    assert 0.2 <= time.monotonic() - started < 2.0 and slow.waited_s > 0


def test_speed_probe_sees_a_slower_machine() -> None:
    """Two busy threads on this process's cores make the single-thread probe slower (GIL + shared cores)."""
    import threading

    quiet = min(machine.speed_probe_ms() for _ in range(3))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))  # holds the GIL: the probe's Python-level work waits for it

    workers = [threading.Thread(target=spin) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        busy = machine.speed_probe_ms()
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

    quiet, machine.QUIET = machine.QUIET, machine.QuietGate(max_wait_s=0)
    try:
        rate = limits.fastest_rate(work, seconds=0.6, window_s=0.05)
    finally:
        machine.QUIET = quiet
    assert rate > 200  # the fast phase (~1000/s at 1 ms), not the ~50/s average of the slow one


def test_best_of_rounds_keeps_each_levels_fastest_round_and_every_rate() -> None:
    def level(rate: float) -> dict:
        return {"images_per_s": rate, "p50_ms": 1000 / rate}

    first = {"web": {"1": level(50.0), "8": level(90.0)}, "startup_s": 3.0}
    second = {"web": {"1": level(60.0), "8": level(80.0)}, "error": "RuntimeError: boom"}
    merged = best_of_rounds([first, second])
    assert merged["web"]["1"]["images_per_s"] == 60.0 and merged["web"]["8"]["images_per_s"] == 90.0
    assert merged["web"]["1"]["round_rates"] == [50.0, 60.0]
    assert merged["rounds"] == 2 and merged["startup_s"] == 3.0 and "boom" in merged["error"]
    assert best_of_rounds([first]) == first  # one round: unchanged


# ------------------------------------------------------------------------------------------------ server processes


def test_imgserve_servers_run_serve_config_yaml_with_their_placement_args() -> None:
    assert imgserve_command("c.yaml", 1, 2, ["--placement", "graph"])[1:] == [
        "serve", "--config", "c.yaml", "--http-port", "1", "--grpc-port", "2", "--placement", "graph",
    ]  # fmt: skip
    http, graph = build_servers(["imgserve_http", "imgserve_graph_grpc"], Path("m.onnx"), Path("l.txt"), None)
    assert http.args[:3] == ["serve", "--config", "serve_config.yaml"] and "--placement" not in http.args
    assert graph.args[:3] == ["serve", "--config", "serve_config.yaml"] and graph.args[-2:] == ["--placement", "graph"]
    assert http.url.startswith("http://") and graph.url.startswith("grpc://")


def test_concurrency_16_is_always_measured_and_imgserve_commands_are_recorded() -> None:
    assert Plan.from_args(parse_args([])).concurrency == [1, 8, 16, 32, 64]
    assert Plan.from_args(parse_args(["--quick"])).concurrency == [1, 8, 16]
    assert Plan.from_args(parse_args(["--concurrency", "32", "1"])).concurrency == [1, 16, 32]
    settings = settings_record(Plan.from_args(parse_args([])), 1, "make bench", ["naive", "imgserve_graph_grpc"])
    assert settings["imgserve_commands"] == {
        "imgserve_graph_grpc": "imgserve serve --config serve_config.yaml --placement graph"
    }


def test_process_session_is_ready_by_url_and_stops_its_whole_session(tmp_path: Path) -> None:
    import psutil

    port = free_port()
    serve = shlex.join([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(tmp_path)])
    # The background sleep ignores SIGINT (a non-interactive shell's background job): only the SIGKILL of the
    # session after the server's clean exit ends it.
    session = ProcessSession(
        ["sh", "-c", f"sleep 60 & exec {serve}"], log=tmp_path / "logs" / "s.log", ready_url=f"http://127.0.0.1:{port}/"
    )
    session.start(timeout_s=30)
    assert session.proc is not None
    sid = session.proc.pid
    assert len(session_pids(sid)) == 2
    assert session.stop(timeout_s=10) is True and session.proc is None

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not [pid for pid in session_pids(sid) if alive(pid)]


def test_start_failures_say_why_with_the_logs_verdict(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "print('starting'); raise TimeoutError('Serve application is not running')"]
    session = ProcessSession(crash, log=tmp_path / "crash.log", ready_url="http://127.0.0.1:9/", name="crash")
    with pytest.raises(StartError, match="crash exited with 1") as failure:
        session.start(timeout_s=30)
    assert failure.value.reason == "exited with 1" and "starting" in str(failure.value) and session.proc is None
    server = Server("broken", crash, url="http://127.0.0.1:9", ready_url="http://127.0.0.1:9/", start_timeout=30)
    try:
        with pytest.raises(RuntimeError, match=r"^broken exited with 1: TimeoutError: Serve application is not run"):
            server.start(tmp_path)
        assert server.log_path == tmp_path / "broken.log"
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ auth on vs off

FAKE_KEY = "isk_0123456789ab_" + "k" * 43

# A stand-in for `imgserve keys create`: records its arguments and the environment it got, prints the key last.
FAKE_KEYS_CLI = """
import json, os, sys
with open(os.environ["FAKE_RECORD"], "w") as out:
    json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("IMGSERVE_")}}, out)
print("created key for tenant bench (role analyst)")
print("store it now, it is not shown again:")
print(os.environ.get("FAKE_KEY_LINE", "@KEY@"))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
""".replace("@KEY@", FAKE_KEY)

# A stand-in for an imgserve server: ready at once; /v1/models wants the fake key when IMGSERVE_AUTH=required.
FAKE_SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        enforced = os.environ.get("IMGSERVE_AUTH") == "required"
        if self.path.startswith("/v1/models") and enforced and self.headers.get("Authorization") != "Bearer @KEY@":
            status, body = 401, {"error": "missing or invalid API key", "kind": "unauthenticated"}
        else:
            status, body = 200, {"default_model": "m", "models": []}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""".replace("@KEY@", FAKE_KEY)


def fake_keys(tmp_path: Path, server: str = "imgserve_grpc_auth") -> tuple[BenchKey, Path]:
    script = tmp_path / "fake_keys.py"
    script.write_text(FAKE_KEYS_CLI)
    return BenchKey(server, cli=[sys.executable, str(script)]), tmp_path / "keys-record.json"


def test_auth_servers_are_their_twins_with_auth_required() -> None:
    assert AUTH_PAIRS == {"imgserve_http_auth": "imgserve_http", "imgserve_grpc_auth": "imgserve_grpc"}
    for auth_name, twin in AUTH_PAIRS.items():
        assert SERVER_NAMES.index(auth_name) == SERVER_NAMES.index(twin) + 1  # measured right after its twin
        assert IMGSERVE_EXTRA_ARGS[auth_name] == IMGSERVE_EXTRA_ARGS[twin] == []
        assert IMGSERVE_ENV[auth_name] == {"IMGSERVE_AUTH": "required"} and twin not in IMGSERVE_ENV
        assert is_grpc(auth_name) == is_grpc(twin)
    assert (
        imgserve_command_line("imgserve_grpc_auth")
        == "IMGSERVE_AUTH=required imgserve serve --config serve_config.yaml"
    )
    assert imgserve_command_line("imgserve_grpc") == "imgserve serve --config serve_config.yaml"
    assert key_command_line() == "imgserve keys create --name bench --role analyst --tenant bench"
    assert parse_args(["--servers", "imgserve_grpc", "imgserve_grpc_auth"]).servers == [
        "imgserve_grpc",
        "imgserve_grpc_auth",
    ]


def test_auth_servers_are_built_with_a_key_to_make_and_send() -> None:
    names = ["imgserve_http", "imgserve_http_auth", "imgserve_grpc_auth"]
    plain, http_auth, grpc_auth = build_servers(names, Path("m.onnx"), Path("l.txt"), None)
    assert plain.auth is None and plain.env == {} and plain.client_sender is None
    assert http_auth.url.startswith("http://") and grpc_auth.url.startswith("grpc://")
    for server in (http_auth, grpc_auth):
        assert server.args[3::2][:2] == ["--http-port", "--grpc-port"]
        assert server.args[:3] + server.args[7:] == plain.args[:3] + plain.args[7:]  # the same but for the ports
        assert server.env == {"IMGSERVE_AUTH": "required"}
        assert server.auth is not None and server.auth.server == server.name and server.auth.value is None
        assert server.client_sender is None  # no key before the start: nothing made yet, nothing to send
        server.auth.value = FAKE_KEY  # what start() leaves there
        sender = server.client_sender
        assert isinstance(sender, functools.partial) and sender.keywords == {"api_key": FAKE_KEY}
        assert sender.func is (grpc_sender if server is grpc_auth else http_sender)


def test_bench_key_is_made_with_the_cli_in_a_database_of_its_own(tmp_path: Path) -> None:
    key, record = fake_keys(tmp_path)
    assert key.create({"FAKE_RECORD": str(record)}) == FAKE_KEY and key.value == FAKE_KEY
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["keys", "create", "--name", "bench", "--role", "analyst", "--tenant", "bench"]
    assert key.folder is not None and key.folder.is_dir()
    assert seen["env"]["IMGSERVE_DATABASE_URL"] == f"sqlite:///{key.folder / 'jobs.sqlite3'}" == key.database_url
    assert seen["env"]["IMGSERVE_AUTH"] == "required"
    assert key.env() == {"IMGSERVE_AUTH": "required", "IMGSERVE_DATABASE_URL": key.database_url}
    folder = key.folder
    key.create({"FAKE_RECORD": str(record)})  # a second start: a fresh database
    assert key.folder != folder and not folder.exists()
    key.cleanup()
    assert key.value is None and key.folder is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FAKE_EXIT": "2"}, "exited with 2: " + "isk_[redacted]"),
        ({"FAKE_KEY_LINE": "ok"}, "did not print a key"),
        ({"FAKE_KEY_LINE": "isk_with space"}, "cannot be sent as a Bearer token"),
    ],
)
def test_bench_key_failures_say_why_without_the_key(tmp_path: Path, env: dict[str, str], message: str) -> None:
    key, record = fake_keys(tmp_path)
    with pytest.raises(RuntimeError, match=re.escape(message)) as failure:
        key.create({"FAKE_RECORD": str(record), **env})
    assert FAKE_KEY.split("_", 2)[2] not in str(failure.value) and "imgserve_grpc_auth" in str(failure.value)
    assert key.folder is None and key.value is None  # a failed start leaves no database behind
    assert parse_key(f"noise\n{FAKE_KEY}\n\n") == FAKE_KEY
    assert scrub(f"key {FAKE_KEY} refused") == "key isk_[redacted] refused"


def test_auth_server_start_makes_the_key_passes_it_and_checks_it_is_enforced(tmp_path: Path) -> None:
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    key, record = fake_keys(tmp_path, "imgserve_http_auth")
    port = free_port()
    server = Server(
        "imgserve_http_auth",
        [sys.executable, str(tmp_path / "fake_server.py"), str(port)],
        url=f"http://127.0.0.1:{port}",
        ready_url=f"http://127.0.0.1:{port}/ready",
        env={"FAKE_RECORD": str(record)},
        start_timeout=30,
        auth=key,
    )
    try:
        server.start(tmp_path / "logs")  # the fake refuses /v1/models without the key only if it got IMGSERVE_AUTH
        assert key.value == FAKE_KEY and key.folder is not None
        assert isinstance(server.client_sender, functools.partial)
        folder = key.folder
    finally:
        server.stop(timeout=10)
    assert not folder.exists() and key.value is None and server.client_sender is None
    # The same server without auth: a call without a key is answered, so the check refuses to measure it.
    session = ProcessSession(
        [sys.executable, str(tmp_path / "fake_server.py"), str(port)],
        log=tmp_path / "off.log",
        ready_url=f"http://127.0.0.1:{port}/ready",
        env={"IMGSERVE_AUTH": "off"},
    )
    session.start(timeout_s=30)
    try:
        with pytest.raises(RuntimeError, match="auth is not enforced"):
            verify_enforced(f"http://127.0.0.1:{port}", FAKE_KEY, timeout=5)
        session.stop(timeout_s=10)
        session.env["IMGSERVE_AUTH"] = "required"
        session.start(timeout_s=30)
        with pytest.raises(RuntimeError, match="the bench key was refused"):
            verify_enforced(f"http://127.0.0.1:{port}", "isk_0123456789ab_" + "w" * 43, timeout=5)
    finally:
        session.stop(timeout_s=10)


def auth_levels(p50_c1: float, *rates: float) -> dict[str, dict]:
    out = levels(*rates)
    out["1"]["p50_ms"] = p50_c1
    return out


AUTH_SERVERS = {
    **SERVERS,
    "imgserve_grpc": {"web": auth_levels(5.0, 45.0, 160.0, 200.0, 195.0)},
    "imgserve_grpc_auth": {"web": auth_levels(5.3, 44.0, 158.0, 190.0, 196.0), "args": ["serve"]},
    "imgserve_http_auth": {"web": {}, "camera": {}, "error": "RuntimeError: imgserve_http_auth: auth is not enforced"},
}


def test_auth_overhead_sets_p50_and_peak_side_by_side() -> None:
    rows = auth_overhead(AUTH_SERVERS)
    assert len(rows) == 1  # http_auth was not measured; grpc_auth has no camera levels
    row = rows[0]
    assert (row["server"], row["baseline"], row["mix"]) == ("imgserve_grpc_auth", "imgserve_grpc", "web")
    assert (row["p50_c1_off_ms"], row["p50_c1_on_ms"], row["p50_c1_delta_ms"]) == (5.0, 5.3, 0.3)
    assert row["p50_goal_ms"] == 0.5 and row["p50_goal_met"] is True
    assert row["peak_off"] == {"concurrency": 32, "images_per_s": 200.0}
    assert row["peak_on"] == {"concurrency": 64, "images_per_s": 196.0} and row["peak_change_pct"] == -2.0
    slow = {**AUTH_SERVERS, "imgserve_grpc_auth": {"web": auth_levels(5.6, 44.0, 158.0, 190.0, 196.0)}}
    assert auth_overhead(slow)[0]["p50_goal_met"] is False
    assert auth_overhead(SERVERS) == []
    # The auth servers change neither the headline ratios nor the placement comparison.
    fast = with_c16(AUTH_SERVERS, imgserve_grpc={"images_per_s": 160.0}, imgserve_grpc_auth={"images_per_s": 999.0})
    ratios, peaks = compute_ratios(fast, LIMIT)
    assert (
        peaks["web"]["imgserve"]["server"] == "imgserve_grpc" and peaks["web"]["best_c16"]["server"] == "imgserve_grpc"
    )


def test_markdown_shows_auth_on_vs_off() -> None:
    assert "Auth overhead" not in render_markdown(report())  # a report without auth servers: no section
    data = report()
    data["servers"] = AUTH_SERVERS
    data["auth_overhead"] = auth_overhead(AUTH_SERVERS)
    servers = ["imgserve_grpc", "imgserve_grpc_auth", "imgserve_http", "imgserve_http_auth"]
    data["settings"] = {**data["settings"], **settings_record(Plan.from_args(parse_args([])), 1, "make bench", servers)}
    assert data["settings"]["auth"]["pairs"] == AUTH_PAIRS
    assert data["settings"]["imgserve_commands"]["imgserve_grpc_auth"].startswith("IMGSERVE_AUTH=required imgserve")
    section = render_markdown(data)
    assert "#### Auth overhead: IMGSERVE_AUTH=required vs off" in section
    assert "`imgserve keys create --name bench --role analyst --tenant bench`" in section
    assert (
        "| imgserve_grpc_auth | imgserve_grpc | web | 5.00 | 5.30 | +0.30 | c32: 200.0 | c64: 196.0 | -2.0 % | met |"
        in section
    )
    assert (
        "| imgserve_http_auth | imgserve_http | – | | | | | | | not measured: RuntimeError: imgserve_http_auth: auth"
        in section
    )
    assert "| imgserve_grpc_auth | 1 | 44.0 | 5.3 |" in section  # and its levels in the mix table, after its twin's
    assert section.index("| imgserve_grpc | 1 |") < section.index("| imgserve_grpc_auth | 1 |")
    assert (
        "imgserve_http_auth, imgserve_grpc_auth: `IMGSERVE_AUTH=required imgserve serve --config serve_config.yaml`"
        in section
    )


def test_tree_monitor_splits_its_peak_by_process(tmp_path: Path) -> None:
    """The bench's memory figure comes with the processes that made it: the per-process split adds up to the
    peak, and a child holding 60 MB shows up under its executable's name (a link named for this test)."""
    child_python = tmp_path / "imgserve-monitor-child"
    child_python.symlink_to(sys.executable)
    hold = "import sys, time; b = bytearray(b'x') * (60 * 2**20); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([str(child_python), "-S", "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        monitor = TreeMonitor(os.getpid(), interval=0.1).start()
        _, peak, _ = monitor.mark()
        monitor.stop()
    finally:
        child.kill()
        child.wait()
    parts = monitor.last_peak_parts
    assert sum(parts.values()) == pytest.approx(peak, abs=0.5)
    assert parts.get("imgserve-monitor-child", 0.0) >= 60, parts


@pytest.mark.skipif(sys.platform != "linux", reason="psutil reads PSS from /proc on Linux only")
def test_tree_monitor_reads_pss_at_its_peak(tmp_path: Path) -> None:
    """Beside the RSS sum (a page shared by N processes counted N times) the monitor gives the tree's PSS at the
    moment of its peak: two children holding 60 MB each are in it in full, and the pages every process shares
    (the interpreter, libc) count once in all, so the PSS sum is below the RSS sum."""
    hold = "import sys, time; b = bytearray(b'x') * (60 * 2**20); print('ready', flush=True); time.sleep(60)"
    children = [subprocess.Popen([sys.executable, "-S", "-c", hold], stdout=subprocess.PIPE, text=True) for _ in "ab"]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        monitor = TreeMonitor(os.getpid(), interval=0.1).start()
        _, peak, _ = monitor.mark()
        monitor.stop()
    finally:
        for child in children:
            child.kill()
            child.wait()
    pss = monitor.last_peak_pss
    assert pss is not None and 120 <= pss < peak, (pss, peak)


def test_the_in_process_loop_keeps_its_callers_busy_and_counts_only_after_the_warm_up() -> None:
    from loadtests.in_process import closed_loop

    class Service:
        def __init__(self) -> None:
            self.seen: list[bytes] = []
            self.in_flight = self.most = 0

        async def classify(self, images: list[bytes]) -> list[None]:
            self.seen += images
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            return [None]

    service = Service()
    figures = asyncio.run(closed_loop(service, [b"a", b"b", b"c"], concurrency=3, seconds=0.3))
    assert service.most == 3 and set(service.seen) == {b"a", b"b", b"c"}
    # ~100 calls a second per caller: the measured part alone, not the warm-up's calls too
    assert 150 < figures["images_per_s"] < 330 and figures["images_per_s"] * 0.3 < 0.7 * len(service.seen)


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's HTTP and gRPC ports are drawn one after the other before either is bound: the same draw twice made
    `imgserve serve` refuse to start ("HTTP and gRPC both on port ..."), and every test of that server errored."""
    draws = iter([31990, 31990, 31990, 31991])
    monkeypatch.setattr("loadtests.server_process.random.randrange", lambda start, stop: next(draws))
    assert free_port() == 31990 and free_port() == 31991


def test_a_smoke_run_keeps_the_full_runs_results_and_tables() -> None:
    """`make bench BENCH_ARGS=--quick` rewrote loadtests/results/bench.json and BENCHMARKS.md's generated tables,
    which the hand-written text and the README cite, with a one-server smoke run."""
    out, markdown = result_files(parse_args(["--quick"]), quick=True)
    assert out.name == "bench_quick.json" and markdown is None
    out, markdown = result_files(parse_args([]), quick=False)
    assert out.name == "bench.json" and markdown is not None and markdown.name == "BENCHMARKS.md"
    assert result_files(parse_args(["--quick", "--markdown", "x.md"]), quick=True)[1] == Path("x.md")
    assert result_files(parse_args(["--no-markdown"]), quick=False)[1] is None


def test_the_gates_wait_budget_and_total_cover_the_whole_run() -> None:
    """measure_rounds reset the gate's counter for every server and round: the 600 s bound restarted for each, and
    the reported 'waited in all' was the last server's."""
    import inspect
    import time

    from loadtests.bench import measure

    assert "waited_s = 0" not in inspect.getsource(measure.measure_rounds)
    gate = machine.QuietGate(max_steal_pct=-1, max_wait_s=0.4, max_total_wait_s=0.5, sample_s=0.05)
    started = time.monotonic()
    gate.wait()
    first_took, first = time.monotonic() - started, gate.waited_s
    started = time.monotonic()
    gate.wait()
    second_took = time.monotonic() - started
    # the second wait gets only what the first left of the run's budget (~0.1 s of 0.5), not its own 0.4 s
    assert first > 0 and second_took < first_took, (first_took, second_took)
