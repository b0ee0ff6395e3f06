"""Conversion speed and memory: imgserve against a plain-Pillow baseline doing the same job, in one run.

    python -m loadtests.convert_bench                      # all parts, ~6 min on 2 cores (make bench-convert)
    python -m loadtests.convert_bench --parts libraries bulk --seconds 10 --json out.json

Jobs, on the camera mix (`loadtests.images`, JPEGs of 3 MP and more): `webp2048` (JPEG -> WebP quality 80, longer
side at most 2048) and `thumb512` (JPEG -> JPEG quality 80, longer side at most 512). The baseline
(`loadtests.baselines.pillow_convert`) decodes at full size, turns upright, resizes (Lanczos)
and encodes with Pillow's defaults.

- libraries: one thread, each library in its own process (peak RSS is that process's, counted from after the
  harness's set-up: `_reset_peak`): Pillow as the baseline,
  Pillow with draft (reduced-scale JPEG decode), OpenCV (reduced decode + imencode), and libvips through
  `pipelines.convert` (what imgserve runs).
- bulk: the same files converted by 2 threads in one process: the baseline vs `pipelines.convert` (what
  `imgserve convert DIR` and batch jobs run).
- cli: bulk as a user runs it, each side a fresh process over the same folder (the camera mix five times, 100
  files, read from disk): `imgserve convert DIR` (the installed command, 2 workers) against the plain-Pillow script
  `loadtests.baselines.pillow_convert` (2 threads), alternated `--rounds` times; wall time (start-up included) and
  the process's peak RSS (read by a small launcher process, `_peak_of`). Unlike `bulk`, no harness memory is shared
  by both sides.
- online: `POST /v1/convert` on a real `imgserve serve` vs the same job on the naive FastAPI + Pillow server,
  closed loop at `--concurrency` (8); peak RSS of each server's whole process tree (Ray included for imgserve) and
  its rise over the idle server.

Each figure is images/s and peak memory; ratios are imgserve / baseline from the same run.
"""

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

JOBS: dict[str, dict[str, Any]] = {
    "webp2048": {"format": "webp", "quality": 80, "max_side": 2048},
    "thumb512": {"format": "jpeg", "quality": 80, "max_side": 512},
}
LIBRARIES = ("pillow", "pillow-draft", "opencv", "imgserve")


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its peak since the last `_reset_peak` (VmHWM), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """Start the peak (VmHWM) from the current RSS: the harness's own setup (loading the camera mix fully decodes
    every candidate photo to check it) peaked at ~200 MB in every worker, above what most converters reach, and
    `getrusage`'s peak cannot be reset (runs before 2026-12-06 reported that floor for imgserve)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def converter(library: str, job: dict[str, Any]) -> Callable[[bytes], bytes]:
    fmt, quality, side = job["format"], job["quality"], job["max_side"]
    if library == "pillow":
        from loadtests.baselines.pillow_convert import pillow_convert

        return lambda data: pillow_convert(data, fmt, quality, side)
    if library == "pillow-draft":
        from PIL import Image, ImageOps

        def draft(data: bytes) -> bytes:
            image = Image.open(io.BytesIO(data))
            image.draft("RGB", (side, side))
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, {"webp": "WEBP", "jpeg": "JPEG"}[fmt], quality=quality)
            return out.getvalue()

        return draft
    if library == "opencv":
        import cv2
        import numpy as np

        cv2.setNumThreads(1)

        def opencv(data: bytes) -> bytes:
            probe = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
            longer = max(probe.shape[:2]) * 8
            flag = cv2.IMREAD_COLOR
            for scale, reduced in ((4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if longer // scale >= side:
                    flag = reduced
                    break
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
            h, w = bgr.shape[:2]
            if max(h, w) > side:
                f = side / max(h, w)
                bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
            params = [cv2.IMWRITE_WEBP_QUALITY if fmt == "webp" else cv2.IMWRITE_JPEG_QUALITY, quality]
            return cv2.imencode(f".{fmt}", bgr, params)[1].tobytes()

        return opencv
    from pipelines.convert import ConvertOptions, convert_image
    from pipelines.limits import DecodeLimits

    options = ConvertOptions.parse(**job)
    return lambda data: convert_image(data, options, DecodeLimits()).data


def worker(library: str, job_name: str, threads: int, seconds: float) -> dict[str, Any]:
    """Convert the camera mix over and over for `seconds` with `threads` threads (run in its own process)."""
    from loadtests.images import load_mix

    images = load_mix("camera").images
    convert = converter(library, JOBS[job_name])
    if library == "imgserve":  # the process settings `imgserve convert --workers N` makes
        from serving.memory import bound_decodes_for_bulk, tune_malloc_for_bulk

        tune_malloc_for_bulk()
        bound_decodes_for_bulk(threads)
    convert(images[0])  # imports and first-call setup outside the measurement
    _reset_peak()
    start_rss = _rss_mb()
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() < deadline:
            list(pool.map(convert, images))
            done += len(images)
    elapsed = time.perf_counter() - started
    peak = _rss_mb("VmHWM")
    return {
        "images_per_s": round(done / elapsed, 2),
        "peak_rss_mb": round(peak, 1),
        "rise_mb": round(peak - start_rss, 1),
    }


def run_worker(library: str, job: str, threads: int, seconds: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "loadtests.convert_bench", "--worker", library, job, str(threads), str(seconds)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=seconds * 20 + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def libraries(seconds: float) -> dict[str, Any]:
    return {job: {lib: run_worker(lib, job, 1, seconds) for lib in LIBRARIES} for job in JOBS}


def bulk(seconds: float) -> dict[str, Any]:
    return {job: {lib: run_worker(lib, job, 2, seconds) for lib in ("pillow", "imgserve")} for job in JOBS}


# Runs the command and prints its peak RSS: Linux starts a forked child's peak at its parent's RSS, and exec keeps
# it, so the measuring process must be smaller than what it measures (this one, ~10 MB, is).
_LAUNCHER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
sys.exit(done.returncode)
"""


