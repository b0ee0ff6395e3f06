"""Own categories (issue #21): train through the API on real labelled photos, serve the result without a restart,
load/promote/roll back/unload versions under load, refuse a corrupt model and keep the served one.

The data: the 1000 ImageNet sample photos grouped into ten everyday categories (tooling.training.everyday_categories:
dogs, birds, vehicles, food, ...). 30 % of each category is held out by the test and never sent for training; the
server's own validation split comes out of the other 70 %. Each category's photos are of different ImageNet classes,
so the held-out photos are of classes the head never saw.
"""

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from tritonclient.utils import InferenceServerException

from loadtests.server_process import ServerProcess
from serving.config.settings import ServerSettings
from serving.export import prepare_model
from serving.repository import ModelRepository
from tests.integration.conftest import local_config, server_env
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, require
from tooling.training.everyday_categories import categorised_photos, held_out_split, write_category_folders

pytestmark = pytest.mark.integration

MIN_HELD_OUT_ACCURACY = 0.90  # issue #21


class World:
    def __init__(self, server: ServerProcess, trained: Path, dataset: str, held_out: dict[str, list[Path]]):
        self.server, self.trained, self.dataset, self.held_out = server, trained, dataset, held_out
        self.http = httpx.Client(base_url=server.http_url, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require(MOBILENET_DIR), require(IMAGENET_SAMPLES)
    tmp = tmp_path_factory.mktemp("training")
    photos = categorised_photos(IMAGENET_SAMPLES, MOBILENET_DIR / "wnids.txt")
    kept = {category: held_out_split(files, 0.3)[0] for category, files in photos.items()}
    held_out = {category: held_out_split(files, 0.3)[1] for category, files in photos.items()}
    data_root = tmp / "data"
    write_category_folders(data_root / "everyday", kept, copy=True)
    env = {**server_env(tmp), "IMGSERVE_BATCH_ALLOWED_ROOT": str(data_root)}
    trained = tmp / "cache" / "trained-models"
    with ServerProcess(tmp, local_config(), env) as server:
        world = World(server, trained, (data_root / "everyday").as_uri(), held_out)
        yield world
        world.http.close()


def train(http: httpx.Client, **body: Any) -> dict[str, Any]:
    """Submit a training job and wait for its end; the finished job."""
    response = http.post("/v1/training-jobs", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = http.get(job["status_url"]).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"training job still {job['status']} after 600 s: {job['progress']}")


def held_out_accuracy(http: httpx.Client, model: str, held_out: dict[str, list[Path]]) -> float:
    def correct(item: tuple[str, Path]) -> bool:
        category, path = item
        response = http.post("/v1/classify", params={"model": model, "top_k": 1}, content=path.read_bytes())
        response.raise_for_status()
        return response.json()["results"][0]["predictions"][0]["label"] == category

    items = [(category, path) for category, paths in held_out.items() for path in paths]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(correct, items)) / len(items)


@pytest.fixture(scope="module")
def everyday(world: World) -> dict[str, Any]:
    """Version 1 of `everyday`: trained on every kept photo, promoted and loaded (a new model)."""
    job = train(world.http, model="everyday", dataset=world.dataset)
    assert job["status"] == "completed", job["error"]
    return job


