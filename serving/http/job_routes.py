"""Batch jobs over HTTP: `POST /v1/batch` (202 + job id), `/v1/jobs` status, live progress, results, cancel, list."""

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from serving.errors import BadRequestError, ServiceError, classify_error
from serving.http.dependencies import client_host, get_job_service, get_principal, multipart_form, reject_unknown_query
from serving.http.progress_streams import ClosingStreamingResponse, take_stream_slot
from serving.jobs.errors import JobNotFoundError
from serving.jobs.idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER, parse_idempotency_key
from serving.jobs.intake import InputPart
from serving.jobs.operations import parse_pairs
from serving.jobs.output_zip import zip_stream
from serving.jobs.records import JOB_STATES
from serving.jobs.results import csv_header, csv_lines, jsonl_lines
from serving.jobs.schemas import BatchRequest, JobEvents, JobList, JobStatus, job_status
from serving.jobs.service import BatchOptions, JobService
from serving.requests import validation_summary
from serving.security.principal import Principal

router = APIRouter(prefix="/v1", tags=["batch jobs"], dependencies=[Depends(reject_unknown_query)])
PAGE = 500
ARCHIVE_TYPES = ("application/zip", "application/x-tar", "application/gzip", "application/x-gtar", "application/x-gzip")
IMAGE_FIELDS, ARCHIVE_FIELDS, URI_FIELDS = {"image", "images", "file"}, {"archive"}, {"uri", "uris"}
IDEMPOTENCY_KEY = Header(  # a module-level parameter (ruff B008): FastAPI reads every value of the header
    default=None,
    alias=IDEMPOTENCY_HEADER,
    description="1-255 printable ASCII characters (a uuid4): a retry with the same key and request answers the job "
    "the first one made (header Idempotent-Replayed: true); a different request with it is a 422.",
)


class NoOutputsError(ServiceError):
    """outputs.zip of a job without a convert/enhance stage: it has no outputs to zip, now or ever."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "no_outputs"


def _uri_lines(text: str) -> list[InputPart]:
    """text/uri-list: one URI per line, '#' comments (RFC 2483)."""
    lines = (line.strip() for line in text.splitlines())
    return [InputPart("uri", line) for line in lines if line and not line.startswith("#")]


# What browsers (the HTML standard's multipart/form-data encoding) and httpx escape in a part's filename: `"`, CR, LF.
_FILENAME_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n"}


def upload_name(filename: str) -> str:
    """A multipart part's filename as its sender named the file: the three escapes the HTML standard has senders
    write undone (a photo named `a"b.jpg` was `a%22b.jpg` in the job's results); nothing else is decoded, so a name
    with other `%` sequences stays as sent. A file really named `a%22b.jpg` reads as `a"b.jpg`, as every server
    following that standard reads it."""
    if "%" not in filename:
        return filename
    return re.sub("%(22|0[dDaA])", lambda m: _FILENAME_ESCAPES[m.group(0).upper()], filename)


async def read_inputs(request: Request, jobs: JobService) -> tuple[list[InputPart], BatchRequest | None]:
    """The request's inputs in order: multipart files/archives/URIs, a raw archive, a JSON or text URI list.

    Multipart files stay in Starlette's spooled temporary files until the request ends (`close_form`).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        limit = jobs.settings.max_files_per_request
        form = await multipart_form(request, limit, limit)
        request.state.batch_form = form
        parts: list[InputPart] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile) and key in IMAGE_FIELDS | ARCHIVE_FIELDS:
                kind = "archive" if key in ARCHIVE_FIELDS else "image"
                parts.append(InputPart(kind, upload_name(value.filename or "") or f"{kind}-{len(parts)}", value.file))
            elif isinstance(value, str) and key in URI_FIELDS:
                parts.extend(_uri_lines(value))
            else:
                raise BadRequestError(f"unexpected multipart field {key!r}: use image, archive or uri")
        return parts, None
    body = await request.body()
    if content_type == "application/json":
        try:
            payload = BatchRequest.model_validate_json(body)
        except ValidationError as exc:
            raise BadRequestError(f"invalid batch request: {validation_summary(exc, BatchRequest)}") from None
        return [InputPart("uri", uri) for uri in payload.uris], payload
    if content_type == "text/uri-list":
        return _uri_lines(body.decode("utf-8", errors="replace")), None
    if content_type in ARCHIVE_TYPES or content_type == "application/octet-stream":
        return [InputPart("archive", "", io.BytesIO(body))], None
    raise BadRequestError(f"unsupported content type {content_type!r} for a batch")


