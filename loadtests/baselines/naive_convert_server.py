"""The conversion baseline teams write first: FastAPI + uvicorn + Pillow, full-size decode, resize, encode.

    .venv/bin/uvicorn --factory loadtests.baselines.naive_convert_server:create_app --host 127.0.0.1 --port 8101

POST /convert?format=webp&quality=80&max_side=2048 with the raw image bytes as the body -> the image. A plain (sync)
endpoint, so FastAPI runs requests in its thread pool (Pillow releases the GIL while it decodes, resizes and
encodes, so it uses every core). `pillow_convert` is also the bulk baseline of `loadtests.convert_bench`.
"""

import io

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageOps

PILLOW_FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"), "png": ("PNG", "image/png")}


def pillow_convert(data: bytes, fmt: str, quality: int, max_side: int) -> bytes:
    """Decode at full size, turn upright, fit inside max_side (Lanczos), encode with Pillow's defaults."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, PILLOW_FORMATS[fmt][0], quality=quality)
    return out.getvalue()


async def raw_body(request: Request) -> bytes:
    return await request.body()


def create_app() -> FastAPI:
    app = FastAPI(title="naive conversion baseline")

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/convert")
    def convert(
        body: bytes = Depends(raw_body), format: str = "webp", quality: int = 80, max_side: int = 2048
    ) -> Response:
        try:
            return Response(pillow_convert(body, format, quality, max_side), media_type=PILLOW_FORMATS[format][1])
        except Exception as exc:  # noqa: BLE001 - any undecodable body is the client's fault
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)

    return app
