"""Image operations over HTTP: `/v1/convert`, `/v1/enhance` (one image in, one image out) and what they support.

The answer is the image itself with `X-Imgserve-*` headers (sizes, compression ratio, operations, quality before
and after), or with `report=json` a JSON document carrying the same facts and the image as base64. Options are query
parameters (or a JSON body's `options`): `pipelines.convert.options` and `pipelines.enhance.plan` say what each does.
"""

import base64
import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from pipelines.convert import FORMATS, ConvertResult
from pipelines.convert.formats import encoder_missing
from pipelines.enhance import describe_options
from pipelines.limits import DEFAULT_FORMATS
from serving.errors import BadRequestError
from serving.http.dependencies import reject_unknown_query
from serving.http.image_routes import read_images
from serving.image_ops import ImageOperations, OperationOptions

OPERATIONS_TAG = "image operations"
router = APIRouter(prefix="/v1", tags=[OPERATIONS_TAG], dependencies=[Depends(reject_unknown_query)])
# The facts an image answer carries in its headers: exposed to cross-origin pages too (CORS), which otherwise see
# only the safelisted response headers and would have to ask for report=json to read them.
RESULT_HEADERS = tuple(
    f"x-imgserve-{name}"
    for name in (
        "input-bytes", "output-bytes", "compression-ratio", "size", "format", "operations", "operations-detail",
        "score-before", "score-after", "tags-before", "tags-after",
    )
) + ("content-disposition",)  # fmt: skip


HELP = {
    "format": "Output format (jpeg, png, webp, tiff, bmp, gif, avif, heif); the input's when omitted.",
    "quality": "1-100 for lossy formats (jpeg 85, webp 80, avif 50 when omitted).",
    "lossless": "webp/avif/heif lossless encoding.",
    "progressive": "Progressive JPEG / interlaced PNG.",
    "optimize": "JPEG: optimised Huffman tables (smaller, slower).",
    "effort": "Encoder effort: webp 0-6 (2), gif 1-10 (7), avif 0-9 (4).",
    "subsampling": "Chroma subsampling for jpeg/avif: auto, on (4:2:0), off (4:4:4).",
    "compression": "png: zlib level 0-9; tiff: none, deflate, lzw, jpeg, webp, zstd, packbits (where libtiff has it).",
    "max_side": "Fit inside max_side x max_side (aspect kept).",
    "width": "Fit to this width (and height, when given).",
    "height": "Fit to this height (and width, when given).",
    "upscale": "Enlarge when the target is larger than the image.",
    "icc": "srgb (convert to sRGB, the default) or keep the embedded profile.",
    "metadata": "keep (default) or strip EXIF/XMP/IPTC.",
    "anonymize": "Drop GPS and personal fields from kept metadata.",
    "background": "Hex colour alpha is flattened onto for JPEG (ffffff).",
    "animated": "Keep GIF/WebP animation when the output can (true).",
    "auto": "Fix what the quality stage tags (the default when nothing else is asked).",
}


async def conversion_query(
    format: str | None = Query(default=None, description=HELP["format"]),
    quality: int | None = Query(default=None, description=HELP["quality"]),
    lossless: bool | None = Query(default=None, description=HELP["lossless"]),
    progressive: bool | None = Query(default=None, description=HELP["progressive"]),
    optimize: bool | None = Query(default=None, description=HELP["optimize"]),
    effort: int | None = Query(default=None, description=HELP["effort"]),
    subsampling: str | None = Query(default=None, description=HELP["subsampling"]),
    compression: str | None = Query(default=None, description=HELP["compression"]),
    max_side: int | None = Query(default=None, description=HELP["max_side"]),
    width: int | None = Query(default=None, description=HELP["width"]),
    height: int | None = Query(default=None, description=HELP["height"]),
    upscale: bool | None = Query(default=None, description=HELP["upscale"]),
    icc: str | None = Query(default=None, description=HELP["icc"]),
    metadata: str | None = Query(default=None, description=HELP["metadata"]),
    anonymize: bool | None = Query(default=None, description=HELP["anonymize"]),
    background: str | None = Query(default=None, description=HELP["background"]),
    animated: bool | None = Query(default=None, description=HELP["animated"]),
) -> dict[str, Any]:  # fmt: skip
    return {k: v for k, v in locals().items() if v is not None}


