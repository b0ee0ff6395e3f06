"""Prometheus metrics in the `imgserve_` namespace, recorded where the work happens.

Replicas are separate processes; the CLI sets PROMETHEUS_MULTIPROC_DIR before Ray starts so every
replica on the node writes to one directory and the ingress's `/metrics` serves the sum.
"""

import os
import re
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# 1 ms .. 10 s, roughly x2 per bucket, with extra resolution where single-image latency sits.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)

REQUESTS = Counter(
    "imgserve_requests_total",
    "Requests answered, by endpoint, protocol, model and status.",
    ["endpoint", "protocol", "model", "status"],
)
REQUEST_LATENCY = Histogram(
    "imgserve_request_latency_seconds",
    "End-to-end request latency at the ingress.",
    ["endpoint", "protocol", "model"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("imgserve_errors_total", "Errors by kind (invalid_image, too_large, ...).", ["endpoint", "kind"])
# The kinds that are the server's failure, the availability alerts' numerator (deploy/prometheus/alerts.yml, with
# Starlette's own http_5xx): a test keeps the two lists together.
SERVER_ERROR_KINDS = (
    "internal",
    "model_unavailable",
    "overloaded",
    "replica_unavailable",
    "store_unavailable",
    "storage_full",
)


def zero_server_errors(endpoints: Iterable[str]) -> None:
    """Each endpoint's server-error series exist, at 0, from the replica's start. Prometheus's `rate`/`increase`
    read a series from its second sample, so a series first made by a burst of errors (5 x 503 after a restart)
    counted nothing in the error ratio, its burn rate or their alerts; and with no server error yet those panels
    showed "No data" rather than 0 %."""
    for endpoint in endpoints:
        for kind in SERVER_ERROR_KINDS:
            ERRORS.labels(endpoint, kind)


IMAGES = Counter("imgserve_images_total", "Images received.", ["endpoint", "protocol"])
BYTES_RECEIVED = Counter("imgserve_request_bytes_total", "Encoded image bytes received.", ["protocol"])


def count_images(endpoint: str, protocol: str, images: list[bytes]) -> None:
    """Images (and their bytes) received by the image API: /v1 routes and `imgserve.v1.ImageService` methods."""
    IMAGES.labels(endpoint, protocol).inc(len(images))
    BYTES_RECEIVED.labels(protocol).inc(sum(len(image) for image in images))


STAGE_LATENCY = Histogram(
    "imgserve_stage_latency_seconds",
    "Time spent in one stage for one item or batch.",
    ["stage", "model"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("imgserve_batch_size", "Items per executed model batch.", ["model"], buckets=BATCH_BUCKETS)
STAGE_CALL_IMAGES = Histogram(
    "imgserve_stage_call_images",
    "Images an Ingress replica sent to the stage deployments in one call (graph placement).",
    buckets=BATCH_BUCKETS,
)
BATCH_FILL = Histogram(
    "imgserve_batch_fill_ratio",
    "Executed batch size / max_batch_size.",
    ["model"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)


QUEUE_WAIT = Histogram(
    "imgserve_batch_queue_wait_seconds",
    "Time from a request reaching a model replica to its batch starting.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
BATCH_QUEUE_DEPTH = Gauge(
    "imgserve_batch_queue_depth",
    "Items waiting in a model's batch queue for a batch to take them (every placement: where the model runs), summed "
    "over the node's replicas.",
    ["model"],
    multiprocess_mode="livesum",
)
INFLIGHT = Gauge(
    "imgserve_inflight_requests", "Requests being handled at the ingress.", ["protocol"], multiprocess_mode="livesum"
)
MODEL_INFO = Gauge(
    "imgserve_model_info",
    "Loaded model replicas by chosen backend (value: number of replicas).",
    ["model", "version", "backend", "device", "precision"],
    multiprocess_mode="livesum",
)

# Triton's statistics extension (`GET /v2/models/stats`, gRPC ModelStatistics: serving.model_statistics) is read
# from these, so it sums every replica of the node as /metrics does; per version and per batch size, as Triton's.
MODEL_EXECUTIONS = Counter(
    "imgserve_model_executions_total",
    "Model batches that ran to the end, by model, version and batch size.",
    ["model", "version", "batch_size"],
)
MODEL_EXECUTION_SECONDS = Counter(
    "imgserve_model_execution_seconds_total",
    "Time those batches took by phase: compute_input (the items' tensors made one batch and handed to a stage "
    "thread), compute_infer (the backend's run, timed in that thread), compute_output (back to the event loop, "
    "outputs split per item).",
    ["model", "version", "batch_size", "phase"],
)
MODEL_INFERENCES = Counter(
    "imgserve_model_inferences_total",
    "Items (one image's tensor each) a model's batches finished, by outcome (success, fail: the batch raised).",
    ["model", "version", "outcome"],
)
MODEL_INFERENCE_SECONDS = Counter(
    "imgserve_model_inference_seconds_total",
    "Summed over those items: the wait for a batch (queue), and queueing to the batch's end by outcome (success, "
    "fail).",
    ["model", "version", "phase"],
)
MODEL_LAST_INFERENCE = Gauge(
    "imgserve_model_last_inference_timestamp_seconds",
    "When a batch of the model last ended (Unix time).",
    ["model", "version"],
    multiprocess_mode="max",
)

MODEL_VERSION_REQUESTS = Counter(
    "imgserve_model_version_requests_total",
    "Inference requests by the model version that answered them (a canary split shows here).",
    ["model", "version"],
)


# Label values come only from names the replica knows: an unknown model name a client sends becomes "unknown",
# so random `?model=` values cannot create new series without end. The Ingress registers its models; the OIP
# image-level model (`serving.service.IMAGE_MODEL_NAME`, BYTES of encoded images in) is served by every Ingress.
IMAGE_LEVEL_MODEL = "classify"
KNOWN_MODELS: set[str] = {IMAGE_LEVEL_MODEL}
UNKNOWN_LABEL = "unknown"
CANARY_KEY_SEPARATOR = "@"  # a canary version's stage key is "<name>@<version>" (ModelEntry.key)


def model_label(name: str | None) -> str:
    """`name` when it is a model this replica serves (or empty), else "unknown"."""
    if not name:
        return ""
    if not isinstance(name, str):  # a client's JSON can put a list or object where a name belongs
        return UNKNOWN_LABEL
    return name if name in KNOWN_MODELS else UNKNOWN_LABEL


def decode_model_label(models: tuple[str, ...]) -> str:
    """The decode stage's `model` label: the request's primary model, the first it planned (the classifier; the
    learned quality model when an analysis asks for quality alone), by name (a canary version's stage key without
    its version); "" when no model needs a tensor. One served model's name, so the series stay few (one per model,
    not one per combination of models or per version)."""
    return models[0].partition(CANARY_KEY_SEPARATOR)[0] if models else ""


class _OnlyImgserve(Collector):
    """Ray's own processes inherit PROMETHEUS_MULTIPROC_DIR too; `/metrics` serves imgserve's families only
    (Ray's metrics are scraped from Ray's metrics export port)."""

    def __init__(self, inner: Collector):
        self.inner = inner

    def collect(self):  # noqa: ANN201 - prometheus_client's Metric iterator
        return (family for family in self.inner.collect() if family.name.startswith("imgserve_"))


LIVE_GAUGE_FILE = re.compile(r"^gauge_live(?:sum|min|max|mostrecent)_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges of processes that are gone (a restarted or scaled-down replica, one killed by the OOM
    killer): `imgserve_model_info` counted them on, `imgserve_inflight_requests` and `imgserve_batch_queue_depth`
    kept their requests in flight and queued, and `imgserve_batch_store_up` their last outage. The renderer shares
    the writers' process namespace (one machine, or one Ray pod's container); counters and histograms of dead
    processes stay, as they must."""
    from prometheus_client import multiprocess

    for name in os.listdir(directory):
        match = LIVE_GAUGE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), directory)


def _registry() -> Collector:
    """Every process's metrics in multiprocess mode (imgserve's families only), else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        from prometheus_client import multiprocess

        forget_dead_processes(directory)
        registry = CollectorRegistry()
        registry.register(_OnlyImgserve(multiprocess.MultiProcessCollector(None, path=directory)))
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def render_metrics() -> tuple[bytes, str]:
    """Exposition text for `/metrics`."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


def metric_samples(names: frozenset[str]) -> list[Sample]:
    """The samples of the families named (as `/metrics` sums them), for figures the server answers from them."""
    return [sample for family in _registry().collect() if family.name in names for sample in family.samples]


AUDIT_DROPPED = Counter(
    "imgserve_audit_dropped_total", "Audit entries of refused requests dropped because the writer was full."
)
AUTH_REFUSED = Counter(
    "imgserve_auth_refused_total",
    "Requests refused before any work: unauthenticated, permission_denied, rate_limited, quota_exceeded.",
    ["tenant", "kind"],
)

# Quality verdicts (serving.quality_metrics records them): label values are bounded by the tenant list (made by
# admins), the thresholds' tag vocabulary (anything else counts as "other") and the four levels.
QUALITY_SCORE_BUCKETS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
QUALITY_IMAGES = Counter("imgserve_quality_images_total", "Images that got a quality verdict, by tenant.", ["tenant"])
QUALITY_TAGS = Counter(
    "imgserve_quality_tags_total",
    "Quality tags given, by tenant, tag and the tag's kind (defect, positive, info): one per image and tag.",
    ["tenant", "tag", "kind"],
)
QUALITY_LEVELS = Counter("imgserve_quality_level_total", "Quality verdicts by tenant and level.", ["tenant", "level"])
QUALITY_SCORE = Histogram(
    "imgserve_quality_score",
    "Quality score (0-100) of each image, by tenant.",
    ["tenant"],
    buckets=QUALITY_SCORE_BUCKETS,
)
IMAGE_OPERATION_BYTES = Counter(
    "imgserve_image_operation_bytes_total",
    "Encoded bytes into and out of image operations (convert, enhance): out/in is the compression achieved.",
    ["operation", "direction"],
)
ENHANCEMENT_STEPS = Counter(
    "imgserve_enhancement_steps_total", "Enhancement operations applied, by operation and why.", ["operation", "reason"]
)
