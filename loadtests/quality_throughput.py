"""Quality-only throughput, `/v1/analyze?fields=quality`, of this tree against an earlier commit, in one run.

    python -m loadtests.quality_throughput --baseline-ref 22a6545 [--seconds 30] [--rounds 3] [--concurrency 8]
    # make bench-quality BASELINE_REF=22a6545

Each server is a real `imgserve serve` (local placement, as `make serve` runs it) started from its own checkout: the
baseline from a `git worktree` of `--baseline-ref` (same virtualenv, its own code first on PYTHONPATH), then this
tree, alternating for --rounds pairs (the median is reported); one at a time, same images (held-out BIQ2021
photos, 512x512 JPEG, as stored), same closed-loop client (`loadtests.closed_loop.run_level`, fixed concurrency), a
warm-up first. Prints images/s and p50/p99 for both and
their ratio; the machine's other load changes both alike only within one run, so compare figures of the same run.
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np

from loadtests.closed_loop import LevelResult, Send, run_level
from loadtests.server_process import PROJECT_ROOT, READY_PATH, ProcessSession, free_port
from serving.config.settings import ServerSettings
from tooling.quality.biq import load_biq, split


@asynccontextmanager
async def quality_sender(url: str, concurrency: int) -> AsyncIterator[Send]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def send(image: bytes) -> bool:
            try:
                response = await client.post("/v1/analyze", content=image, params={"fields": "quality"})
                return response.status_code == 200 and "quality" in response.json()["results"][0]
            except httpx.HTTPError:
                return False

        yield send


def measure(tree: Path, images: list[bytes], seconds: float, concurrency: int, log: Path) -> LevelResult:
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "serving.cli", "serve", "--config", str(tree / "serve_config.yaml")]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--placement", "local"]
    session = ProcessSession(
        command,
        log=log,
        ready_url=f"http://127.0.0.1:{http_port}{READY_PATH}",
        env={
            "PYTHONPATH": str(tree),
            "PYTHONUNBUFFERED": "1",
            "IMGSERVE_AUTH": "off",
            "IMGSERVE_WEIGHTS_DIR": str(ServerSettings.from_env().weights_dir),  # ../shared is not beside a worktree
        },
        cwd=tree,
        name=f"imgserve ({tree.name})",
    )
    session.start(300)
    try:
        url = f"http://127.0.0.1:{http_port}"
        asyncio.run(run_level(url, images, concurrency, min(10.0, seconds), quality_sender))  # warm-up
        return asyncio.run(run_level(url, images, concurrency, seconds, quality_sender))
    finally:
        session.stop(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.quality_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", required=True, help="git commit/branch to compare against")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--images", type=int, default=200, help="held-out BIQ2021 photos sent round-robin")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/this-tree pairs, alternating")
    args = parser.parse_args(argv)
    images = [p.read_bytes() for p, _ in split(load_biq())[1][: args.images]]
    with tempfile.TemporaryDirectory(prefix="imgserve-quality-bench-") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.baseline_ref], cwd=PROJECT_ROOT, check=True
        )
        try:
            runs: dict[str, list[LevelResult]] = {f"baseline {args.baseline_ref}": [], "this tree": []}
            for k in range(args.rounds):  # alternate, so drift in the machine's speed hits both alike
                for name, tree in zip(runs, (base, PROJECT_ROOT), strict=True):
                    log = Path(tmp) / f"{k}-{'a' if tree == base else 'b'}.log"
                    runs[name].append(measure(tree, images, args.seconds, args.concurrency, log))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=PROJECT_ROOT, check=False)
    print(f"concurrency {args.concurrency}, {args.seconds:g} s per round, {args.rounds} rounds (alternating)\n")
    print("| server | images/s per round | median images/s | p50 ms | p99 ms | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    medians = {}
    for name, rs in runs.items():
        medians[name] = float(np.median([r.images_per_s for r in rs]))
        rates = ", ".join(f"{r.images_per_s}" for r in rs)
        p50, p99 = np.median([r.p50_ms for r in rs]), np.median([r.p99_ms for r in rs])
        print(f"| {name} | {rates} | {medians[name]:.1f} | {p50:.0f} | {p99:.0f} | {sum(r.errors for r in rs)} |")
    a, b = medians.values()
    print(f"\nratio this tree / baseline (medians): {b / max(a, 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
