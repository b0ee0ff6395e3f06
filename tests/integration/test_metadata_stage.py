"""The metadata stage in the running graph: /v1/metadata, /v1/analyze?fields=metadata and gRPC Analyze."""

import httpx
import pytest

from serving.grpc.stubs import load
from tests.integration.conftest import RunningServer
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")


def _gps_file() -> bytes:
    return (require(EXIF_SAMPLES) / "jpg" / "gps" / "DSCN0010.jpg").read_bytes()


def test_metadata_endpoint_reads_gps_and_camera(http: httpx.Client) -> None:
    response = http.post("/v1/metadata", content=_gps_file())
    assert response.status_code == 200, response.text
    (meta,) = response.json()["results"]
    assert meta["exif"]["make"] == "NIKON" and meta["exif"]["model"] == "COOLPIX P6000"
    assert meta["gps"]["latitude_deg"] == pytest.approx(43.4674, abs=1e-3)
    assert meta["gps"]["longitude_deg"] == pytest.approx(11.8851, abs=1e-3)
    assert meta["image"]["width"] == 640 and meta["file"]["mime"] == "image/jpeg"
    assert meta["colors"]["palette"] and len(meta["file"]["sha256"]) == 64


def test_analyze_selects_stages(http: httpx.Client) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    both = http.post("/v1/analyze", content=photo).json()["results"][0]
    assert both["classification"]["predictions"][0]["label"].startswith("streetcar")
    assert both["metadata"]["image"]["width"] > 0
    only = http.post("/v1/analyze", content=photo, params={"fields": "metadata"}).json()["results"][0]
    assert "classification" not in only and only["metadata"]["file"]["format"] == "JPEG"
    bad = http.post("/v1/analyze", content=photo, params={"fields": "no_such_stage"})
    assert bad.status_code == 400 and bad.json()["kind"] == "bad_request"


def test_metadata_bad_input(http: httpx.Client) -> None:
    assert http.post("/v1/metadata", content=b"plain text, not an image").status_code == 415
    for path in sorted((require(EXIF_SAMPLES) / "jpg" / "invalid").glob("*.jpg")):
        response = http.post("/v1/metadata", content=path.read_bytes())
        assert response.status_code in (200, 400, 415), f"{path.name}: {response.text}"


def test_grpc_analyze_metadata(server: RunningServer) -> None:
    import grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        response = stub.Analyze(pb.AnalyzeRequest(images=[_gps_file()], fields=["metadata"]), timeout=60)
    analysis = response.results[0]
    assert not analysis.HasField("classification")
    assert analysis.metadata["exif"]["make"] == "NIKON"
    assert analysis.metadata["gps"]["latitude_deg"] == pytest.approx(43.4674, abs=1e-3)
