"""Triton's statistics extension: per model version, what its batches did, for `GET /v2/models[/{m}]/stats` and
gRPC `ModelStatistics` (tritonclient's `get_inference_statistics`, which perf_analyzer reads server-side figures
with).

Recorded where batches run (`ModelStage`, in whichever process the placement puts it; the image-level model
`classify` where the OIP request is answered) into Prometheus counters, and read back from them as `/metrics`
sums them: every replica of the node counted, in every placement, and nothing kept twice. The figures follow
Triton's definitions (docs: protocol/extension_statistics.md), with one item (one image's tensor) as a request:

- `inference_count`: items run; `execution_count`: batches run;
- `inference_stats`: `success` / `fail` (count of items, time from queueing to the end of their batch), `queue`
  (time successful items waited for a batch; a failure counts in `fail` alone, as Triton's `UpdateFailure`),
  `compute_input` / `compute_infer` / `compute_output` (each item charged its whole batch's phase, as Triton
  charges every request of a batch); `cache_hit` / `cache_miss` stay zero (no cache);
- `batch_stats`: per batch size, the number of batches and their phases' time;
- `last_inference`: milliseconds since the epoch when a batch last ended (0: never).

Counters start at zero with the server (a restart starts them again, as Triton's do).
"""

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from serving.metrics import (
    MODEL_EXECUTION_SECONDS,
    MODEL_EXECUTIONS,
    MODEL_INFERENCE_SECONDS,
    MODEL_INFERENCES,
    MODEL_LAST_INFERENCE,
    metric_samples,
)

COMPUTE_PHASES = ("compute_input", "compute_infer", "compute_output")
FAMILIES = frozenset(
    metric._name  # noqa: SLF001 - the family name prometheus_client collects it under
    for metric in (
        MODEL_EXECUTIONS,
        MODEL_EXECUTION_SECONDS,
        MODEL_INFERENCES,
        MODEL_INFERENCE_SECONDS,
        MODEL_LAST_INFERENCE,
    )
)


@contextmanager
def recorded_batch(model: str, version: str, enqueued: Sequence[float], start: float) -> Iterator[Callable[[], float]]:
    """Records the batch run inside it, started at `start`, of `len(enqueued)` items queued at those perf_counter
    times. It yields `mark`, called at the end of each phase in turn (input ready, backend run, outputs split; it
    returns the time; a stage thread may call it while the block awaits it); a phase left unmarked ends when the
    block does. A block that raises counts its items as
    failed inferences (not as an execution)."""
    marks = [start]

    def mark() -> float:
        marks.append(time.perf_counter())
        return marks[-1]

    try:
        yield mark
    except Exception:
        _record_items(model, version, enqueued, start, time.perf_counter(), "fail")
        raise
    end = marks[-1] if len(marks) > len(COMPUTE_PHASES) else time.perf_counter()
    marks += [end] * (len(COMPUTE_PHASES) + 1 - len(marks))
    size = str(len(enqueued))
    MODEL_EXECUTIONS.labels(model, version, size).inc()
    for phase, began, ended in zip(COMPUTE_PHASES, marks[:-1], marks[1:], strict=True):
        MODEL_EXECUTION_SECONDS.labels(model, version, size, phase).inc(max(ended - began, 0.0))
    _record_items(model, version, enqueued, start, end, "success")


def _record_items(model: str, version: str, enqueued: Sequence[float], start: float, end: float, outcome: str) -> None:
    MODEL_INFERENCES.labels(model, version, outcome).inc(len(enqueued))
    if outcome == "success":  # Triton's queue figure is its successes' (a failure updates `fail` alone)
        MODEL_INFERENCE_SECONDS.labels(model, version, "queue").inc(sum(max(start - t, 0.0) for t in enqueued))
    MODEL_INFERENCE_SECONDS.labels(model, version, outcome).inc(sum(max(end - t, 0.0) for t in enqueued))
    MODEL_LAST_INFERENCE.labels(model, version).set(time.time())


@dataclass
class _Figures:
    """One model version's counters, gathered from the samples."""

    executions: dict[int, float] = field(default_factory=lambda: defaultdict(float))  # batch size -> batches
    execution_seconds: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))
    inferences: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # outcome -> items
    inference_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # phase -> seconds
    last_inference: float = 0.0


def _gathered(samples: Iterable[Any]) -> dict[tuple[str, str], _Figures]:
    figures: dict[tuple[str, str], _Figures] = defaultdict(_Figures)
    for sample in samples:
        labels = sample.labels
        if "model" not in labels or "version" not in labels:
            continue
        row = figures[(labels["model"], labels["version"])]
        if sample.name == "imgserve_model_executions_total":
            row.executions[int(labels["batch_size"])] += sample.value
        elif sample.name == "imgserve_model_execution_seconds_total":
            row.execution_seconds[(int(labels["batch_size"]), labels["phase"])] += sample.value
        elif sample.name == "imgserve_model_inferences_total":
            row.inferences[labels["outcome"]] += sample.value
        elif sample.name == "imgserve_model_inference_seconds_total":
            row.inference_seconds[labels["phase"]] += sample.value
        elif sample.name == "imgserve_model_last_inference_timestamp_seconds":
            row.last_inference = max(row.last_inference, sample.value)
    return figures


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": round(count), "ns": round(seconds * 1e9)}


def _statistics(name: str, version: str, row: _Figures) -> dict[str, Any]:
    """Triton's `ModelStatistics` of one version, as its HTTP JSON (the gRPC message's field names)."""
    sizes = sorted(row.executions)
    charged = {  # each item charged its batch's time: a batch of b items counts b times
        phase: sum(size * row.execution_seconds[(size, phase)] for size in sizes) for phase in COMPUTE_PHASES
    }
    succeeded, failed = row.inferences["success"], row.inferences["fail"]
    inference_stats = {
        "success": _duration(succeeded, row.inference_seconds["success"]),
        "fail": _duration(failed, row.inference_seconds["fail"]),
        "queue": _duration(succeeded, row.inference_seconds["queue"]),  # perf_analyzer divides it by successes
        **{phase: _duration(succeeded, charged[phase]) for phase in COMPUTE_PHASES},
        "cache_hit": _duration(0, 0.0),
        "cache_miss": _duration(0, 0.0),
    }
    batch_stats = [
        {
            "batch_size": size,
            **{
                phase: _duration(row.executions[size], row.execution_seconds[(size, phase)]) for phase in COMPUTE_PHASES
            },
        }
        for size in sizes
    ]
    return {
        "name": name,
        "version": version,
        "last_inference": round(row.last_inference * 1000),
        "inference_count": round(sum(size * row.executions[size] for size in sizes)),
        "execution_count": round(sum(row.executions.values())),
        "inference_stats": inference_stats,
        "batch_stats": batch_stats,
        "memory_usage": [],
    }


def model_statistics(versions: Iterable[tuple[str, str]], samples: Iterable[Any] | None = None) -> list[dict[str, Any]]:
    """`ModelStatistics` of each (model, version), in that order (zeros for one that has not run); `samples`:
    the counters' samples (default: this node's, read as `/metrics` reads them)."""
    figures = _gathered(metric_samples(FAMILIES) if samples is None else samples)
    return [_statistics(name, version, figures.get((name, version), _Figures())) for name, version in versions]
