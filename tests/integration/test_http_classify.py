"""The image API over HTTP against the real Ray Serve app: accuracy on 1000 real photos, formats, models."""

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import imagenet_truth
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

REFERENCE_TOP1 = 0.888  # model card: resize256_crop224, bilinear, these 1000 samples


def test_top1_on_1000_imagenet_samples_matches_reference(http: httpx.Client) -> None:
    files = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))
    assert len(files) == 1000
    truth = imagenet_truth()

    def top1(path: Path) -> tuple[str, int]:
        response = http.post("/v1/classify", content=path.read_bytes(), params={"top_k": 1})
        response.raise_for_status()
        return path.name, response.json()["results"][0]["predictions"][0]["index"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = dict(pool.map(top1, files))
    correct = sum(answers[p.name] == truth[p.name.split("_")[0]] for p in files)
    accuracy = correct / len(files)
    print(f"top-1 over HTTP: {accuracy:.3f} ({correct}/1000)")
    assert abs(accuracy - REFERENCE_TOP1) <= 0.01


def test_multipart_images_answer_in_order(http: httpx.Client) -> None:
    names = ["n04335435_streetcar.JPEG", "n03249569_drum.JPEG", "n02101006_Gordon_setter.JPEG"]
    files = [("image", (n, (require(IMAGENET_SAMPLES) / n).read_bytes(), "image/jpeg")) for n in names]
    response = http.post("/v1/classify", files=files, params={"top_k": 3})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    labels = [r["predictions"][0]["label"] for r in results]
    assert labels[0].startswith("streetcar") and labels[1].startswith("drum") and labels[2] == "Gordon setter"
    for r in results:
        assert r["model"] == "mobilenet_v2_imagenet" and len(r["predictions"]) == 3 and r["timing_ms"] > 0
        scores = [p["score"] for p in r["predictions"]]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_other_formats_classify_like_the_jpeg(http: httpx.Client, fmt: str) -> None:
    source = require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG"
    buffer = io.BytesIO()
    Image.open(source).convert("RGB").save(buffer, format=fmt)
    response = http.post("/v1/classify", content=buffer.getvalue(), params={"top_k": 1})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"][0]["label"].startswith("streetcar")


def test_models_and_categories(http: httpx.Client) -> None:
    body = http.get("/v1/models").json()
    assert body["default_model"] == "mobilenet_v2_imagenet"
    states = {m["name"]: m for m in body["models"]}
    assert states["mobilenet_v2_imagenet"]["state"] == "READY"
    assert states["mobilenet_v2_imagenet"]["backend"]["backend"] == "onnxruntime"
    assert states["resnet50"]["state"] in {"READY", "UNAVAILABLE"}
    if states["resnet50"]["state"] == "UNAVAILABLE":
        assert "resnet50" in states["resnet50"]["reason"]
    categories = http.get("/v1/categories", params={"model": "mobilenet_v2_imagenet"}).json()["categories"]
    assert len(categories) == 1001 and categories[0]["label"] == "background"


def test_metrics_count_requests(http: httpx.Client) -> None:
    def count() -> float:
        text = http.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if (
                line.startswith("imgserve_requests_total{")
                and 'endpoint="/v1/models"' in line
                and 'status="200"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = count()
    for _ in range(3):
        assert http.get("/v1/models").status_code == 200
    assert count() == before + 3
