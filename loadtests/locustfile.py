"""Locust load test for a running imgserve: HTTP users (image API + Open Inference Protocol) and gRPC users.

    make loadtest     # headless, 16 users, 60 s, CSV + HTML report under loadtests/results/
    .venv/bin/locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 60s --host http://127.0.0.1:8000 \\
        --csv loadtests/results/locust --html loadtests/results/locust.html

Users (class weight: how many of each kind locust spawns):

- `ImageApiUser` (3): POST /v1/classify (one photo, top_k 5; task weight 6), POST /v1/analyze (one photo, all
  stages; 2) and POST /v2/models/mobilenet_v2_imagenet/infer with a preprocessed FP32 [1, 3, 224, 224] tensor in
  the binary tensor extension (2) -- what a Triton/KServe client that preprocesses itself sends.
- `GrpcImageUser` (1): imgserve.v1.ImageService Classify (3) and Analyze (1) on the stubs generated from
  protos/image_service.proto, reported to locust as request type "grpc".

Images are real photos (`loadtests.images`). At the end the classifier's server-side figures of the run are
logged from Triton's statistics (`loadtests.server_stats`: images, batches, mean batch size, and per image the time
queued and computing; with auth required only for an operator key of tenant `default`). SLA: when the run ends,
the process exits 1 if the overall p99 exceeds SLO_MS (default 1000) or more than MAX_FAIL_RATIO (default 0.001 =
0.1 %) of requests failed (or none were made). Environment:

    SLO_MS=1000  MAX_FAIL_RATIO=0.001
    LOADTEST_MIX=web|camera|mixed (default web; mixed = web with CAMERA_SHARE=0.1 of requests camera photos)
    LOADTEST_IMAGES=N       distinct photos per mix (default: all)
    IMGSERVE_GRPC_TARGET=host:port (default: the --host's host name, port 9000)
    WAIT_MIN_S=0 WAIT_MAX_S=0.2   think time between a user's requests
    IMGSERVE_API_KEY=isk_...      sent by every user (HTTP `Authorization: Bearer`, gRPC `authorization` metadata)
                                  when set: a server with IMGSERVE_AUTH=required answers 401 without it
"""

import gevent.monkey

gevent.monkey.patch_all()

import grpc.experimental.gevent as grpc_gevent  # noqa: E402 - must follow monkey patching

grpc_gevent.init_gevent()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import grpc  # noqa: E402
from locust import HttpUser, User, between, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # locust puts only this file's folder on sys.path
    sys.path.insert(0, str(PROJECT_ROOT))

from loadtests import server_stats  # noqa: E402
from loadtests.images import load_mix  # noqa: E402
from serving.client.auth import auth_headers, auth_metadata, resolve_api_key  # noqa: E402

MODEL = "mobilenet_v2_imagenet"
SLO_MS = float(os.environ.get("SLO_MS", "1000"))
MAX_FAIL_RATIO = float(os.environ.get("MAX_FAIL_RATIO", "0.001"))
MIX = os.environ.get("LOADTEST_MIX", "web")
CAMERA_SHARE = float(os.environ.get("CAMERA_SHARE", "0.1"))
IMAGE_LIMIT = int(os.environ["LOADTEST_IMAGES"]) if os.environ.get("LOADTEST_IMAGES") else None
WAIT = between(float(os.environ.get("WAIT_MIN_S", "0")), float(os.environ.get("WAIT_MAX_S", "0.2")))
TENSORS = 32  # distinct preprocessed tensors for the OIP task
API_KEY = resolve_api_key(None)  # IMGSERVE_API_KEY, or None: no key sent

logger = logging.getLogger("imgserve.locust")


class Photos:
    """The image mix (loaded once per process) and preprocessed OIP request bodies."""

    def __init__(self) -> None:
        self.primary: list[bytes] = []
        self.camera: list[bytes] = []
        self.oip_bodies: list[tuple[bytes, str]] = []

    def load(self) -> None:
        if self.primary:
            return
        if MIX not in ("web", "camera", "mixed"):
            raise SystemExit(f"LOADTEST_MIX={MIX!r}: choose web, camera or mixed")
        self.primary = load_mix("camera" if MIX == "camera" else "web", limit=IMAGE_LIMIT).images
        if MIX == "mixed":
            self.camera = load_mix("camera", limit=IMAGE_LIMIT).images
        self.oip_bodies = [oip_body(image) for image in self.primary[:TENSORS]]
        logger.info("image mix %s: %d photos (+%d camera)", MIX, len(self.primary), len(self.camera))

    def pick(self) -> bytes:
        if self.camera and random.random() < CAMERA_SHARE:
            return random.choice(self.camera)
        return random.choice(self.primary)


PHOTOS = Photos()


def oip_body(image: bytes) -> tuple[bytes, str]:
    """(body, JSON header length) of an OIP infer request carrying the preprocessed tensor of `image` in binary."""
    from pipelines.decode import decode_image
    from serving.config.model_config import load_model_config

    spec = load_model_config(PROJECT_ROOT / "models" / MODEL / "config.yaml").preprocess_spec()
    raw = decode_image(image, spec).tensor[None].astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 3, 224, 224],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "probs", "parameters": {"classification": 5}}],
    }
    head = json.dumps(header).encode()
    return head + raw, str(len(head))


@events.init.add_listener
def _load_images(environment: Environment, **_: object) -> None:
    PHOTOS.load()


SERVER_BEFORE: dict[str, object] = {}  # the model's statistics row when the test started


