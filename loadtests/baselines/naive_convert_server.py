"""The conversion baseline teams write first: FastAPI + uvicorn + Pillow, full-size decode, resize, encode.

    .venv/bin/uvicorn --factory loadtests.baselines.naive_convert_server:create_app --host 127.0.0.1 --port 8101

POST /convert?format=webp&quality=80&max_side=2048 with the raw image bytes as the body -> the image. A plain (sync)
endpoint, so FastAPI runs requests in its thread pool (Pillow releases the GIL while it decodes, resizes and
encodes, so it uses every core). `loadtests.baselines.pillow_convert` (the same function) is also the bulk baseline
of `loadtests.convert_bench`.
"""

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from loadtests.baselines.pillow_convert import PILLOW_FORMATS, pillow_convert


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
