"""Per-stage autoscaling on a local Ray: under load the decode stage and the classifier's model deployment each scale
up, and back down when idle (one server with both stages set to react in seconds, the other stages left as
serve_config.yaml has them; one test per stage, each from its stage's idle state)."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from loadtests.server_process import ServerProcess
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.integration

STAGES = ["Decoder", "model-mobilenet_v2_imagenet"]
GRAPH = ["--placement", "graph"]  # per-stage autoscaling is the graph placement's


def _aggressive_config(stages: list[str]) -> dict:
    """The project's config with `stages` tuned to react in seconds (small numbers for 2 cores); the Ingress sends
    small stage calls, several at once, so the stages see concurrent calls to scale on."""
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["args"]["graph_calls"] = {"max_images_per_call": 2, "concurrent_calls": 4}
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] in stages:
            deployment["autoscaling_config"] = {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 1,
                "downscale_delay_s": 4,
                "look_back_period_s": 2,
                "metrics_interval_s": 0.5,
            }
            deployment["max_ongoing_requests"] = 2
            deployment["ray_actor_options"] = {"num_cpus": 0.25}  # room for a second replica on a small machine
    return config


@pytest.fixture(scope="module")
def scaling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A graph-placement server whose decode and model stages scale in seconds."""
    require(MOBILENET_DIR)
    with ServerProcess(tmp_path_factory.mktemp("autoscaling"), _aggressive_config(STAGES), extra_args=GRAPH) as server:
        yield server


def _running_replicas(url: str, stage: str) -> int:
    status = httpx.get(f"{url}/v1/status", timeout=10).json()
    return status["applications"]["imgserve"]["deployments"][stage]["replicas"].get("RUNNING", 0)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_scales_up_under_load_and_back_down(scaling_server: ServerProcess, stage: str, tmp_path: Path) -> None:
    url = scaling_server.http_url
    photos = [p.read_bytes() for p in sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:64]]
    timeline: list[tuple[float, int, str]] = []
    start = time.monotonic()

    def observe(phase: str) -> int:
        replicas = _running_replicas(url, stage)
        timeline.append((round(time.monotonic() - start, 1), replicas, phase))
        return replicas

    deadline = time.monotonic() + 90  # the previous test's load may still be scaling this stage down
    while observe("idle") > 1 and time.monotonic() < deadline:
        time.sleep(2.0)
    assert timeline[-1][1] == 1, f"{stage} is not at one replica before the load: {timeline}"

    async def load(seconds: float) -> int:
        """8 clients until the stage has run two replicas for 3 s, `seconds` at most."""
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker(offset: int) -> int:
                sent, i = 0, offset
                while time.monotonic() < stop:
                    await client.post("/v1/classify", content=photos[i % len(photos)], params={"top_k": 1})
                    sent, i = sent + 1, i + 8
                return sent

            async def watch() -> None:
                nonlocal stop
                while time.monotonic() < stop:
                    if await asyncio.to_thread(observe, "load") == 2:
                        stop = min(stop, time.monotonic() + 3.0)
                    await asyncio.sleep(1.0)

            counts, _ = await asyncio.gather(asyncio.gather(*(worker(k) for k in range(8))), watch())
            return sum(counts)

    sent = asyncio.run(load(40.0))
    peak = max(r for _, r, phase in timeline if phase == "load")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and observe("cooldown") > 1:
        time.sleep(2.0)
    (tmp_path / "timeline.txt").write_text("\n".join(f"{t}s {r} {p}" for t, r, p in timeline))
    print("replicas of", stage, "over time (s, running, phase):", timeline, "requests:", sent)
    assert sent > 0
    assert peak == 2, f"{stage} never scaled up under load: {timeline}"
    assert timeline[-1][1] == 1, f"{stage} did not scale back down after the load: {timeline}"
