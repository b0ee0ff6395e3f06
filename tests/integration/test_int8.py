"""The INT8 classifier: built by `imgserve models prepare`, checked against float, served on CPU, accurate over HTTP.

One build (about a minute on 2 cores) into a private cache directory, then `make serve`'s configuration on that
cache. Calibration photos (BIQ2021) and check photos (the 1000 ImageNet samples) come from ../shared/data.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.server_process import ServerProcess
from serving.config.settings import ServerSettings
from serving.export import prepare_repository
from serving.quantize import int8_paths, read_int8_report, served_int8
from serving.repository import ModelRepository
from tests.integration.conftest import correct_top1, local_config, server_env
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.integration

MODEL = "mobilenet_v2_imagenet"
MIN_TOP1 = 0.879  # issue #19: 99 % of float's 88.8 % on these 1000 photos (MLPerf's rule)
BIQ = PROJECT_ROOT.parent / "shared" / "data" / "biq2021-train" / "images"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ServerSettings]:
    """A server folder whose cache holds the INT8 build, and the settings it was built with."""
    require(MOBILENET_DIR), require(IMAGENET_SAMPLES), require(BIQ)
    folder = tmp_path_factory.mktemp("int8")
    settings = ServerSettings(cache_dir=folder / "cache")
    results = {r.model: r for r in prepare_repository(settings)}
    assert results[f"{MODEL} (int8)"].status == "built", results[f"{MODEL} (int8)"].detail
    return folder, settings


def test_int8_build_keeps_top1_within_one_percent_of_float(built: tuple[Path, ServerSettings]) -> None:
    _, settings = built
    entry = ModelRepository.scan(settings, check_backends=False).get(MODEL)
    report = read_int8_report(entry.config, settings)
    assert report is not None
    print(report.summary())
    assert report.images == 1000 and report.calibration_folder != report.check_folder
    assert report.passed and report.int8_top1 >= MIN_TOP1 and report.int8_top1 >= 0.99 * report.float_top1
    assert report.top1_agreement >= 0.95
    # The repository serves what passed, from the cache; `serve: false` is the one line that goes back to float.
    assert entry.artifacts.onnx_int8 == int8_paths(entry.config, settings)[0] and entry.artifacts.onnx_int8.is_file()
    assert entry.config.int8 is not None
    float_config = entry.config.model_copy(update={"int8": entry.config.int8.model_copy(update={"serve": False})})
    assert served_int8(float_config, settings) is None
    # A second prepare reuses the build instead of redoing it.
    again = {r.model: r for r in prepare_repository(settings)}
    assert again[f"{MODEL} (int8)"].status == "ready"


def test_a_failed_check_is_not_served(built: tuple[Path, ServerSettings]) -> None:
    _, settings = built
    config = ModelRepository.scan(settings, check_backends=False).get(MODEL).config
    _, report_path = int8_paths(config, settings)
    original = report_path.read_text()
    try:
        report_path.write_text(original.replace('"passed": true', '"passed": false'))
        assert served_int8(config, settings) is None
    finally:
        report_path.write_text(original)
    assert served_int8(config, settings) is not None


@pytest.fixture(scope="module")
def int8_server(built: tuple[Path, ServerSettings]) -> Iterator[ServerProcess]:
    folder, _ = built
    with ServerProcess(folder, local_config(), server_env(folder)) as process:
        yield process


def test_served_int8_classifies_the_1000_photos_over_http(int8_server: ServerProcess) -> None:
    with httpx.Client(base_url=int8_server.http_url, timeout=60) as http:
        models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert models[MODEL]["backend"]["precision"] == "int8", models[MODEL]
        files = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))
        correct = correct_top1(http, files, workers=16)
    print(f"INT8 top-1 over HTTP: {correct / len(files):.3f}")
    assert len(files) == 1000 and correct / len(files) >= MIN_TOP1
    # Scores are the model's probabilities, not rounded to 1/255: every one of the top 5 is above zero and they are
    # in order (quantised, the streetcar's 4th and 5th classes read 0.0 and came in index order: background, tench).
    with httpx.Client(base_url=int8_server.http_url, timeout=60) as http:
        photo = require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG"
        response = http.post("/v1/classify", params={"top_k": 5}, content=photo.read_bytes())
    scores = [p["score"] for p in response.json()["results"][0]["predictions"]]
    assert all(score > 0 for score in scores) and scores == sorted(scores, reverse=True), scores
