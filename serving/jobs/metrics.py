"""Prometheus metrics of batch jobs, recorded in the worker replica (multiprocess mode like the rest)."""

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from serving.metrics import LATENCY_BUCKETS

BATCH_ITEMS = Counter("imgserve_batch_items_total", "Batch-job items finished, by outcome.", ["status"])
BATCH_DISPATCHES = Counter(
    "imgserve_batch_dispatches_total", "Batch-job items sent to the graph, re-runs and retries included."
)
BATCH_ITEM_LATENCY = Histogram(
    "imgserve_batch_item_latency_seconds",
    "Time to process one batch-job item: read input, decode, model, record.",
    buckets=LATENCY_BUCKETS,
)
BATCH_JOBS = Counter("imgserve_batch_jobs_total", "Batch jobs finished, by final status.", ["status"])


@cache
def batch_store_up() -> Gauge:
    """Made by the first job loop's `StoreCalls`, not at import: an unlabelled gauge has a value from the moment it
    exists, so every process importing this module (the graph's Ingress, Serve's application-build worker) wrote a
    0 that `livemin` kept: the gauge read 0 on a healthy server."""
    return Gauge(
        "imgserve_batch_store_up",
        "1 while the batch worker's job store answers, 0 during an outage.",
        multiprocess_mode="livemin",
    )