def test_trained_model_classifies_unseen_photos_at_least_90_percent(world: World, everyday: dict[str, Any]) -> None:
    result = everyday["result"]
    assert result["version"] == "1" and result["promoted"] and result["loaded"], result
    assert result["images"]["skipped"] == {} and result["images"]["train"] + result["images"]["validation"] == 277
    # A finished job's progress is its last phase, complete (it stayed at "training 0/N" before); the last phase is
    # the registration of the version (after it, the job can no longer be cancelled).
    assert everyday["progress"] == {"phase": "registering", "done": 1, "total": 1}
    report = result["validation"]
    assert len(report["confusion"]) == 10 and sum(map(sum, report["confusion"])) == report["images"]
    assert {m["label"] for m in report["per_class"]} == set(world.held_out)
    accuracy = held_out_accuracy(world.http, "everyday", world.held_out)
    print(
        f"everyday v1: validation {report['accuracy']:.3f}, held-out {accuracy:.3f} "
        f"({sum(map(len, world.held_out.values()))} photos); seconds {result['seconds']}"
    )
    assert accuracy >= MIN_HELD_OUT_ACCURACY
    # The version is registered with its card, metrics and labels, and listed with its accuracy.
    folder = world.trained / "everyday" / "1"
    assert {"config.yaml", "labels.txt", "head.npz", "metrics.json", "MODEL_CARD.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert "Accuracy" in (folder / "MODEL_CARD.md").read_text()
    # `imgserve models prepare` lists it as ready (it said "torchvision is not importable here; not exported").
    settings = ServerSettings(cache_dir=world.trained.parent)
    prepared = prepare_model(ModelRepository.scan(settings, check_backends=False).get("everyday"), settings)
    assert prepared.status == "ready" and "grafted ONNX" in prepared.detail, prepared
    models = {m["name"]: m for m in world.http.get("/v1/models").json()["models"]}
    assert (
        models["everyday"]["state"] == "READY" and models["everyday"]["versions"][0]["accuracy"] == report["accuracy"]
    )


def test_ten_examples_per_category_reuse_the_cached_features(world: World, everyday: dict[str, Any]) -> None:
    job = train(world.http, model="everyday10", dataset=world.dataset, max_train_per_class=10)
    assert job["status"] == "completed", job["error"]
    result = job["result"]
    # At most 10 per category (boats and fish have fewer than 10 training photos left after validation).
    assert 90 <= result["images"]["train"] <= 100 and result["images"]["features_computed"] == 0  # all cached
    # Same dataset, same validation images as version 1 of `everyday`, whatever the training cap.
    assert result["validation"]["images"] == everyday["result"]["validation"]["images"]
    accuracy = held_out_accuracy(world.http, "everyday10", world.held_out)
    print(f"everyday10 (10 per category): held-out {accuracy:.3f}; seconds {result['seconds']}")
    assert accuracy >= 0.75


def closed_loop(http_url: str, model: str, image: bytes, stop: threading.Event, workers: int = 4) -> list[int]:
    """Status codes of back-to-back classify requests from `workers` clients until `stop`."""
    codes: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=http_url, timeout=60) as http:
            while not stop.is_set():
                codes.append(http.post("/v1/classify", params={"model": model}, content=image).status_code)

    threads = [threading.Thread(target=client) for _ in range(workers)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()
    return codes


@pytest.fixture(scope="module")
def second_version(world: World, everyday: dict[str, Any]) -> dict[str, Any]:
    """Version 2 of `everyday` (20 photos per category), registered but not promoted."""
    job = train(world.http, model="everyday", dataset=world.dataset, max_train_per_class=20, promote="never")
    assert job["status"] == "completed", job["error"]
    return job


def test_a_new_version_is_promoted_and_rolled_back_under_load_with_no_failed_request(
    world: World, second_version: dict[str, Any]
) -> None:
    job = second_version
    assert job["result"]["version"] == "2" and not job["result"]["promoted"]
    models = {m["name"]: m for m in world.http.get("/v1/models").json()["models"]}
    versions = {v["version"]: v for v in models["everyday"]["versions"]}
    assert versions["1"]["state"] == "READY" and versions["2"]["state"] == "UNAVAILABLE"
    assert versions["2"]["accuracy"] == job["result"]["validation"]["accuracy"]
    assert world.http.get("/v2/models/everyday/versions/2/ready").status_code == 404

    image = world.held_out["dogs"][0].read_bytes()
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(closed_loop, world.server.http_url, "everyday", image, stop)
        time.sleep(1.0)
        promoted = world.http.post("/v1/models/everyday/versions/2/promote")
        assert promoted.status_code == 200, promoted.text
        time.sleep(1.0)
        triton = triton_http.InferenceServerClient(world.server.http_url.removeprefix("http://"))
        triton.load_model("everyday")  # a reload, as tritonclient does it, under the same load
        time.sleep(1.0)
        rolled_back = world.http.post("/v1/models/everyday/versions/1/promote")
        time.sleep(1.0)
        stop.set()
        codes = load.result()
    assert rolled_back.status_code == 200 and rolled_back.json()["version"] == "1"
    print(f"closed loop during promote, reload and rollback: {len(codes)} requests, statuses {set(codes)}")
    assert len(codes) > 20 and set(codes) == {200}
    assert world.http.get("/v2/models/everyday/versions/1/ready").status_code == 200
    assert world.http.get("/v2/models/everyday/versions/2/ready").status_code == 404


def version_counts(http: httpx.Client, model: str) -> dict[str, float]:
    """imgserve_model_version_requests_total for `model`, by version, from the server's /metrics."""
    counts: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("imgserve_model_version_requests_total{") and f'model="{model}"' in line:
            version = line.split('version="')[1].split('"')[0]
            counts[version] = counts.get(version, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_a_ten_percent_canary_gets_ten_percent_and_promotion_and_rollback_need_no_restart(
    world: World, second_version: dict[str, Any]
) -> None:
    assert world.http.post("/v1/models/everyday/versions/1/promote").status_code == 200
    started = world.http.post("/v1/models/everyday/canary", json={"version": "2", "percent": 10})
    assert started.status_code == 200, started.text
    models = {m["name"]: m for m in world.http.get("/v1/models").json()["models"]}
    versions = {v["version"]: v for v in models["everyday"]["versions"]}
    assert versions["1"]["traffic_percent"] == 90 and versions["2"]["traffic_percent"] == 10
    assert (
        versions["2"]["state"] == "READY" and world.http.get("/v2/models/everyday/versions/2/ready").status_code == 200
    )
    # OIP metadata names both served versions (it said ["1"] and described version 1 when asked for 2)
    assert world.http.get("/v2/models/everyday/versions/2").json()["versions"] == ["1", "2"]
    before = version_counts(world.http, "everyday")
    image = world.held_out["vehicles"][0].read_bytes()

    def answered_by(_: int) -> str:
        response = world.http.post("/v1/classify", params={"model": "everyday", "top_k": 1}, content=image)
        response.raise_for_status()
        return response.json()["results"][0]["model_version"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(answered_by, range(2000)))
    share = answers.count("2") / len(answers)
    after = version_counts(world.http, "everyday")
    counted = {v: after.get(v, 0.0) - before.get(v, 0.0) for v in ("1", "2")}
    print(f"canary 10 %: {answers.count('2')} of {len(answers)} requests to version 2 ({share:.3f}); metrics {counted}")
    assert 0.08 <= share <= 0.12 and set(answers) == {"1", "2"}
    assert counted == {"1": answers.count("1"), "2": answers.count("2")}
    # A version asked for by number bypasses the split.
    pinned = world.http.post("/v1/classify", params={"model": "everyday", "model_version": "2"}, content=image)
    assert pinned.json()["results"][0]["model_version"] == "2"
    # Promote the canary, then roll back, without a restart: every request follows.
    assert world.http.post("/v1/models/everyday/versions/2/promote").json()["version"] == "2"
    assert {answered_by(i) for i in range(20)} == {"2"}
    assert world.http.post("/v1/models/everyday/versions/1/promote").json()["version"] == "1"
    assert {answered_by(i) for i in range(20)} == {"1"}
    assert world.http.get("/v2/models/everyday/versions/2/ready").status_code == 404
    # A canary can also just end.
    assert world.http.post("/v1/models/everyday/canary", json={"version": "2", "percent": 50}).status_code == 200
    assert world.http.delete("/v1/models/everyday/canary").status_code == 200
    assert {answered_by(i) for i in range(10)} == {"1"}
    assert world.http.get("/v2/models/everyday").json()["versions"] == ["1"]


def test_unload_answers_404_and_not_found_while_other_models_serve(world: World, everyday: dict[str, Any]) -> None:
    triton = triton_grpc.InferenceServerClient(world.server.grpc_target)
    if ("everyday10", "READY") not in {(m.name, m.state) for m in triton.get_model_repository_index().models}:
        train(world.http, model="everyday10", dataset=world.dataset, max_train_per_class=10)
    image = world.held_out["food"][0].read_bytes()
    triton.unload_model("everyday10")
    response = world.http.post("/v1/classify", params={"model": "everyday10"}, content=image)
    assert response.status_code == 404 and response.json()["kind"] == "unknown_model"
    with pytest.raises(InferenceServerException) as raised:
        triton.get_model_metadata("everyday10")
    assert "NOT_FOUND" in str(raised.value.status())
    assert world.http.post("/v1/classify", params={"model": "everyday"}, content=image).status_code == 200
    index = {(m.name, m.version): m.state for m in triton.get_model_repository_index().models}
    assert index[("everyday10", "1")] == "UNAVAILABLE" and index[("everyday", "1")] == "READY"
    triton_http.InferenceServerClient(world.server.http_url.removeprefix("http://")).load_model("everyday10")
    assert world.http.post("/v1/classify", params={"model": "everyday10"}, content=image).status_code == 200


def test_training_from_a_collection_saved_from_a_batch_job(world: World, everyday: dict[str, Any]) -> None:
    """A collection (here saved from a batch job, whose inputs live in the job's object store) with a label per
    image given in the request."""
    chosen = {category: world.held_out[category][:6] for category in ("dogs", "birds", "food", "reptiles_amphibians")}
    files = [("image", (path.name, path.read_bytes(), "image/jpeg")) for paths in chosen.values() for path in paths]
    submitted = world.http.post("/v1/batch", files=files)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 120
    while world.http.get(f"/v1/jobs/{job_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    saved = world.http.post(f"/v1/jobs/{job_id}/collection", params={"name": "labelled-batch"})
    assert saved.status_code == 200, saved.text
    labels = {path.name: category for category, paths in chosen.items() for path in paths}
    labels.pop(chosen["dogs"][0].name)  # an image without a label is left out
    job = train(world.http, model="from_collection", collection="labelled-batch", labels=labels)
    assert job["status"] == "completed", job["error"]
    result = job["result"]
    assert result["images"]["train"] + result["images"]["validation"] == 23 and result["images"]["skipped"] == {}
    assert result["images"]["unlabelled"] == 1 and result["labels"] == sorted(chosen)
    assert job["request"]["collection"] == "labelled-batch" and result["loaded"]
    image = world.held_out["birds"][-1].read_bytes()  # not among the 6 birds it was trained on
    answer = world.http.post("/v1/classify", params={"model": "from_collection", "top_k": 1}, content=image).json()
    print(f"from a collection: validation {result['validation']['accuracy']}, unseen bird -> {answer}")
    assert answer["results"][0]["model"] == "from_collection"
    # Both sources at once, or labels without a collection, are a 400.
    both = {"model": "x", "dataset": world.dataset, "collection": "labelled-batch"}
    assert world.http.post("/v1/training-jobs", json=both).status_code == 400
    assert world.http.post("/v1/training-jobs", json={"model": "x", "collection": "nope"}).status_code == 404


def _corrupt_copy(source: Path, target: Path, version: str) -> None:
    """A version folder like `source` whose head file is garbage with a matching sha256 (so only loading finds out)."""
    shutil.copytree(source, target)
    garbage = b"this is not a numpy archive" * 10
    (target / "head.npz").write_bytes(garbage)
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["version"] = version
    config["weights"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    (target / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_corrupt_model_fails_to_load_and_the_served_version_stays(world: World, everyday: dict[str, Any]) -> None:
    _corrupt_copy(world.trained / "everyday" / "1", world.trained / "everyday" / "3", "3")
    refused = world.http.post("/v1/models/everyday/versions/3/promote")
    assert refused.status_code == 400 and refused.json()["kind"] == "model_load_failed", refused.text
    assert "failed to load 'everyday' version 3" in refused.json()["error"]
    assert world.http.get("/v2/models/everyday/versions/1/ready").status_code == 200
    image = world.held_out["birds"][0].read_bytes()
    assert world.http.post("/v1/classify", params={"model": "everyday"}, content=image).status_code == 200
    # A reload reads the policy again: it still serves version 1 (the failed promotion was not kept).
    assert world.http.post("/v2/repository/models/everyday/load").json()["version"] == "1"
    # A corrupt ONNX graph in a new model: refused with the backend's reason.
    broken = world.trained / "broken" / "1"
    broken.mkdir(parents=True)
    garbage = b"\x08\x07not an onnx graph"
    (broken / "model.onnx").write_bytes(garbage)
    config = yaml.safe_load((world.trained / "everyday" / "1" / "config.yaml").read_text())
    config.update(name="broken", version="1", labels=None, export=None)
    config["outputs"] = [{"name": "probs", "dtype": "FP32", "shape": [10], "kind": "probabilities"}]
    digest = hashlib.sha256(garbage).hexdigest()
    config["weights"] = {"file": "model.onnx", "format": "onnx", "sha256": digest, "committed": True}
    (broken / "config.yaml").write_text(yaml.safe_dump(config))
    refused = world.http.post("/v1/models/broken/load")
    assert refused.status_code == 400 and "failed to load 'broken' version 1" in refused.json()["error"], refused.text
    assert world.http.post("/v1/classify", params={"model": "broken"}, content=image).status_code == 404
    assert world.http.post("/v1/classify", params={"model": "everyday"}, content=image).status_code == 200