async def _one_image(request: Request, query: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The one image of the request and its options: query parameters, overridden by a JSON body's `options`."""
    images, body_options = await read_images(request, 1)
    if len(images) != 1:
        raise BadRequestError(f"{len(images)} images sent: image operations take exactly one (use /v1/batch for many)")
    return images[0], {**query, **body_options}


def _headers(result: ConvertResult) -> dict[str, str]:
    return {
        "X-Imgserve-Input-Bytes": str(result.input_bytes),
        "X-Imgserve-Output-Bytes": str(result.output_bytes),
        "X-Imgserve-Compression-Ratio": f"{result.ratio:.4f}",
        "X-Imgserve-Size": f"{result.width}x{result.height}",
        "X-Imgserve-Format": result.format,
        "Content-Disposition": f'inline; filename="image{FORMATS[result.format].extension}"',
    }


def _answer(result: ConvertResult, summary: dict[str, Any], headers: dict[str, str], report: str) -> Response:
    if report == "json":
        return JSONResponse({**summary, "image_base64": base64.b64encode(result.data).decode()})
    return Response(result.data, media_type=result.content_type, headers=headers)


async def get_operations(request: Request) -> ImageOperations:
    return request.app.state.image_operations


@router.post("/convert", response_class=Response, responses={200: {"content": {"image/*": {}}}})
async def convert(
    request: Request,
    query: dict[str, Any] = Depends(conversion_query),
    report: str | None = Query(default=None, description="image (default): the image; json: facts and base64."),
    operations: ImageOperations = Depends(get_operations),
) -> Response:
    """Convert one image: format, quality, resize, orientation, colour profile, metadata."""
    given = {**query, "report": report}
    OperationOptions.parse(given, enhancing=False)  # reject bad options before reading the body
    data, raw = await _one_image(request, given)
    options = OperationOptions.parse(raw, enhancing=False)
    result = await operations.convert(data, options.convert)
    return _answer(result, result.summary(), _headers(result), options.report)


@router.post("/enhance", response_class=Response, responses={200: {"content": {"image/*": {}}}})
async def enhance(
    request: Request,
    auto: bool | None = Query(default=None, description=HELP["auto"]),
    ops: str | None = Query(default=None, description="Comma-separated operations (GET /v1/enhance/options)."),
    brightness: float | None = Query(default=None, description="0.1-3.0; 1 leaves it as it is."),
    contrast: float | None = Query(default=None, description="0.1-3.0."),
    saturation: float | None = Query(default=None, description="0.1-3.0."),
    sharpness: float | None = Query(default=None, description="0.1-3.0."),
    query: dict[str, Any] = Depends(conversion_query),
    report: str | None = Query(default=None, description="image (default) or json."),
    operations: ImageOperations = Depends(get_operations),
) -> Response:  # fmt: skip
    """Enhance one image, automatically (from its quality tags) or by hand; the quality score before and after."""
    factors = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "sharpness": sharpness}
    enhance_raw = {"auto": auto, "ops": ops, **factors, "report": report}
    given = {**{k: v for k, v in enhance_raw.items() if v is not None}, **query}
    OperationOptions.parse(given, enhancing=True)  # reject bad options before reading the body
    data, raw = await _one_image(request, given)
    options = OperationOptions.parse(raw, enhancing=True)
    assert options.enhance is not None
    outcome = await operations.enhance(data, options.enhance, options.convert)
    headers = _headers(outcome.result)
    headers["X-Imgserve-Operations"] = ",".join(step["operation"] for step in outcome.applied) or "none"
    for name, report_ in (("Before", outcome.before), ("After", outcome.after)):
        if report_ is not None:
            headers[f"X-Imgserve-Score-{name}"] = f"{report_.score:.1f}"
            headers[f"X-Imgserve-Tags-{name}"] = ",".join(t.name for t in report_.tags) or "none"
    headers["X-Imgserve-Operations-Detail"] = json.dumps(outcome.applied, separators=(",", ":"))
    return _answer(outcome.result, outcome.summary(), headers, options.report)


@router.get("/formats")
async def formats() -> dict[str, Any]:
    """Output formats this server writes (and why one is unavailable), their options, and the input formats."""
    listed = []
    for spec in FORMATS.values():
        missing = encoder_missing(spec.name)
        listed.append(
            {
                "format": spec.name,
                "content_type": spec.content_type,
                "extension": spec.extension,
                "available": missing is None,
                **({"reason": missing} if missing else {}),
                "alpha": spec.alpha,
                "animation": spec.animation,
                "lossy": spec.lossy,
                "lossless_option": spec.lossless_option,
                "high_bit_depth": spec.high_bit_depth,
                "options": list(spec.options),
            }
        )
    return {"output": listed, "input": sorted(f.lower() for f in DEFAULT_FORMATS)}


@router.get("/enhance/options")
async def enhance_options() -> dict[str, Any]:
    """Enhancement operations, manual factors and the auto plan (tag -> operation, in order)."""
    return describe_options()