@events.test_start.add_listener
def _server_figures_before(environment: Environment, **_: object) -> None:
    row, why = server_stats.fetch(environment.host or "", MODEL, auth_headers(API_KEY))
    SERVER_BEFORE.clear()
    if row is None:
        logger.info("server-side figures: not available (%s)", why)
    else:
        SERVER_BEFORE.update(row)


@events.quitting.add_listener
def _server_figures(environment: Environment, **_: object) -> None:
    """perf_analyzer's "Server" section: the model's batches during the test, from Triton's statistics."""
    if not SERVER_BEFORE:
        return
    row, why = server_stats.fetch(environment.host or "", MODEL, auth_headers(API_KEY))
    if row is None:
        logger.info("server-side figures: not available at the end (%s)", why)
        return
    logger.info("%s", server_stats.describe(MODEL, server_stats.breakdown(SERVER_BEFORE, row)))


@events.test_start.add_listener
def _announce(environment: Environment, **_: object) -> None:
    logger.info("SLA: p99 <= %.0f ms and failures <= %.2f %%", SLO_MS, MAX_FAIL_RATIO * 100)
    logger.info("API key: %s", "IMGSERVE_API_KEY is sent" if API_KEY else "none (IMGSERVE_API_KEY is not set)")
    target, http_port = grpc_target(environment.host), urlparse(environment.host or "").port
    logger.info("gRPC users: %s", target)
    if not os.environ.get("IMGSERVE_GRPC_TARGET") and http_port not in (None, 8000):
        logger.warning(  # the gRPC port does not follow --host: a second server on 9000 would get that load
            "--host names HTTP port %s but the gRPC users go to %s: set IMGSERVE_GRPC_TARGET=host:port to the gRPC "
            "port of the same server",
            http_port,
            target,
        )


def sla_violations(num_requests: int, fail_ratio: float, p99_ms: float) -> list[str]:
    """What breaks the SLA, as sentences (empty: the run passes)."""
    problems = []
    if num_requests == 0:
        problems.append("no requests were made")
    if p99_ms > SLO_MS:
        problems.append(f"p99 {p99_ms:.0f} ms > SLO {SLO_MS:.0f} ms")
    if fail_ratio > MAX_FAIL_RATIO:
        problems.append(f"failure ratio {fail_ratio:.4%} > {MAX_FAIL_RATIO:.2%}")
    return problems


@events.quitting.add_listener
def _check_sla(environment: Environment, **_: object) -> None:
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) or 0.0
    problems = sla_violations(total.num_requests, total.fail_ratio, p99)
    summary = f"{total.num_requests} requests, {total.num_failures} failed, p99 {p99:.0f} ms"
    if problems:
        logger.error("SLA FAILED (%s): %s", summary, "; ".join(problems))
        environment.process_exit_code = 1
    else:
        logger.info("SLA met (%s)", summary)


class ImageApiUser(HttpUser):
    """An HTTP client of the image API and of the Open Inference Protocol."""

    weight = 3
    wait_time = WAIT
    host = os.environ.get("IMGSERVE_URL", "http://127.0.0.1:8000")

    def on_start(self) -> None:
        self.client.headers.update(auth_headers(API_KEY))  # every request of this user's session

    def _post(self, path: str, name: str, body: bytes, headers: dict[str, str], params: dict | None = None) -> None:
        with self.client.post(
            path, data=body, headers=headers, params=params, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")

    @task(6)
    def classify(self) -> None:
        self._post("/v1/classify", "/v1/classify", PHOTOS.pick(), {"Content-Type": "image/jpeg"}, {"top_k": 5})

    @task(2)
    def analyze(self) -> None:
        self._post("/v1/analyze", "/v1/analyze", PHOTOS.pick(), {"Content-Type": "image/jpeg"})

    @task(2)
    def oip_infer(self) -> None:
        body, header_length = random.choice(PHOTOS.oip_bodies)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": header_length}
        self._post(f"/v2/models/{MODEL}/infer", "/v2/models/[model]/infer", body, headers)


def grpc_target(host: str | None) -> str:
    if os.environ.get("IMGSERVE_GRPC_TARGET"):
        return os.environ["IMGSERVE_GRPC_TARGET"]
    hostname = urlparse(host or "http://127.0.0.1").hostname or "127.0.0.1"
    return f"{hostname}:9000"


class GrpcImageUser(User):
    """A gRPC client of imgserve.v1.ImageService (the generated stub), timed into locust's statistics."""

    weight = 1
    wait_time = WAIT
    host = os.environ.get("IMGSERVE_URL", "http://127.0.0.1:8000")

    def on_start(self) -> None:
        from serving.grpc.stubs import load

        self.pb = load("image_service_pb2")
        self.channel = grpc.insecure_channel(grpc_target(self.host))
        self.stub = load("image_service_pb2_grpc").ImageServiceStub(self.channel)
        self.metadata = auth_metadata(API_KEY)

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, method, request) -> None:  # noqa: ANN001 - a generated stub method and its message
        started = time.perf_counter()
        length, error = 0, None
        try:
            length = method(request, timeout=60, metadata=self.metadata).ByteSize()
        except grpc.RpcError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=error,
            context={},
        )

    @task(3)
    def classify(self) -> None:
        self._call(
            "ImageService/Classify", self.stub.Classify, self.pb.ClassifyRequest(images=[PHOTOS.pick()], top_k=5)
        )

    @task(1)
    def analyze(self) -> None:
        self._call("ImageService/Analyze", self.stub.Analyze, self.pb.AnalyzeRequest(images=[PHOTOS.pick()], top_k=5))
