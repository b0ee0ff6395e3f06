"""Poll mode with two Ingress replicas (serving/model_poll.py): a model trained, promoted or rolled back through
one replica is served the same way by the other within a few poll intervals.

Each check opens a new connection per request: the kernel spreads connections over the two replicas' listeners
(SO_REUSEPORT), so 40 requests reach both (the chance that all land on one is 2^-39). Without the poll loop the
replica that did not answer the training or promotion request keeps its old answer (404 for a new model).
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.server_process import ServerProcess, replica_processes, session_pids
from tests.integration.conftest import local_config, server_env
from tests.integration.test_training import train
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, require
from tooling.training.everyday_categories import categorised_photos, held_out_split, write_category_folders

pytestmark = pytest.mark.integration

POLL_S = 1.0
REQUESTS = 40  # per check, each on its own connection


class TwoReplicas:
    def __init__(self, server: ServerProcess, dataset: str, photo: Path):
        self.server, self.dataset, self.photo = server, dataset, photo
        self.http = httpx.Client(base_url=server.http_url, timeout=120)

    def answers(self) -> list[str]:
        """The version (or the error kind) each of REQUESTS fresh connections gets for model `polled`."""
        found = []
        for _ in range(REQUESTS):
            response = httpx.post(
                f"{self.server.http_url}/v1/classify",
                params={"model": "polled", "top_k": 1},
                content=self.photo.read_bytes(),
                timeout=60,
            )
            body = response.json()
            found.append(body["results"][0]["model_version"] if response.status_code == 200 else body["kind"])
        return found

    def listed_versions(self) -> list[set[str]]:
        """The versions of `polled` that each of REQUESTS fresh connections sees listed."""
        found = []
        for _ in range(REQUESTS):
            models = httpx.get(f"{self.server.http_url}/v1/models", timeout=60).json()["models"]
            entry = next((m for m in models if m["name"] == "polled"), None)
            found.append({v["version"] for v in entry["versions"]} if entry else set())
        return found


def eventually(check: Callable[[], object], expected: object, within_s: float = 20 * POLL_S) -> None:
    """`check()` equals `expected` before `within_s` passes; else the last answer is the failure."""
    deadline = time.monotonic() + within_s
    while True:
        got = check()
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert got == expected


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoReplicas]:
    require(MOBILENET_DIR), require(IMAGENET_SAMPLES)
    tmp = tmp_path_factory.mktemp("poll")
    photos = categorised_photos(IMAGENET_SAMPLES, MOBILENET_DIR / "wnids.txt")
    kept = {category: held_out_split(files, 0.3)[0] for category, files in photos.items()}
    data_root = tmp / "data"
    write_category_folders(data_root / "everyday", kept, per_category=12, copy=True)
    env = {**server_env(tmp), "IMGSERVE_BATCH_ALLOWED_ROOT": str(data_root), "IMGSERVE_MODEL_POLL_S": str(POLL_S)}
    config = local_config()
    config["applications"][0]["deployments"][0]["num_replicas"] = 2
    assert config["applications"][0]["deployments"][0]["name"] == "Ingress"
    with ServerProcess(tmp, config, env) as server:
        assert server.proc is not None

        def replicas() -> int:  # this server's only: an earlier test's server may still be stopping
            return len({p.pid for p in replica_processes("Ingress")} & set(session_pids(server.proc.pid)))

        deadline = time.monotonic() + 120
        while replicas() < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert replicas() == 2, server.tail()
        photo = held_out_split(photos["vehicles"], 0.3)[1][0]
        world = TwoReplicas(server, (data_root / "everyday").as_uri(), photo)
        yield world
        world.http.close()


def test_training_promotion_and_rollback_through_one_replica_reach_the_other(two: TwoReplicas) -> None:
    first = train(two.http, model="polled", dataset=two.dataset, max_train_per_class=6)
    assert first["status"] == "completed" and first["result"]["loaded"], first
    eventually(two.answers, ["1"] * REQUESTS)  # a new model: the other replica loads it too

    second = train(two.http, model="polled", dataset=two.dataset, max_train_per_class=10, promote="always")
    assert second["status"] == "completed" and second["result"]["version"] == "2", second
    eventually(two.answers, ["2"] * REQUESTS)

    rolled_back = two.http.post("/v1/models/polled/versions/1/promote")
    assert rolled_back.status_code == 200, rolled_back.text
    eventually(two.answers, ["1"] * REQUESTS)

    third = train(two.http, model="polled", dataset=two.dataset, max_train_per_class=8, promote="never")
    assert third["status"] == "completed" and not third["result"]["promoted"], third
    eventually(two.listed_versions, [{"1", "2", "3"}] * REQUESTS)  # registered: listed everywhere, not served
    assert two.answers() == ["1"] * REQUESTS
