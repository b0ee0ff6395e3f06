"""Images per ONNX Runtime call on the CPU: speed and arena memory at 32, 16 and 8 (`IMGSERVE_ORT_RUN_BATCH`).

    .venv/bin/python -m loadtests.ort_run_batch [--models mobilenet_v2_imagenet quality_mos] [--rounds 8]

Per model, as the server loads it (`OnnxRuntimeBackend`: the INT8 file where it is served, 2 intra-op threads):

- speed: 32 images run as calls of 32, 16 and 8, interleaved round by round in one process (this machine's speed
  drifts by up to 2x within minutes, so only interleaved figures compare); the median images/s per call size;
- memory: a fresh process per call size runs the same batches and reports how much its RSS grew over them (ONNX
  Runtime's CPU arena keeps the activations of the largest call for the session's life, so one process cannot
  measure two sizes).
"""

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

CALL_SIZES = (32, 16, 8)
BATCH = 32


def _backend(model: str, run_batch: int) -> tuple[Any, np.ndarray]:
    """The model as the server loads it on the CPU, and a batch of BATCH random inputs of its shape."""
    from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
    from serving.repository import ModelRepository

    entry = ModelRepository.scan().get(model)
    backend = OnnxRuntimeBackend(intra_op_threads=2, use_cuda=False, cpu_run_batch=run_batch)
    backend.load(entry)
    spec = entry.config.input
    batch = np.random.default_rng(0).standard_normal((BATCH, *spec.shape)).astype(spec.numpy_dtype)
    return backend, batch


def speed(model: str, rounds: int) -> dict[int, float]:
    backends = {size: _backend(model, size) for size in CALL_SIZES}
    batch = backends[CALL_SIZES[0]][1]
    rates: dict[int, list[float]] = {size: [] for size in CALL_SIZES}
    for round_index in range(rounds + 1):
        for size, (backend, _) in backends.items():
            started = time.perf_counter()
            for _ in range(4):
                backend.infer(batch)
            if round_index:  # the first round warms up
                rates[size].append(4 * BATCH / (time.perf_counter() - started))
    return {size: round(float(np.median(values)), 1) for size, values in rates.items()}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def arena_mb(model: str, size: int) -> float:
    """What running full batches as calls of `size` adds to the RSS of a fresh process that loaded `model` (loading
    itself peaks higher and differs by nothing between call sizes)."""
    code = (
        "from loadtests.ort_run_batch import _backend, _rss_mb; "
        f"b, x = _backend({model!r}, {size}); before = _rss_mb(); [b.infer(x) for _ in range(4)]; "
        "print(_rss_mb() - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_imagenet", "quality_mos"])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    report = {
        model: {
            "images_per_s": speed(model, args.rounds),
            "arena_mb": {size: arena_mb(model, size) for size in CALL_SIZES},
        }
        for model in args.models
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
