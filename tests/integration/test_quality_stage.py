"""Quality and anomaly stages in the running graph: field selection, tags on real blurred photos, gRPC."""

import grpc
import httpx
import pytest

from serving.grpc.stubs import load
from tests.integration.conftest import RunningServer
from tests.paths import DATA, IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")
BLUR_SAMPLES = DATA / "blur-samples"


def _analyze(http: httpx.Client, data: bytes, fields: str) -> dict:
    response = http.post("/v1/analyze", content=data, params={"fields": fields})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_quality_only_and_anomaly_only(http: httpx.Client) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    quality = _analyze(http, photo, "quality")
    assert set(quality) == {"quality"}
    report = quality["quality"]
    assert 0 <= report["score"] <= 100 and report["level"] in {"LOW", "MEDIUM", "HIGH", "ULTRA"}
    assert report["metrics"]["width"] == 500 and report["model_score"] is not None
    assert all({"name", "confidence", "evidence", "source"} <= set(tag) for tag in report["tags"])
    anomaly = _analyze(http, photo, "anomaly")["anomaly"]
    assert 0 <= anomaly["score"] <= 1 and "blurry" in anomaly["probabilities"]


@pytest.mark.parametrize("path", sorted(BLUR_SAMPLES.glob("*")) if BLUR_SAMPLES.exists() else [], ids=lambda p: p.name)
def test_blur_samples_tagged_through_the_server(http: httpx.Client, path) -> None:  # noqa: ANN001
    tags = {tag["name"] for tag in _analyze(http, path.read_bytes(), "quality")["quality"]["tags"]}
    sharp = path.stem.endswith("_S")
    assert ("blurry" in tags) != sharp, f"{path.name}: tags {sorted(tags)}"


def test_all_stages_over_grpc(server: RunningServer) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n03249569_drum.JPEG").read_bytes()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        response = stub.Analyze(pb.AnalyzeRequest(images=[photo], top_k=1), timeout=60)
    analysis = response.results[0]
    assert analysis.classification.predictions[0].label.startswith("drum")
    assert analysis.quality["level"] in {"LOW", "MEDIUM", "HIGH", "ULTRA"}
    assert 0 <= analysis.anomaly["score"] <= 1
    assert analysis.metadata["file"]["format"] == "JPEG"


@pytest.mark.parametrize("placement", ["graph", "local"])
def test_served_quality_is_the_verdict_function_bit_for_bit(
    placement: str, server: RunningServer, local_server: RunningServer
) -> None:
    """For real photos, the server's `quality` equals `pipelines.quality.quality_verdict` applied to the metrics of
    the same decode and the learned model's served view, in both placements: one tested function, the served one."""
    from pipelines.decode import decode_image
    from pipelines.quality import LearnedQuality, compute_metrics, quality_verdict
    from pipelines.quality.thresholds import default_thresholds
    from serving.repository import ModelRepository

    server = server if placement == "graph" else local_server
    spec = ModelRepository.scan(check_backends=False).get("quality_mos").config.preprocess_spec()
    thresholds = default_thresholds()
    photos = [require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG"] + sorted(require(BLUR_SAMPLES).glob("*"))[:3]
    with httpx.Client(base_url=server.http_url, timeout=60) as http:
        for path in photos:
            data = path.read_bytes()
            served = _analyze(http, data, "quality,anomaly")
            decoded = decode_image(data, {"quality_mos": spec}, working_max_side=thresholds.working_max_side)
            metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
            expected = quality_verdict(metrics, thresholds, LearnedQuality(**served["anomaly"])).to_dict()
            assert served["quality"] == expected, path.name
