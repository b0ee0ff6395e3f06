"""Collections over HTTP: list, one, its images (filtered, paged), export, report (HTML or JSON), delete, and a
finished batch job saved as a collection. Tenant-scoped like jobs: another tenant's collection is a 404."""

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from pipelines.collections.report_html import CSP as REPORT_CSP
from pipelines.errors import ImageTooLargeError
from pipelines.limits import DecodeLimits
from serving.collections.export import csv_lines, jsonl_lines
from serving.collections.filters import SCORE_RANGE, ImageFilter
from serving.collections.from_job import save_job_as_collection
from serving.collections.reporting import (
    collection_report,
    collection_report_html,
    recorded_image_bytes,
    thumbnail_jpeg,
)
from serving.collections.store import CollectionStore
from serving.http.dependencies import client_host, get_job_service, get_principal, reject_unknown_query
from serving.jobs.errors import ImageNotFoundError
from serving.jobs.service import JobService
from serving.security.audit import AuditEntry
from serving.security.principal import Principal

# The score filters' range in the OpenAPI schema; ImageFilter checks it, with its own message for every caller.
SCORE_SCHEMA: dict[str, Any] = {"json_schema_extra": {"minimum": SCORE_RANGE[0], "maximum": SCORE_RANGE[1]}}

router = APIRouter(prefix="/v1", tags=["collections"], dependencies=[Depends(reject_unknown_query)])


async def get_collection_store(jobs: JobService = Depends(get_job_service)) -> CollectionStore:
    await jobs.ready()  # migrated
    return CollectionStore(jobs.engine)


async def get_decode_limits(request: Request) -> DecodeLimits:
    """The server's decode limits (bytes, pixels, formats): thumbnails decode within them, as analysis does."""
    return request.app.state.image_operations.limits


async def image_filter(
    tag: str | None = Query(default=None, description="Quality tag, e.g. blurry."),
    level: str | None = Query(default=None, description="Quality level: LOW, MEDIUM, HIGH, ULTRA."),
    camera_make: str | None = Query(default=None),
    camera_model: str | None = Query(default=None),
    # 0 to 100: documented here, checked by ImageFilter (a bound here answered nan "less than or equal to 100")
    min_score: float | None = Query(default=None, description="Lowest quality score (inclusive).", **SCORE_SCHEMA),
    max_score: float | None = Query(default=None, description="Highest quality score (inclusive).", **SCORE_SCHEMA),
    taken_after: str | None = Query(default=None, max_length=40, description="ISO date/time (inclusive)."),
    taken_before: str | None = Query(default=None, max_length=40, description="ISO date/time (exclusive)."),
    file_format: str | None = Query(default=None, max_length=16, description="File format, e.g. JPEG."),
    label: str | None = Query(default=None, description="Top class label."),
    failed: bool | None = Query(default=None, description="true: only images that could not be analysed."),
) -> ImageFilter:
    """The filter by the parameters' public names (`FILTER_PARAMETERS`, which `imgserve collection export`'s options
    are made from too; a unit test keeps the two lists the same)."""
    return ImageFilter.from_parameters(locals())


