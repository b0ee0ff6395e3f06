"""Image API: encoded images in (multipart field `image`, repeatable, or a raw body), results out."""

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.datastructures import UploadFile

from serving.errors import BadRequestError
from serving.http.schemas import (
    AnalysisResult,
    AnalyzeResponse,
    CategoriesResponse,
    ClassifyResponse,
    ClassifyResult,
    MetadataResponse,
    ModelsResponse,
)
from serving.http.state import get_service
from serving.metrics import BYTES_RECEIVED, IMAGES
from serving.service import Analysis, Classification, InferenceService

router = APIRouter(prefix="/v1", tags=["image API"])


async def read_images(request: Request, max_images: int) -> list[bytes]:
    """Images from a multipart form (field `image`, repeatable) or from the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=max_images + 1, max_fields=max_images + 16)
        uploads = form.getlist("image")
        if not uploads:
            raise BadRequestError("multipart request has no field named 'image'")
        images = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise BadRequestError("multipart field 'image' must be a file, not a text value")
            images.append(await upload.read())
    else:
        images = [await request.body()]
    IMAGES.labels(request.url.path, "http").inc(len(images))
    BYTES_RECEIVED.labels("http").inc(sum(len(i) for i in images))
    return images


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    request: Request,
    model: str | None = Query(default=None, description="Model name; the server's default classifier if omitted."),
    top_k: int = Query(default=5, ge=1, le=1000, description="How many classes to return per image."),
    service: InferenceService = Depends(get_service),
) -> ClassifyResponse:
    request.state.model = model or service.default_model
    images = await read_images(request, service.max_images_per_request)
    results = await service.classify(images, model, top_k)
    return ClassifyResponse(results=[classify_result(r) for r in results])


def classify_result(result: Classification) -> ClassifyResult:
    predictions = [asdict(p) for p in result.predictions]
    return ClassifyResult(
        model=result.model, predictions=predictions, timing_ms=result.timing_ms, stage_ms=result.stage_ms
    )


@router.post("/analyze", response_model=AnalyzeResponse, response_model_exclude_none=True)
async def analyze(
    request: Request,
    model: str | None = Query(default=None, description="Classifier; the server's default if omitted."),
    top_k: int = Query(default=5, ge=1, le=1000),
    fields: list[str] | None = Query(default=None, description="Stages to run (repeatable); all when omitted."),
    service: InferenceService = Depends(get_service),
) -> AnalyzeResponse:
    request.state.model = model or service.default_model
    service.analysis_fields(fields)  # reject unknown stages before reading the body
    images = await read_images(request, service.max_images_per_request)
    results = await service.analyze(images, model, top_k, fields)
    return AnalyzeResponse(results=[analysis_result(r) for r in results])


def analysis_result(result: Analysis) -> AnalysisResult:
    classification = classify_result(result.classification) if result.classification else None
    return AnalysisResult(
        classification=classification, quality=result.quality, anomaly=result.anomaly, metadata=result.metadata
    )


@router.post("/metadata", response_model=MetadataResponse)
async def metadata(request: Request, service: InferenceService = Depends(get_service)) -> MetadataResponse:
    """Metadata only: file, image, EXIF, GPS, XMP, IPTC and colours per image (no model runs)."""
    images = await read_images(request, service.max_images_per_request)
    return MetadataResponse(results=await service.extract_metadata(images))


@router.get("/models", response_model=ModelsResponse)
async def models(service: InferenceService = Depends(get_service)) -> ModelsResponse:
    statuses = await service.model_statuses()
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
    entry = service.repository.get(model or service.default_model)
    request.state.model = entry.name
    return CategoriesResponse(
        model=entry.name, categories=[{"index": i, "label": label} for i, label in enumerate(entry.labels)]
    )
