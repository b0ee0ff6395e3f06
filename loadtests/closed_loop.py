"""Closed-loop load generator: N concurrent clients, each sending one image and waiting for the answer.

    python -m loadtests.closed_loop --url http://127.0.0.1:8000 --concurrency 1 16 --seconds 20
    python -m loadtests.closed_loop --url grpc://127.0.0.1:9000 --concurrency 1 16 --seconds 20
    IMGSERVE_API_KEY=isk_... python -m loadtests.closed_loop --url ...   # a server with IMGSERVE_AUTH=required

Reports images/s, p50/p99 latency and errors per concurrency, as a table and (with --json) JSON.
Clients are asyncio tasks over one connection pool per level (HTTP: loadtests.raw_http, a wrk-like keep-alive
client; httpx took 0.2-0.65 of the 2 cores it shared with the server), so the generator itself stays cheap: it
reports its own CPU time so a reader can check that it was not the bottleneck.
"""

import argparse
import asyncio
import functools
import json
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loadtests.raw_http import raw_http_client
from serving.client.auth import API_KEY_ENV, auth_headers, auth_metadata, resolve_api_key

OCTET = {"Content-Type": "application/octet-stream"}
DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-samples"


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float


def load_images(folder: Path, limit: int) -> list[bytes]:
    files = sorted(folder.glob("*.JPEG")) or sorted(folder.glob("*.jp*g"))
    if not files:
        raise SystemExit(f"no JPEG files in {folder}")
    return [f.read_bytes() for f in files[:limit]]


Send = Callable[[bytes], Awaitable[bool]]
# A sender factory: (url, concurrency) -> async context manager yielding `send`. `loadtests.bench` adds its own
# for the baseline servers; `run_level` picks http_sender or grpc_sender from the URL when none is given.
SenderFactory = Callable[[str, int], AbstractAsyncContextManager[Send]]


@asynccontextmanager
async def http_sender(url: str, concurrency: int, api_key: str | None = None) -> AsyncIterator[Send]:
    """POST /v1/classify, one image, top_k 1; with `api_key`, `Authorization: Bearer <key>` on every request."""
    async with raw_http_client(url, concurrency, {**OCTET, **auth_headers(api_key)}) as client:

        async def send(image: bytes) -> bool:
            response = await client.post("/v1/classify?top_k=1", image)
            return response is not None and response.status == 200

        yield send


@asynccontextmanager
async def grpc_sender(url: str, concurrency: int, api_key: str | None = None) -> AsyncIterator[Send]:
    """ImageService.Classify, one image, top_k 1; with `api_key`, `authorization: Bearer <key>` metadata."""
    import grpc

    from serving.grpc.stubs import load

    pb, pb_grpc = load("image_service_pb2"), load("image_service_pb2_grpc")
    async with grpc.aio.insecure_channel(url.removeprefix("grpc://")) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        metadata = auth_metadata(api_key)

        async def send(image: bytes) -> bool:
            try:
                await stub.Classify(pb.ClassifyRequest(images=[image], top_k=1), timeout=60, metadata=metadata)
                return True
            except grpc.aio.AioRpcError:
                return False

        yield send


def keyed_sender(url: str, api_key: str | None) -> SenderFactory | None:
    """http_sender or grpc_sender (by the URL) sending `api_key`; None without a key (run_level's default)."""
    if not api_key:
        return None
    return functools.partial(grpc_sender if url.startswith("grpc://") else http_sender, api_key=api_key)


async def run_level(
    url: str, images: list[bytes], concurrency: int, seconds: float, sender: SenderFactory | None = None
) -> LevelResult:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    if sender is None:
        sender = grpc_sender if url.startswith("grpc://") else http_sender

    async with sender(url, concurrency) as send:

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                ok = await send(images[i % len(images)])
                latencies.append(time.perf_counter() - start)
                errors += not ok
                i += concurrency

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ms = np.asarray(latencies or [float("nan")]) * 1000.0
    return LevelResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 2),
        images_per_s=round((len(latencies) - errors) / elapsed, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 2),
        p99_ms=round(float(np.percentile(ms, 99)), 2),
        client_cpu_s=round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 2),
    )


def print_table(results: list[LevelResult]) -> None:
    print(f"{'conc':>5} {'requests':>9} {'errors':>7} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'client cpu s':>12}")
    for r in results:
        print(
            f"{r.concurrency:>5} {r.requests:>9} {r.errors:>7} {r.images_per_s:>8} {r.p50_ms:>8} {r.p99_ms:>8} "
            f"{r.client_cpu_s:>12}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=200, help="distinct images to cycle through")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"sent as a Bearer token (default: ${API_KEY_ENV}; prefer the variable, flags show in ps)",
    )
    args = parser.parse_args()
    images = load_images(args.images, args.limit)
    sender = keyed_sender(args.url, resolve_api_key(args.api_key))
    asyncio.run(run_level(args.url, images, max(args.concurrency), args.warmup, sender))
    results = [asyncio.run(run_level(args.url, images, c, args.seconds, sender)) for c in args.concurrency]
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
