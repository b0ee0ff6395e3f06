"""Image API: encoded images in (raw body, multipart `image` fields, JSON base64: `serving.requests`), results out."""

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from serving.errors import BadRequestError
from serving.http.dependencies import (
    QueryBool,
    QueryFloat,
    QueryInt,
    QueryOptions,
    get_service,
    multipart_form,
    reject_unknown_query,
)
from serving.http.schemas import (
    AnalysisResult,
    AnalyzeResponse,
    CategoriesResponse,
    ClassifyResponse,
    ClassifyResult,
    MetadataResponse,
    ModelsResponse,
)
from serving.metrics import count_images
from serving.model_status import model_statuses
from serving.requests import ImageOptions, parse_json_request
from serving.service import InferenceService

router = APIRouter(prefix="/v1", tags=["image API"], dependencies=[Depends(reject_unknown_query)])


async def read_images(request: Request, max_images: int) -> tuple[list[bytes], dict[str, Any]]:
    """Images from multipart fields `image` (repeatable), a JSON body (`serving.requests`) or the raw body;
    plus the options a JSON body carries."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    options: dict[str, Any] = {}
    if content_type == "multipart/form-data":
        # one file over the limit is read, so that the service's check counts it (`257 images ...; the limit is 256`)
        too_many = f"more than {max_images + 1} images in one request; the limit is {max_images}"
        form = await multipart_form(request, max_images + 1, max_images + 16, too_many)
        unexpected = sorted(set(form.keys()) - {"image"})
        if unexpected:  # `-F anonymize=true` would otherwise be dropped and the request served without it
            names = ", ".join(repr(name[:40]) for name in unexpected[:5])
            raise BadRequestError(f"unexpected multipart field {names}: send images as 'image', options in the query")
        uploads = form.getlist("image")
        if not uploads:
            raise BadRequestError("multipart request has no field named 'image'")
        images = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise BadRequestError("multipart field 'image' must be a file, not a text value")
            images.append(await upload.read())
    elif content_type == "application/json":
        body = parse_json_request(await request.body())
        images, options = body.encoded_images(), body.options
    else:
        images = [await request.body()]
    count_images(request.url.path, "http", images)
    return images, options


def request_options(query: dict[str, Any], body_options: dict[str, Any]) -> ImageOptions:
    """Query parameters (as the client wrote them: `ImageOptions.parse` reads and refuses them as it does a JSON
    body's or gRPC's), overridden by a JSON body's `options`. Every route reads a body's options with it: an unknown
    or invalid one is a 400 everywhere; a valid one the route does not use (`top_k` on /v1/metadata, `anonymize` on
    /v1/classify) is accepted and changes nothing, as `top_k` on `/v1/analyze?fields=metadata` does."""
    return ImageOptions.parse(**{**query, **body_options})


class MetadataQuery(BaseModel):
    """The query options of `/v1/metadata` (each also a JSON body's `options` field)."""

    anonymize: QueryBool = Field(default=None, description="Drop GPS and personal fields (names, places).")


class ClassifyQuery(BaseModel):
    """The query options of `/v1/classify`, read as the client wrote them (`request_options`): one model read per
    request rather than a FastAPI parameter each (`serving.http.dependencies.QueryOptions`, the cheaper of the two)."""

    model: str | None = Field(default=None, description="Model name; the server's default classifier if omitted.")
    model_version: str | None = Field(default=None, description="A loaded version; omitted: the model's routing.")
    top_k: QueryInt = Field(default=None, description="How many classes to return per image (1-1000, default 5).")
    confidence_threshold: QueryFloat = Field(default=None, description="Leave out classes scoring below this.")


class AnalyzeQuery(ClassifyQuery):
    """The query options of `/v1/analyze`."""

    fields: list[str] | None = Field(default=None, description="Stages to run (repeatable); all when omitted.")
    anonymize: QueryBool = Field(default=None, description="Drop GPS and personal fields from metadata.")


METADATA_QUERY = QueryOptions(MetadataQuery)
CLASSIFY_QUERY = QueryOptions(ClassifyQuery)
ANALYZE_QUERY = QueryOptions(AnalyzeQuery)


async def _images_and_options(
    request: Request, query: BaseModel, service: InferenceService, check: Callable[[ImageOptions], object] | None = None
) -> tuple[list[bytes], ImageOptions]:
    """The request's images and options: the query's, overridden by a JSON body's. Bad query options (and what
    `check` refuses) are refused before the body is read."""
    given = query.model_dump()
    options = request_options(given, {})
    if check is not None:
        check(options)
    images, body_options = await read_images(request, service.max_images_per_request)
    return images, request_options(given, body_options) if body_options else options


@router.post("/classify", response_model=ClassifyResponse, openapi_extra=CLASSIFY_QUERY.openapi)
async def classify(request: Request, query: Annotated[ClassifyQuery, Depends(CLASSIFY_QUERY)]) -> ClassifyResponse:
    service: InferenceService = request.app.state.service
    request.state.model = query.model or service.default_model
    images, options = await _images_and_options(request, query, service)
    request.state.model = options.model or service.default_model
    results = await service.classify(images, options)
    return ClassifyResponse(results=[ClassifyResult.model_validate(r, from_attributes=True) for r in results])


@router.post(
    "/analyze", response_model=AnalyzeResponse, response_model_exclude_none=True, openapi_extra=ANALYZE_QUERY.openapi
)
async def analyze(request: Request, query: Annotated[AnalyzeQuery, Depends(ANALYZE_QUERY)]) -> AnalyzeResponse:
    service: InferenceService = request.app.state.service
    request.state.model = query.model or service.default_model
    images, options = await _images_and_options(
        request, query, service, check=lambda options: service.analysis_fields(options.fields)
    )
    request.state.model = options.model or service.default_model
    results = await service.analyze(images, options)
    return AnalyzeResponse(results=[AnalysisResult.model_validate(r.to_dict()) for r in results])


@router.post("/metadata", response_model=MetadataResponse, openapi_extra=METADATA_QUERY.openapi)
async def metadata(request: Request, query: Annotated[MetadataQuery, Depends(METADATA_QUERY)]) -> MetadataResponse:
    """Metadata only: file, image, EXIF, GPS, XMP, IPTC and colours per image (no model runs)."""
    service: InferenceService = request.app.state.service
    images, options = await _images_and_options(request, query, service)
    return MetadataResponse(results=await service.extract_metadata(images, options.anonymize))


@router.get("/models", response_model=ModelsResponse)
async def models(service: InferenceService = Depends(get_service)) -> ModelsResponse:
    statuses = await model_statuses(service)
    return ModelsResponse(default_model=service.default_model, models=[asdict(s) for s in statuses])


@router.get("/status")
async def status() -> dict[str, Any]:
    """Applications and deployments with their replica counts by state (what autoscaling is doing now)."""
    return await asyncio.to_thread(serve_status)


def serve_status() -> dict[str, Any]:
    from ray import serve

    applications = {}
    for name, app in serve.status().applications.items():
        deployments = {
            deployment: {
                "status": str(info.status.value if hasattr(info.status, "value") else info.status),
                "replicas": {str(getattr(s, "value", s)): n for s, n in info.replica_states.items()},
            }
            for deployment, info in app.deployments.items()
        }
        applications[name] = {"status": str(getattr(app.status, "value", app.status)), "deployments": deployments}
    return {"applications": applications}


@router.get("/categories", response_model=CategoriesResponse)
async def categories(
    request: Request, model: str | None = Query(default=None), service: InferenceService = Depends(get_service)
) -> CategoriesResponse:
    entry = service.repository.get(ImageOptions.parse(model=model).model or service.default_model)  # `?model=`: 400
    request.state.model = entry.name
    return CategoriesResponse(
        model=entry.name, categories=[{"index": i, "label": label} for i, label in enumerate(entry.labels)]
    )