@router.get("/collections")
async def list_collections(
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    infos = await asyncio.to_thread(store.list_collections, principal.read_scope(), limit, offset)
    return {"collections": [info.to_dict() for info in infos]}


@router.get("/collections/{ref}")
async def get_collection(
    ref: str, store: CollectionStore = Depends(get_collection_store), principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    return (await asyncio.to_thread(store.get, ref, principal.read_scope())).to_dict()


@router.get("/collections/{ref}/images")
async def collection_images(
    ref: str,
    after: int = Query(default=0, ge=0, le=2**62, description="Paging cursor: `next` of the previous page."),
    limit: int = Query(default=100, ge=1, le=1000),
    analysis: bool = Query(default=False, description="Include each image's full analysis document."),
    where: ImageFilter = Depends(image_filter),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    info = await asyncio.to_thread(store.get, ref, principal.read_scope())
    rows = await asyncio.to_thread(store.images, info.id, where, after, limit)
    images = []
    for row_id, image in rows:
        item = {**image.record.__dict__, "tags": list(image.record.tags), "id": row_id}
        item.pop("class_probs")
        if analysis:
            item["analysis"] = image.document
        images.append(item)
    return {"collection": info.id, "images": images, "next": rows[-1][0] if len(rows) == limit else None}


@router.get("/collections/{ref}/images/{image_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
async def image_thumbnail(
    ref: str,
    image_id: int = Path(ge=0, le=2**62),
    side: int = Query(default=160, ge=16, le=512, description="Longest side in pixels."),
    jobs: JobService = Depends(get_job_service),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
    limits: DecodeLimits = Depends(get_decode_limits),
) -> Response:
    """A small upright JPEG of one image (its `id` in the listing), read again where it was analysed; 404 when the
    file is gone, 413 when it is over the server's decode limits (pixels, bytes). For browsing a collection as a
    grid (the web UI's Collections page)."""
    info = await asyncio.to_thread(store.get, ref, principal.read_scope())
    image = await asyncio.to_thread(store.image, info.id, image_id)
    if image is None:
        raise ImageNotFoundError(f"collection {info.id} has no image {image_id}")
    data = await asyncio.to_thread(recorded_image_bytes, image, info, jobs)
    try:
        jpeg = await asyncio.to_thread(thumbnail_jpeg, data, side, limits)
    except ImageTooLargeError:
        raise  # 413, checked from the header before any pixel is decoded
    except Exception:  # noqa: BLE001 - the file changed since, or no longer decodes
        raise ImageNotFoundError(f"image {image.record.name!r} no longer decodes") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@router.get("/collections/{ref}/export")
async def export_collection(
    ref: str,
    format: str = Query(default="csv", pattern="^(csv|jsonl)$"),
    where: ImageFilter = Depends(image_filter),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
) -> StreamingResponse:
    info = await asyncio.to_thread(store.get, ref, principal.read_scope())
    where.clauses()  # a bad filter is a 400 before the stream starts
    lines = (csv_lines if format == "csv" else jsonl_lines)(store, info.id, where)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    # The first page is read before the 200 is sent: a filter value the database refuses (a NUL on PostgreSQL) or a
    # database that is down is the request's 4xx/5xx error, not a 200 whose download stops after its header row.
    first = await asyncio.to_thread(next, lines, "")
    # A synchronous iterator: Starlette drains it in its thread pool, so database pages never block the event loop.
    body = itertools.chain((first,), lines)
    return StreamingResponse(body, media_type=media, headers=_attachment(info.name, format))


def _attachment(name: str, extension: str) -> dict[str, str]:
    """Content-Disposition for a download named after the collection: an ASCII fallback plus the UTF-8 name."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}.{extension}\"; "
            f"filename*=UTF-8''{quote(name)}.{extension}"}  # fmt: skip


@router.get("/collections/{ref}/report", response_model=None)
async def collection_report_route(
    ref: str,
    format: str = Query(default="html", pattern="^(html|json)$"),
    jobs: JobService = Depends(get_job_service),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
    limits: DecodeLimits = Depends(get_decode_limits),
) -> HTMLResponse | JSONResponse:
    info = await asyncio.to_thread(store.get, ref, principal.read_scope())
    report = await asyncio.to_thread(collection_report, store, info)
    if format == "json":
        return JSONResponse(report)
    html = await asyncio.to_thread(collection_report_html, store, info, report, jobs, limits)
    headers = {  # the report's own <meta> policy, plus what only a header can say (framing, sniffing)
        "Content-Security-Policy": f"{REPORT_CSP}; frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(html, headers=headers)


@router.delete("/collections/{ref}")
async def delete_collection(
    request: Request,
    ref: str,
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    audit = AuditEntry.by(principal, "collection.delete", client_host(request))
    info = await asyncio.to_thread(store.delete, ref, principal.tenant, audit)
    return {**info.to_dict(), "deleted": True}


@router.post("/jobs/{job_id}/collection")
async def save_job(
    job_id: str,
    name: str = Query(min_length=1, max_length=200, description="Collection to create (or add the job's images to)."),
    jobs: JobService = Depends(get_job_service),
    store: CollectionStore = Depends(get_collection_store),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    job_store = await jobs.ready()
    info = await asyncio.to_thread(save_job_as_collection, job_store, store, job_id, name, principal.tenant)
    return info.to_dict()
