"""Image operations over HTTP: `/v1/convert`, `/v1/enhance` (one image in, one image out) and what they support.

The answer is the image itself with `X-Imgserve-*` headers (sizes, compression ratio, operations, quality before
and after), or with `report=json` a JSON document carrying the same facts and the image as base64. The headers hold
every fact of the report, an enhancement's included: `X-Imgserve-Quality` carries its verdicts before and after as
the JSON report has them (scores unrounded, levels, tags; `X-Imgserve-Score-*` round to one decimal for reading) and
`X-Imgserve-Reverted` the auto steps it undid (the SDK reads both reports from the headers:
serving.client.http_transport). Options are query parameters (or a JSON body's `options`): `pipelines.convert.options`
and `pipelines.enhance.plan` say what each does.
"""

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from pipelines.convert import FORMATS, ConvertResult
from pipelines.convert.formats import encoder_missing
from pipelines.enhance import describe_options
from pipelines.errors import InvalidOptionError
from pipelines.limits import DEFAULT_FORMATS
from serving.errors import BadRequestError
from serving.http.dependencies import (
    QueryBool,
    QueryFloat,
    QueryInt,
    reject_unknown_query,
    repeated_message,
    repeated_query,
    undeclared_query,
)
from serving.http.image_routes import read_images
from serving.image_ops import EnhanceOutcome, ImageOperations, OperationOptions, not_given

