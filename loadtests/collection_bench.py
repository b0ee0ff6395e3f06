"""Collection analysis throughput and memory: `imgserve collection analyze` (Ray Data) against the same stages
through `/v1/batch` on a server started here, in one run, on a collection built from ../shared/data.

    python -m loadtests.collection_bench --images 5000 [--big 20000] [--skip-batch]

The collection: the web photos (imagenet-samples), the camera photos (exif-samples' JPEGs) and the BIQ2021 photos,
repeated under new names (symbolic links) to the size asked. Both paths run classification, quality and metadata.
Reported per run: images/s (wall), CPU seconds and cores of the whole process tree (Ray's daemons and workers
included), peak RSS of the tree (sampled every 0.5 s). `--big N` runs the CLI again on N images (the same files
repeated) to show whether peak memory grows with the collection. Writes loadtests/results/collection.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.monitor import TreeMonitor
from loadtests.server_process import ServerProcess
from tests.paths import DATA as SHARED_DATA

RESULTS = Path(__file__).resolve().parent / "results" / "collection.json"
STAGES = ["classification", "quality", "metadata"]


def source_photos() -> list[Path]:
    photos = sorted((SHARED_DATA / "imagenet-samples").glob("*.JPEG"))
    photos += sorted(p for p in (SHARED_DATA / "exif-samples" / "jpg").rglob("*.jpg") if "invalid" not in p.parts)
    photos += sorted((SHARED_DATA / "biq2021-train" / "images").glob("*.jpg"))
    return photos


def build_collection(folder: Path, count: int) -> Path:
    """`count` images as links named NNNNNN_<original name> in `folder`."""
    photos = source_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        (folder / f"{i:06d}_{photo.name}").symlink_to(photo)
    return folder


def _measure(root_pid: int, wait: Any) -> dict[str, Any]:
    monitor = TreeMonitor(root_pid).start()
    cpu0, _, _ = monitor.mark()
    started = time.perf_counter()
    detail = wait()
    seconds = time.perf_counter() - started
    cpu1, peak, _ = monitor.mark()
    monitor.stop()
    cpu = cpu1 - cpu0
    return {"seconds": round(seconds, 1), "cpu_s": round(cpu, 1), "cores": round(cpu / seconds, 2),
            "peak_rss_mb": round(peak, 0), **detail}  # fmt: skip


def run_cli(folder: Path, count: int, tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "IMGSERVE_DATABASE_URL": f"sqlite:///{tmp}/cli-{count}.sqlite"}
    command = [sys.executable, "-m", "serving.cli", "collection", "analyze", str(folder), "--name", f"bench-{count}"]
    log = (tmp / f"cli-{count}.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait() -> dict[str, Any]:
        if proc.wait() != 0:
            raise RuntimeError(f"collection analyze failed: see {log.name}")
        return {}

    result = _measure(proc.pid, wait)
    result["images_per_s"] = round(count / result["seconds"], 2)
    return result


def run_batch(folder: Path, count: int, tmp: Path) -> dict[str, Any]:
    server = ServerProcess(tmp / "server", env={"IMGSERVE_BATCH_ALLOWED_ROOT": str(SHARED_DATA),
                                                "IMGSERVE_DATABASE_URL": f"sqlite:///{tmp}/batch.sqlite"})  # fmt: skip
    (tmp / "server").mkdir(exist_ok=True)
    server.start()
    try:
        # The links' targets: file:// URIs that leave the allowed root through a link are refused.
        uris = [f"file://{path.resolve()}" for path in sorted(folder.iterdir())]

        def wait() -> dict[str, Any]:
            response = httpx.post(f"{server.http_url}/v1/batch", json={"uris": uris, "stages": STAGES}, timeout=300)
            response.raise_for_status()
            job = response.json()
            while job["status"] not in ("completed", "failed", "cancelled"):
                time.sleep(1.0)
                job = httpx.get(job["status_url"] if job["status_url"].startswith("http") else
                                f"{server.http_url}{job['status_url']}", timeout=30).json()  # fmt: skip
            return {"done": job["counts"]["done"], "failed": job["counts"]["failed"]}

        assert server.proc is not None
        result = _measure(server.proc.pid, wait)
    finally:
        server.stop()
    result["images_per_s"] = round(count / result["seconds"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--big", type=int, default=0, help="also run the CLI on this many images (memory growth)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "imagenet-samples").is_dir():
        print(f"skipped: {SHARED_DATA} is absent", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"images": args.images, "stages": STAGES, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="imgserve-collection-bench-") as tmp_name:
        tmp = Path(tmp_name)
        folder = build_collection(tmp / "photos", args.images)
        results["cli"] = run_cli(folder, args.images, tmp)
        print("cli", results["cli"], flush=True)
        if not args.skip_batch:
            results["batch"] = run_batch(folder, args.images, tmp)
            print("batch", results["batch"], flush=True)
            results["cli_vs_batch"] = round(results["cli"]["images_per_s"] / results["batch"]["images_per_s"], 2)
        if args.big:
            big = build_collection(tmp / "big", args.big)
            results["cli_big"] = {"images": args.big, **run_cli(big, args.big, tmp)}
            print("cli_big", results["cli_big"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
