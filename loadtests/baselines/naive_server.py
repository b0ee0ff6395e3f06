"""The baseline most teams write first: FastAPI + uvicorn, full-size Pillow decode, one ONNX Runtime call per request.

    .venv/bin/uvicorn --factory loadtests.baselines.naive_server:create_app --host 127.0.0.1 --port 8100

POST /classify with the raw image bytes as the body -> {"predictions": [{"label", "index", "score"}, ...]}.
The endpoint is a plain (sync) function, so FastAPI runs requests concurrently in its thread pool; each request
decodes the whole photo at full resolution, applies the model's preprocessing (shorter side 256 bilinear,
centre crop 224, (x - 128) / 128, NCHW) and calls `InferenceSession.run` on a batch of one. No batching, no
reduced-scale decode, no limits beyond Pillow's own decompression-bomb check. EXIF orientation is applied so
the answers match imgserve's on phone photos.

The model file defaults to imgserve's verified weights (IMGSERVE_WEIGHTS_DIR or ../shared/models);
NAIVE_MODEL / NAIVE_LABELS override it.
"""

import io
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, ImageOps

MODEL_NAME = "mobilenet_v2_imagenet"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESIZE, CROP = 256, 224


def model_files(model: str = MODEL_NAME) -> tuple[Path, Path]:
    """(ONNX path, labels path) of `model`, the weights located and sha256-verified the way imgserve does it."""
    from serving.config.model_config import load_model_config
    from serving.config.settings import ServerSettings
    from serving.weights import locate_weights

    folder = PROJECT_ROOT / "models" / model
    config = load_model_config(folder / "config.yaml")
    onnx = locate_weights(model, config.weights, folder, ServerSettings.from_env().weights_dir)
    return onnx, folder / (config.labels or "labels.txt")


def preprocess(data: bytes) -> np.ndarray:
    """Encoded image -> float32 [1, 3, 224, 224]: full decode, resize 256 (shorter side), centre crop 224."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (RESIZE, max(1, int(round(height * RESIZE / width))))
    else:
        size = (max(1, int(round(width * RESIZE / height))), RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.float32)
    return ((pixels - 128.0) / 128.0).transpose(2, 0, 1)[None].copy()


async def raw_body(request: Request) -> bytes:
    return await request.body()


def create_app(model_path: str | None = None, labels_path: str | None = None) -> FastAPI:
    model_path = model_path or os.environ.get("NAIVE_MODEL")
    labels_path = labels_path or os.environ.get("NAIVE_LABELS")
    if not model_path or not labels_path:
        default_model, default_labels = model_files()
        model_path, labels_path = model_path or str(default_model), labels_path or str(default_labels)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    labels = Path(labels_path).read_text(encoding="utf-8").splitlines()
    app = FastAPI(title="naive baseline")

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/classify")
    def classify(body: bytes = Depends(raw_body), top_k: int = 5) -> JSONResponse:
        try:
            tensor = preprocess(body)
        except Exception as exc:  # noqa: BLE001 - any undecodable body is the client's fault
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        probs = session.run(None, {input_name: tensor})[0][0]
        top = np.argsort(probs)[::-1][:top_k]
        return JSONResponse(
            {"predictions": [{"label": labels[i], "index": int(i), "score": float(probs[i])} for i in top]}
        )

    return app
