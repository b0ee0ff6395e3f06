"""The hardware limits the servers are compared with: model only, decode only, and the two combinations; for the
float model every server can serve, and for the INT8 variant imgserve serves on CPU (and Triton INT8), when built.
The INT8 ceiling is the one imgserve's figures are to be read against: a ceiling of the float model says nothing
of a server that runs the INT8 one (until 2026-12-06 only the float ceiling was measured, and notes compared
imgserve's INT8 figures with it)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench import machine
from loadtests.bench.catalog import MODEL_NAME
from loadtests.bench.console import log
from loadtests.images import Mix
from loadtests.server_process import PROJECT_ROOT

MODEL_BATCHES = (1, 8, 16, 32, 64)


def fastest_rate(fn: Callable[[int], int], seconds: float, window_s: float = 1.0) -> float:
    """Call fn(i) (returns images done) for `seconds`; the fastest `window_s` window, in images per second.

    A limit is a ceiling: the best window is what the hardware does when the hypervisor is not taking the CPU
    away (bursts of steal on a shared virtual machine would otherwise lower the ceiling the servers are
    compared with). Falls back to the overall rate when no full window completed.
    """
    machine.QUIET.wait()
    fn(0)  # warm-up
    done, i, best = 0, 1, 0.0
    started = window_start = time.perf_counter()
    window_done = 0
    while time.perf_counter() - started < seconds:
        n = fn(i)
        done, window_done, i = done + n, window_done + n, i + 1
        now = time.perf_counter()
        if now - window_start >= window_s:
            best = max(best, window_done / (now - window_start))
            window_start, window_done = now, 0
    return best or done / (time.perf_counter() - started)


def decode_limits(mixes: dict[str, Mix], spec: Any, seconds: float) -> dict[str, Any]:
    """Per mix: decode+preprocess images/s (reduced-scale JPEG decode, as imgserve does) and full-size decode."""
    from pipelines.decode import decode_image

    decode: dict[str, Any] = {}
    for name, mix in mixes.items():
        images = mix.images

        def reduced(i: int, images: list[bytes] = images) -> int:
            decode_image(images[i % len(images)], spec)
            return 1

        def full(i: int, images: list[bytes] = images) -> int:
            decode_image(images[i % len(images)], spec, reduced=False)
            return 1

        decode[name] = {
            "images_per_s": round(fastest_rate(reduced, seconds), 1),
            "full_decode_images_per_s": round(fastest_rate(full, seconds), 1),
            "how": "pipelines.decode.decode_image (pillow, JPEG draft mode), one process, one thread; "
            "fastest 1 s window",
        }
        log(
            f"limit: decode+preprocess {name}: {decode[name]['images_per_s']} img/s "
            f"(full-size decode {decode[name]['full_decode_images_per_s']})"
        )
    return decode


def model_limits(tensors: np.ndarray, model_path: Path, seconds: float) -> dict[str, float]:
    """{batch: images/s} of ONNX Runtime (CPU provider, default threads) on preprocessed tensors in memory."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    per_batch: dict[str, float] = {}
    for batch in MODEL_BATCHES:
        index = np.arange(batch) % len(tensors)
        feed = {input_name: np.ascontiguousarray(tensors[index])}

        def run(_: int, feed: dict[str, np.ndarray] = feed, batch: int = batch) -> int:
            session.run(None, feed)
            return batch

        per_batch[str(batch)] = round(fastest_rate(run, seconds), 1)
        log(f"limit: model only, batch {batch}: {per_batch[str(batch)]} img/s")
    return per_batch


def model_summary(per_batch: dict[str, float]) -> dict[str, Any]:
    best_batch = max(per_batch, key=lambda b: per_batch[b])
    return {
        "images_per_s": per_batch[best_batch],
        "best_batch": int(best_batch),
        "batch_images_per_s": per_batch,
        "how": "onnxruntime CPUExecutionProvider, default threads, preprocessed tensors of the web mix in memory; "
        "fastest 1 s window",
    }


def ceilings(decode: dict[str, Any], model_rate: float, cores: int) -> tuple[dict[str, float], dict[str, float]]:
    """(combined, parallel) images/s per mix for decode rates `decode` and a model doing `model_rate`."""
    rates = {name: d["images_per_s"] for name, d in decode.items() if d["images_per_s"] > 0 and model_rate > 0}
    combined = {name: round(1.0 / (1.0 / rate + 1.0 / model_rate), 1) for name, rate in rates.items()}
    parallel = {name: round(1.0 / (1.0 / (cores * rate) + 1.0 / model_rate), 1) for name, rate in rates.items()}
    return combined, parallel


def measure_limits(
    mixes: dict[str, Mix], model_path: Path, seconds: float, tensors_from: int, int8_path: Path | None = None
) -> dict[str, Any]:
    """The float model's limits; with `int8_path`, the INT8 model's too (`model_int8`, `combined_int8`,
    `parallel_int8`)."""
    from pipelines.decode import decode_image
    from serving.config.model_config import load_model_config
    from serving.cpus import usable_cpus

    config = load_model_config(PROJECT_ROOT / "models" / MODEL_NAME / "config.yaml")
    spec = config.preprocess_spec()
    decode = decode_limits(mixes, spec, seconds)
    web = mixes.get("web") or next(iter(mixes.values()))
    tensors = np.stack([decode_image(b, spec).tensor for b in web.images[:tensors_from]])
    model = model_summary(model_limits(tensors, model_path, seconds))
    cores = usable_cpus()  # the cores the servers' thread pools are sized to (cgroup quota included)
    combined, parallel = ceilings(decode, model["images_per_s"], cores)
    limits: dict[str, Any] = {
        "model": model,
        "decode": decode,
        "combined": combined,
        "combined_formula": "1 / (1/decode + 1/model): decode then model, one after the other, no overlap",
        "parallel": parallel,
        "parallel_formula": (
            f"1 / (1/({cores} x decode) + 1/model): decode spread over all {cores} cores and overlapped with the "
            "model, no serving overhead -- the CPU-bound ceiling, assuming the model limit used every core"
        ),
    }
    if int8_path is not None:
        log("limit: the INT8 model imgserve serves")
        int8 = model_summary(model_limits(tensors, int8_path, seconds))
        limits["model_int8"] = {**int8, "path": int8_path.name}
        limits["combined_int8"], limits["parallel_int8"] = ceilings(decode, int8["images_per_s"], cores)
    return limits