def _peak_of(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MB) of a command run to completion in its own process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
    return elapsed, float(done.stdout.split()[-1])


def cli(rounds: int, copies: int = 5) -> dict[str, Any]:
    """`imgserve convert DIR` against the plain-Pillow bulk script, fresh processes, same folder (module docstring)."""
    from loadtests.images import camera_paths

    paths = camera_paths()
    imgserve = str(Path(sys.executable).with_name("imgserve"))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="convert-cli-") as tmp:
        source = Path(tmp) / "photos"
        source.mkdir()
        for copy in range(copies):
            for i, path in enumerate(paths):
                (source / f"c{copy}_{i:03d}{path.suffix.lower()}").symlink_to(path)
        count = copies * len(paths)
        for name, job in JOBS.items():
            fmt, quality, side = job["format"], str(job["quality"]), str(job["max_side"])
            target = Path(tmp) / "out"
            commands = {
                "pillow": [sys.executable, "-m", "loadtests.baselines.pillow_convert", str(source), str(target),
                           "--format", fmt, "--quality", quality, "--max-side", side],
                "imgserve": [imgserve, "convert", str(source), "--out", str(target), "--quiet",
                             "--to", fmt, "--quality", quality, "--max-side", side],
            }  # fmt: skip
            runs: dict[str, list[tuple[float, float]]] = {"pillow": [], "imgserve": []}
            for _ in range(rounds):
                for side_name, command in commands.items():
                    runs[side_name].append(_peak_of(command))
                    shutil.rmtree(target)
            out[name] = {
                side_name: {
                    "images": count,
                    "images_per_s": round(count / sorted(t for t, _ in got)[len(got) // 2], 2),
                    "peak_rss_mb": round(sorted(m for _, m in got)[len(got) // 2], 1),
                    "rounds": [{"seconds": round(t, 2), "peak_rss_mb": round(m, 1)} for t, m in got],
                }
                for side_name, got in runs.items()
            }
    return out


@asynccontextmanager
async def _poster(url: str, path: str, params: dict[str, Any], concurrency: int):  # noqa: ANN202
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def send(image: bytes) -> bool:
            try:
                return (await client.post(path, content=image, params=params)).status_code == 200
            except httpx.HTTPError:
                return False

        yield send


def _measure_server(name: str, root_pid: int, url: str, path: str, concurrency: int, seconds: float) -> dict:
    from loadtests.bench.monitor import TreeMonitor
    from loadtests.closed_loop import run_level
    from loadtests.images import load_mix

    images = load_mix("camera").images
    monitor = TreeMonitor(root_pid).start()
    time.sleep(2)
    _, idle_rss, _ = monitor.mark()
    results: dict[str, Any] = {}
    for job_name, params in JOBS.items():
        sender = lambda u, c, p=params: _poster(u, path, p, c)  # noqa: E731
        asyncio.run(run_level(url, images[:4], concurrency, 3, sender))  # warm-up
        monitor.mark()
        level = asyncio.run(run_level(url, images, concurrency, seconds, sender))
        _, peak, _ = monitor.mark()
        results[job_name] = {
            "images_per_s": level.images_per_s,
            "p50_ms": level.p50_ms,
            "p99_ms": level.p99_ms,
            "errors": level.errors,
            "peak_rss_mb": round(peak, 1),
            "rise_mb": round(peak - idle_rss, 1),
        }
    monitor.stop()
    print(f"  {name}: {results}", flush=True)
    return {"idle_rss_mb": round(idle_rss, 1), **results}


def online(seconds: float, concurrency: int) -> dict[str, Any]:
    from loadtests.server_process import ProcessSession, ServerProcess, free_port

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        uvicorn = str(Path(sys.executable).parent / "uvicorn")
        command = [uvicorn, "--factory", "loadtests.baselines.naive_convert_server:create_app", "--port", str(port)]
        naive = ProcessSession(command, log=Path(tmp) / "naive.log", ready_url=f"http://127.0.0.1:{port}/health")
        naive.start(120)
        try:
            pid = naive.proc.pid  # type: ignore[union-attr]
            url = f"http://127.0.0.1:{port}"
            out["pillow"] = _measure_server("pillow", pid, url, "/convert", concurrency, seconds)
        finally:
            naive.stop(30)
        with ServerProcess(Path(tmp)) as server:
            pid = server.proc.pid  # type: ignore[union-attr]
            out["imgserve"] = _measure_server("imgserve", pid, server.http_url, "/v1/convert", concurrency, seconds)
    return out


def ratios(section: dict[str, Any], by_server: bool) -> dict[str, Any]:
    """imgserve / baseline per job: speed, peak memory, memory rise. `by_server`: section[server][job] (online),
    else section[job][library] (bulk)."""
    table = {}
    for job in JOBS:
        base = section["pillow"][job] if by_server else section[job]["pillow"]
        ours = section["imgserve"][job] if by_server else section[job]["imgserve"]
        table[job] = {
            "speed": round(ours["images_per_s"] / base["images_per_s"], 2),
            "peak_memory": round(ours["peak_rss_mb"] / base["peak_rss_mb"], 2),
        }
        if "rise_mb" in ours:
            table[job]["memory_rise"] = round(ours["rise_mb"] / max(base["rise_mb"], 1.0), 2)
    return table


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        library, job, threads, seconds = sys.argv[2:6]
        print(json.dumps(worker(library, job, int(threads), float(seconds))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["libraries", "bulk", "cli", "online"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the cli part (default 3; medians)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement time per figure (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="online clients (default 8)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report: dict[str, Any] = {"cpu": os.cpu_count(), "seconds": args.seconds}
    if "libraries" in args.parts:
        report["libraries"] = libraries(args.seconds)
        print(json.dumps(report["libraries"], indent=1), flush=True)
    if "bulk" in args.parts:
        report["bulk"] = bulk(args.seconds)
        report["bulk_ratios"] = ratios(report["bulk"], by_server=False)
        print(json.dumps({"bulk": report["bulk"], "ratios": report["bulk_ratios"]}, indent=1), flush=True)
    if "cli" in args.parts:
        report["cli"] = cli(args.rounds)
        report["cli_ratios"] = ratios(report["cli"], by_server=False)
        print(json.dumps({"cli": report["cli"], "ratios": report["cli_ratios"]}, indent=1), flush=True)
    if "online" in args.parts:
        report["online"] = online(args.seconds, args.concurrency)
        report["online_ratios"] = ratios(report["online"], by_server=True)
        print(json.dumps({"online_ratios": report["online_ratios"]}, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # a missing folder lost a 7-minute run's JSON
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
