"""imgserve's stages with no serving layer: `InferenceService.classify` called in this process (the local
placement's stages, built from serve_config.yaml as `make serve`'s Ingress replica builds them), closed loop, one
image per call. Against `make bench`'s HTTP and gRPC figures this says what the serving layer (Ray's replica,
uvicorn / grpc, FastAPI, the middlewares, auth, metrics, the access log) costs per request, and how far imgserve
could go on this machine with none of it.

    .venv/bin/python -m loadtests.in_process --mixes web camera --concurrency 1 16 64 --seconds 20

Each level runs `--seconds` after a warm-up; figures: images/s, process CPU-ms per image, cores used.
"""

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from loadtests.images import DATA_DIR, load_mix
from loadtests.server_process import PROJECT_ROOT


async def closed_loop(service: Any, images: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` callers, each classifying the next image as soon as its last answer is in, for `seconds`."""
    done = 0
    deadline = 0.0

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await service.classify([images[i % len(images)]])
            done += 1
            i += concurrency

    deadline = time.perf_counter() + min(seconds, 3.0)  # warm-up: batches, arenas, thread pools
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + seconds
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "images_per_s": round(done / wall, 1),
        "cpu_ms_per_image": round(1000.0 * cpu / max(done, 1), 2),
        "cores": round(cpu / wall, 2),
    }


def make_serve_service() -> Any:
    """The service `make serve`'s Ingress replica builds: serve_config.yaml's imgserve args with the local placement
    applied as `imgserve serve` applies it (greedy batching, every model whose weights are present)."""
    from serving.config.app_args import AppArgs
    from serving.placement import build_service, compose
    from serving.serve_file import imgserve_apps
    from serving.server import load_serve_config

    config = load_serve_config(PROJECT_ROOT / "serve_config.yaml", placement="local")
    args = {k: v for k, v in imgserve_apps(config)[0]["args"].items() if k != "direct_ingress"}  # no listeners here
    return build_service(compose(AppArgs.model_validate(args)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixes", nargs="+", default=["web", "camera"], choices=["web", "camera"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    service = make_serve_service()
    results: dict[str, dict[str, Any]] = {}
    for mix in args.mixes:
        images = load_mix(mix, args.data).images
        for concurrency in args.concurrency:
            figures = asyncio.run(closed_loop(service, images, concurrency, args.seconds))
            results.setdefault(mix, {})[str(concurrency)] = figures
            print(f"{mix} c{concurrency}: {figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
