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

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

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
    QueryOptions,
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


class ConversionQuery(BaseModel):
    """The conversion options of `/v1/convert` and `/v1/enhance`, as the client wrote them, for
    `OperationOptions.parse` to read as it reads gRPC's options map (`QueryOptions`)."""

    format: str | None = Field(default=None, description=HELP["format"])
    quality: QueryInt = Field(default=None, description=HELP["quality"])
    lossless: QueryBool = Field(default=None, description=HELP["lossless"])
    progressive: QueryBool = Field(default=None, description=HELP["progressive"])
    optimize: QueryBool = Field(default=None, description=HELP["optimize"])
    effort: QueryInt = Field(default=None, description=HELP["effort"])
    subsampling: str | None = Field(default=None, description=HELP["subsampling"])
    compression: str | None = Field(default=None, description=HELP["compression"])
    max_side: QueryInt = Field(default=None, description=HELP["max_side"])
    width: QueryInt = Field(default=None, description=HELP["width"])
    height: QueryInt = Field(default=None, description=HELP["height"])
    upscale: QueryBool = Field(default=None, description=HELP["upscale"])
    icc: str | None = Field(default=None, description=HELP["icc"])
    metadata: str | None = Field(default=None, description=HELP["metadata"])
    anonymize: QueryBool = Field(default=None, description=HELP["anonymize"])
    background: str | None = Field(default=None, description=HELP["background"])
    animated: QueryBool = Field(default=None, description=HELP["animated"])


class ConvertQuery(ConversionQuery):
    report: str | None = Field(default=None, description="image (default): the image; json: facts and base64.")


class EnhancementQuery(BaseModel):
    auto: QueryBool = Field(default=None, description=HELP["auto"])
    ops: str | None = Field(default=None, description="Comma-separated operations (GET /v1/enhance/options).")
    brightness: QueryFloat = Field(default=None, description="0.1-3.0; 1 leaves it as it is.")
    contrast: QueryFloat = Field(default=None, description="0.1-3.0.")
    saturation: QueryFloat = Field(default=None, description="0.1-3.0.")
    sharpness: QueryFloat = Field(default=None, description="0.1-3.0.")


class EnhanceQuery(ConversionQuery, EnhancementQuery):  # the enhancement's own options first (pydantic's order)
    report: str | None = Field(default=None, description="image (default) or json.")


CONVERT_QUERY = QueryOptions(ConvertQuery)
ENHANCE_QUERY = QueryOptions(EnhanceQuery)


def given_options(request: Request, query: BaseModel) -> dict[str, Any]:
    """The options of the query as the client wrote them, and any parameter the route does not take: an unknown
    option, which `OperationOptions.parse` refuses as over gRPC (`unknown conversion options ['fromat']`,
    `invalid_option`). An empty value is not given (`serving.image_ops.EMPTY_OPTION_VALUES`); an option given twice
    is refused, not read as its last value."""
    given = {name: value for name, value in query.model_dump().items() if not not_given(value)}
    repeated = repeated_query(request)
    if repeated:
        raise InvalidOptionError(repeated_message(request, repeated, "option"))
    return {**given, **undeclared_query(request)}


async def _image_and_options(request: Request, query: BaseModel, enhancing: bool) -> tuple[bytes, OperationOptions]:
    """The one image of the request and its options: query parameters (`given_options`, refused before the body is
    read when bad), overridden by a JSON body's `options` (an empty one, "" or null, is not given: the query's value
    of it stands)."""
    given = given_options(request, query)
    options = OperationOptions.parse(given, enhancing)
    images, body_options = await read_images(request, 1)
    if len(images) != 1:
        raise BadRequestError(f"{len(images)} images sent: image operations take exactly one (use /v1/batch for many)")
    overrides = {name: value for name, value in body_options.items() if not (not_given(value) and name in given)}
    return images[0], OperationOptions.parse({**given, **overrides}, enhancing) if overrides else options


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


@router.post(
    "/convert",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}},
    openapi_extra=CONVERT_QUERY.openapi,
)
async def convert(request: Request, query: Annotated[ConvertQuery, Depends(CONVERT_QUERY)]) -> Response:
    """Convert one image: format, quality, resize, orientation, colour profile, metadata."""
    operations: ImageOperations = request.app.state.image_operations
    data, options = await _image_and_options(request, query, enhancing=False)
    result = await operations.convert(data, options.convert)
    return _answer(result, result.summary(), _headers(result), options.report)


@router.post(
    "/enhance",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}},
    openapi_extra=ENHANCE_QUERY.openapi,
)
async def enhance(request: Request, query: Annotated[EnhanceQuery, Depends(ENHANCE_QUERY)]) -> Response:
    """Enhance one image, automatically (from its quality tags) or by hand; the quality score before and after."""
    operations: ImageOperations = request.app.state.image_operations
    data, options = await _image_and_options(request, query, enhancing=True)
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