async def close_form(request: Request) -> None:
    form = getattr(request.state, "batch_form", None)
    if form is not None:
        await form.close()


def _status(job_status_: JobStatus, code: int = 200) -> JSONResponse:
    return JSONResponse(job_status_.model_dump(), status_code=code, headers={"Location": job_status_.status_url})


@router.post("/batch", status_code=202, response_model=JobStatus)
async def submit_batch(
    request: Request,
    model: str | None = Query(default=None, description="Model; the server's default classifier if omitted."),
    top_k: int = Query(default=5, ge=1, le=1000),
    stages: list[str] | None = Query(default=None, description="Stages (repeatable or comma-separated)."),
    webhook_url: str | None = Query(default=None, description="POSTed, signed, when the job ends."),
    start: bool = Query(default=True, description="false: leave the job open for POST /v1/jobs/{id}/items."),
    anonymize: bool = Query(default=False, description="Drop GPS and personal fields from metadata results."),
    convert: str | None = Query(default=None, description="Convert every image: key=value,... (/v1/convert's)."),
    enhance: str | None = Query(default=None, description="Enhance every image: key=value,... (/v1/enhance's)."),
    output_suffix: str | None = Query(default=None, description="Added to output names."),
    output_uri: str | None = Query(default=None, description="Also write outputs under this folder URI."),
    idempotency_key: list[str] | None = IDEMPOTENCY_KEY,
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    # Bad options, a bad Idempotency-Key (and refused webhook targets) are a 4xx before the body is read.
    key = parse_idempotency_key(idempotency_key or [])
    operations = {
        "convert": parse_pairs(convert),
        "enhance": parse_pairs(enhance),
        "output_suffix": output_suffix,
        "output_uri": output_uri,
    }
    spec = await jobs.check(BatchOptions(model, top_k, stages, webhook_url, anonymize, **operations), principal.tenant)
    try:
        parts, body = await read_inputs(request, jobs)
        if body is not None:  # a JSON body's fields override the query's: checked again
            options = BatchOptions(
                body.model or model,
                body.top_k or top_k,
                body.stages or stages,
                body.webhook_url or webhook_url,
                body.anonymize or anonymize,
                body.convert if body.convert is not None else operations["convert"],
                body.enhance if body.enhance is not None else operations["enhance"],
                body.output_suffix if body.output_suffix is not None else operations["output_suffix"],
                body.output_uri if body.output_uri is not None else operations["output_uri"],
            )
            spec = await jobs.check(options, principal.tenant)
        submitted = await jobs.submit_with_key(spec, parts, start, principal, client_host(request), key)
    finally:
        await close_form(request)
    answer = _status(job_status(submitted.job, time.time()), 202)
    if submitted.replayed:  # the job an earlier request with this key made: nothing stored or charged again
        answer.headers[REPLAYED_HEADER] = "true"
    return answer


@router.post("/jobs/{job_id}/items", response_model=JobStatus)
async def add_items(
    request: Request,
    job_id: str,
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    try:
        await jobs.get(job_id, principal)  # 404 before the body is read
        parts, _ = await read_inputs(request, jobs)
        job = await jobs.add_items(job_id, parts, principal)
    finally:
        await close_form(request)
    return _status(job_status(job, time.time()))


@router.post("/jobs/{job_id}/start", status_code=202, response_model=JobStatus)
async def start_job(
    job_id: str, jobs: JobService = Depends(get_job_service), principal: Principal = Depends(get_principal)
) -> JSONResponse:
    return _status(job_status(await jobs.start(job_id, principal), time.time()), 202)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    # empty means not given, as for the other options (what an HTML form sends)
    status: str | None = Query(default=None, pattern=f"^({'|'.join(JOB_STATES)})?$", description="Only this state."),
    limit: int = Query(default=50, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> JobList:
    now = time.time()
    return JobList(jobs=[job_status(j, now) for j in await jobs.list_jobs(status, limit, offset, principal)])


@router.get("/jobs/{job_id}", response_model=JobStatus)
async def get_job(
    job_id: str, jobs: JobService = Depends(get_job_service), principal: Principal = Depends(get_principal)
) -> JobStatus:
    return job_status(await jobs.get(job_id, principal), time.time())


@router.delete("/jobs/{job_id}", response_model=None)
async def cancel_job(
    request: Request,
    job_id: str,
    purge: bool = Query(
        default=False, description="Erase the job now: inputs, results and events (admin; the audit entry stays)."
    ),
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> JobStatus | JSONResponse:
    if purge:
        report = await jobs.purge(job_id, principal, client_host(request))
        # `objects`: the job's own stored inputs and outputs, no longer held for it. How many of them were deleted
        # is not said: one kept because another job holds the same bytes would tell the caller that some job,
        # maybe another tenant's, stored that exact file (the audit entry has the count).
        # `job_id` as every other job answer names it; `id` kept for clients written against the first version.
        answer = {"job_id": job_id, "id": job_id, "purged": True, "items": report.items, "objects": report.inputs}
        return JSONResponse(answer)
    return job_status(await jobs.cancel(job_id, principal, client_host(request)), time.time())


@router.get("/jobs/{job_id}/events", response_model=JobEvents)
async def job_events(
    job_id: str, jobs: JobService = Depends(get_job_service), principal: Principal = Depends(get_principal)
) -> JobEvents:
    events, deliveries = await jobs.events(job_id, principal)
    return JobEvents(events=events, webhook_deliveries=deliveries)


FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
HEARTBEAT_S = 15.0
RECHECK_KEY_S = 5.0  # a revoked key's stream ends within this (IMGSERVE_KEY_CACHE_S is the rest of the API's bound)


def _progress_key(status: dict[str, object]) -> str:
    """What a progress event is about: the status without the fields that change with the clock alone."""
    return json.dumps({k: v for k, v in status.items() if k != "timings"}, sort_keys=True, default=str)


def _event(name: str, data: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/jobs/{job_id}/progress", responses={200: {"content": {"text/event-stream": {}}}})
async def job_progress(
    request: Request,
    job_id: str,
    interval: float = Query(default=0.5, ge=0.1, le=10, description="Seconds between looks at the job."),
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> StreamingResponse:
    """Server-sent events (text/event-stream): an `event: progress` with the job's status (as GET /v1/jobs/{id})
    each time it changes, a comment line every 15 s while nothing does, and `event: end` once the job is finished
    (completed, failed or cancelled), after which the stream closes. If the job can no longer be read (purged, the
    store down) or the key is revoked, an `event: error` ({kind, error}) ends the stream instead; a stream that
    ends with neither was cut and can be opened again. The server looks at the job every `interval` seconds; a
    client holds one connection instead of polling. A browser reads it with `fetch` (EventSource cannot send an
    Authorization header). Streams hold no admission slot; at most 64 are open per replica (beyond: 503
    `overloaded`, the server's capacity) and 16 of them per tenant (beyond: 429 `rate_limited` with Retry-After,
    the caller's own limit, which is not a server error)."""
    first = await jobs.get(job_id, principal)  # 404 before the stream starts
    authorization = request.headers.get("authorization")
    gate = request.app.state.gate  # this app's gate (the replica's, in a server)

    async def events() -> AsyncGenerator[str, None]:
        job, last_key, last_sent, key_checked = first, "", time.monotonic(), time.monotonic()
        while True:
            status = job_status(job, time.time()).model_dump()
            key = _progress_key(status)
            if key != last_key:
                yield _event("progress", status)
                last_key, last_sent = key, time.monotonic()
            elif time.monotonic() - last_sent >= HEARTBEAT_S:
                yield ": still running\n\n"
                last_sent = time.monotonic()
            # an ended job's items still in flight (a cancel lets them record) end the stream when they have
            if status["status"] in FINAL_STATES and not status["counts"]["running"]:
                yield _event("end", {"job_id": job_id, "status": status["status"]})
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(interval)
            try:
                if gate.required and time.monotonic() - key_checked >= RECHECK_KEY_S:
                    await gate.authenticator.authenticate(authorization)  # type: ignore[union-attr]
                    key_checked = time.monotonic()
                job = await jobs.get(job_id, principal)
            except Exception as exc:  # noqa: BLE001 - purged, store down, key revoked: said, then the end
                info = classify_error(exc)
                failure = {"job_id": job_id, "code": info.grpc_code, "kind": info.kind, "error": info.message}
                yield _event("error", failure)
                return

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    on_close = take_stream_slot(principal.tenant)  # no await from here to the response: nothing to leak it
    return ClosingStreamingResponse(events(), on_close, media_type="text/event-stream", headers=headers)


@router.get("/jobs/{job_id}/results")
async def job_results(
    job_id: str,
    format: str = Query(default="jsonl", pattern="^(jsonl|csv)$", description="jsonl (default) or csv."),
    after: int = Query(default=-1, ge=-1, le=2**31 - 1, description="Only items with a larger index (paging cursor)."),
    limit: int | None = Query(default=None, ge=1, description="At most this many rows; all (streamed) if omitted."),
    status: str | None = Query(default=None, pattern="^(done|failed)$"),
    jobs: JobService = Depends(get_job_service),
    principal: Principal = Depends(get_principal),
) -> Response:
    job = await jobs.get(job_id, principal)  # 404 before the stream starts
    classified = "classification" in job.stages
    render = partial(csv_lines, classified=classified) if format == "csv" else jsonl_lines

    async def pages() -> AsyncIterator[str]:
        if format == "csv":
            yield csv_header()
        cursor, left = after, limit
        while left is None or left > 0:
            try:
                rows = await jobs.results(job_id, cursor, min(PAGE, left or PAGE), status, principal)
            except JobNotFoundError:  # purged while it was read: the rows sent stand, the stream ends
                return
            if not rows:
                return
            yield render(rows)
            cursor = rows[-1].idx
            left = None if left is None else left - len(rows)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(pages(), media_type=media)


@router.get("/jobs/{job_id}/outputs.zip")
async def job_outputs(
    job_id: str, jobs: JobService = Depends(get_job_service), principal: Principal = Depends(get_principal)
) -> StreamingResponse:
    """The outputs of the job's convert/enhance stage so far, as a zip streamed while it is written (stored, not
    recompressed: images are compressed already). A job without such a stage has none: a 404 `no_outputs`, not an
    empty zip that reads as "nothing written yet"."""
    job = await jobs.get(job_id, principal)  # 404 before the stream starts
    if not job.operations:
        raise NoOutputsError(
            f"job {job_id} has no outputs: only a convert or enhance stage writes them, and it has neither"
        )

    async def pages(after: int) -> list[tuple[int, str, str]]:
        try:
            return await jobs.outputs(job_id, after, PAGE, principal)
        except JobNotFoundError:  # purged while it was read: the archive closes with the outputs written so far
            return []

    headers = {"Content-Disposition": f'attachment; filename="{job_id}-outputs.zip"'}
    return StreamingResponse(zip_stream(pages, jobs.objects()), media_type="application/zip", headers=headers)
