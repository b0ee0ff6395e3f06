"""A load test's server-side figures, from Triton's statistics before and after it (`GET /v2/models/{m}/stats`):
what perf_analyzer prints as its "Server" section -- images and batches the model ran, and where an image's time
went between joining the batch queue and the end of its batch (queue, compute input / infer / output)."""

from typing import Any

import httpx

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def fetch(url: str, model: str, headers: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """The model's statistics row (its served version's first), or None and why (no server, a refusal: the figures
    are server-wide, so with auth required they need an operator key of tenant `default`)."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/v2/models/{model}/stats", headers=headers or {}, timeout=10)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return None, f"GET /v2/models/{model}/stats answered {response.status_code}: {response.text[:200]}"
    rows = response.json().get("model_stats") or []
    return (rows[0], "") if rows else (None, "no statistics row")


def breakdown(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """What happened between two statistics rows of one model version: images, batches, mean batch size, and per
    image the mean milliseconds from queueing to the end of its batch (`request_ms`) and in each phase."""
    images = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]

    def mean_ms(phase: str) -> float:
        was, now = before["inference_stats"][phase], after["inference_stats"][phase]
        count = now["count"] - was["count"]
        return (now["ns"] - was["ns"]) / count / 1e6 if count else 0.0

    figures = {
        "images": float(images),
        "batches": float(batches),
        "mean_batch": images / batches if batches else 0.0,
        "failed": float(after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"]),
        "request_ms": mean_ms("success"),
    }
    return figures | {f"{phase}_ms": mean_ms(phase) for phase in PHASES}


def describe(model: str, figures: dict[str, float]) -> str:
    return (
        f"server, {model}: {figures['images']:.0f} images in {figures['batches']:.0f} batches "
        f"({figures['mean_batch']:.1f} per batch, {figures['failed']:.0f} failed); per image "
        f"{figures['request_ms']:.1f} ms from queueing to its batch's end: queue {figures['queue_ms']:.1f}, "
        f"input {figures['compute_input_ms']:.2f}, infer {figures['compute_infer_ms']:.1f}, "
        f"output {figures['compute_output_ms']:.2f} ms"
    )