OPERATIONS_TAG = "image operations"
router = APIRouter(prefix="/v1", tags=[OPERATIONS_TAG])
# The facts an image answer carries in its headers: exposed to cross-origin pages too (CORS), which otherwise see
# only the safelisted response headers and would have to ask for report=json to read them.
RESULT_HEADERS = tuple(
    f"x-imgserve-{name}"
    for name in (
        "input-bytes", "output-bytes", "compression-ratio", "size", "format", "input-format", "input-size", "frames",
        "operations", "operations-detail", "score-before", "score-after", "tags-before", "tags-after",
        "level-before", "level-after", "quality", "reverted",
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
    request: Request,
    format: Annotated[str | None, Query(description=HELP["format"])] = None,
    quality: Annotated[QueryInt, Query(description=HELP["quality"])] = None,
    lossless: Annotated[QueryBool, Query(description=HELP["lossless"])] = None,
    progressive: Annotated[QueryBool, Query(description=HELP["progressive"])] = None,
    optimize: Annotated[QueryBool, Query(description=HELP["optimize"])] = None,
    effort: Annotated[QueryInt, Query(description=HELP["effort"])] = None,
    subsampling: Annotated[str | None, Query(description=HELP["subsampling"])] = None,
    compression: Annotated[str | None, Query(description=HELP["compression"])] = None,
    max_side: Annotated[QueryInt, Query(description=HELP["max_side"])] = None,
    width: Annotated[QueryInt, Query(description=HELP["width"])] = None,
    height: Annotated[QueryInt, Query(description=HELP["height"])] = None,
    upscale: Annotated[QueryBool, Query(description=HELP["upscale"])] = None,
    icc: Annotated[str | None, Query(description=HELP["icc"])] = None,
    metadata: Annotated[str | None, Query(description=HELP["metadata"])] = None,
    anonymize: Annotated[QueryBool, Query(description=HELP["anonymize"])] = None,
    background: Annotated[str | None, Query(description=HELP["background"])] = None,
    animated: Annotated[QueryBool, Query(description=HELP["animated"])] = None,
) -> dict[str, Any]:  # fmt: skip
    """The conversion options of the query as the client wrote them, for `OperationOptions.parse` to read as it reads
    gRPC's options map, and any parameter the route does not take: an unknown option, which that parser refuses as
    over gRPC (`unknown conversion options ['fromat']`, `invalid_option`). An empty value is not given
    (`serving.image_ops.EMPTY_OPTION_VALUES`); an option given twice is refused, not read as its last value."""
    given = {name: value for name, value in locals().items() if name != "request" and not not_given(value)}
    repeated = repeated_query(request)
    if repeated:
        raise InvalidOptionError(repeated_message(request, repeated, "option"))
    return {**given, **undeclared_query(request)}


async def _one_image(request: Request, query: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The one image of the request and its options: query parameters, overridden by a JSON body's `options` (an
    empty one, "" or null, is not given: the query's value of it stands)."""
    images, body_options = await read_images(request, 1)
    if len(images) != 1:
        raise BadRequestError(f"{len(images)} images sent: image operations take exactly one (use /v1/batch for many)")
    overrides = {name: value for name, value in body_options.items() if not (not_given(value) and name in query)}
    return images[0], {**query, **overrides}


def _headers(result: ConvertResult) -> dict[str, str]:
    """Every fact of `result.summary()` (the JSON report of a conversion), so that the image answer carries them all
    (the SDK reads a conversion's report from them: serving.client.http_transport)."""
    return {
        "X-Imgserve-Input-Bytes": str(result.input_bytes),
        "X-Imgserve-Output-Bytes": str(result.output_bytes),
        "X-Imgserve-Compression-Ratio": f"{result.ratio:.4f}",
        "X-Imgserve-Size": f"{result.width}x{result.height}",
        "X-Imgserve-Format": result.format,
        "X-Imgserve-Input-Format": result.source.format.lower(),
        "X-Imgserve-Input-Size": f"{result.source.width}x{result.source.height}",
        "X-Imgserve-Frames": str(result.frames),
        "Content-Disposition": f'inline; filename="image{FORMATS[result.format].extension}"',
    }


def _compact(value: Any) -> str:
    """A JSON header value (ASCII: a header carries no other text)."""
    return json.dumps(value, separators=(",", ":"))


def _enhancement_headers(outcome: EnhanceOutcome, summary: dict[str, Any]) -> dict[str, str]:
    """Every fact of an enhancement's JSON report (`summary`, `EnhanceOutcome.summary`): the conversion's, the
    operations, the verdicts before and after (`X-Imgserve-Quality`, as the report has them; the score, level and
    tags headers say the same for reading) and the reverted auto steps (always there: `[]` when none)."""
    headers = _headers(outcome.result)
    headers["X-Imgserve-Operations"] = ",".join(step["operation"] for step in outcome.applied) or "none"
    for name, report_ in (("Before", outcome.before), ("After", outcome.after)):
        if report_ is not None:
            headers[f"X-Imgserve-Score-{name}"] = f"{report_.score:.1f}"
            headers[f"X-Imgserve-Level-{name}"] = report_.level
            headers[f"X-Imgserve-Tags-{name}"] = ",".join(t.name for t in report_.tags) or "none"
    headers["X-Imgserve-Operations-Detail"] = _compact(summary["operations"])
    headers["X-Imgserve-Quality"] = _compact({"before": summary["quality_before"], "after": summary["quality_after"]})
    headers["X-Imgserve-Reverted"] = _compact(summary.get("reverted", []))
    return headers


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
    report: Annotated[str | None, Query(description="image (default): the image; json: facts and base64.")] = None,
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
    auto: Annotated[QueryBool, Query(description=HELP["auto"])] = None,
    ops: Annotated[str | None, Query(description="Comma-separated operations (GET /v1/enhance/options).")] = None,
    brightness: Annotated[QueryFloat, Query(description="0.1-3.0; 1 leaves it as it is.")] = None,
    contrast: Annotated[QueryFloat, Query(description="0.1-3.0.")] = None,
    saturation: Annotated[QueryFloat, Query(description="0.1-3.0.")] = None,
    sharpness: Annotated[QueryFloat, Query(description="0.1-3.0.")] = None,
    query: dict[str, Any] = Depends(conversion_query),
    report: Annotated[str | None, Query(description="image (default) or json.")] = None,
    operations: ImageOperations = Depends(get_operations),
) -> Response:  # fmt: skip
    """Enhance one image, automatically (from its quality tags) or by hand; the quality score before and after."""
    factors = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "sharpness": sharpness}
    enhance_raw = {"auto": auto, "ops": ops, **factors, "report": report}
    given = {**{k: v for k, v in enhance_raw.items() if not not_given(v)}, **query}
    OperationOptions.parse(given, enhancing=True)  # reject bad options before reading the body
    data, raw = await _one_image(request, given)
    options = OperationOptions.parse(raw, enhancing=True)
    assert options.enhance is not None
    outcome = await operations.enhance(data, options.enhance, options.convert)
    summary = outcome.summary()
    return _answer(outcome.result, summary, _enhancement_headers(outcome, summary), options.report)


@router.get("/formats", dependencies=[Depends(reject_unknown_query)])
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


@router.get("/enhance/options", dependencies=[Depends(reject_unknown_query)])
async def enhance_options() -> dict[str, Any]:
    """Enhancement operations, manual factors and the auto plan (tag -> operation, in order)."""
    return describe_options()
