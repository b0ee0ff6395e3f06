"""The FastAPI application: routers, JSON error bodies, size limit and metrics middleware."""

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import ImageInputError
from serving import __version__, ui
from serving.config.settings import ServerSettings
from serving.errors import ServiceError, classify_error, retry_after_value
from serving.http import (
    audit_routes,
    collection_routes,
    image_routes,
    job_routes,
    model_routes,
    oip_routes,
    operation_routes,
    training_routes,
)
from serving.http.auth import AuthMiddleware, client_address
from serving.http.body_limit import BodySizeLimitMiddleware
from serving.http.head_requests import HeadRequestMiddleware
from serving.http.middleware import (
    AdmissionMiddleware,
    InternalErrorMiddleware,
    RequestMetricsMiddleware,
    ShedMiddleware,
    leaf_routes,
    log_answered_error,
)
from serving.image_ops import ImageOperations
from serving.jobs.service import JobService
from serving.metrics import ERRORS, KNOWN_MODELS, render_metrics
from serving.repository import UnknownModelError
from serving.security.gate import SecurityGate
from serving.security.settings import SecuritySettings
from serving.service import InferenceService
from serving.training.service import TrainingService

logger = logging.getLogger("imgserve.http")


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    info = classify_error(exc)  # its message names the failed image of a list ("image index i"), as on gRPC
    ERRORS.labels(_endpoint(request), info.kind).inc()
    # a role refusal raised inside a service (purge needs an admin) is audited as the gate's are
    request.app.state.gate.audit_refusal(exc, client_address(request.scope), request.url.path[:128])
    log_answered_error(info, request.url.path, exc)
    headers = {"Retry-After": retry_after_value(info.retry_after_s)} if info.retry_after_s is not None else None
    return JSONResponse({"error": info.message, "kind": info.kind}, status_code=info.http_status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    ERRORS.labels(_endpoint(request), f"http_{exc.status_code}").inc()
    body = {"error": str(exc.detail), "kind": f"http_{exc.status_code}"}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)  # a 405's Allow


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """`bad_request` for what FastAPI refuses. Image options never reach it: the routes take them as text, for the
    parser every transport shares to refuse (`serving.http.dependencies.QueryInt`)."""
    ERRORS.labels(_endpoint(request), "bad_request").inc()
    details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {details}", "kind": "bad_request"}, status_code=400)


def http_endpoints(app: FastAPI) -> list[str]:
    """The app's route templates: the `endpoint` label of its requests and errors (`_endpoint`)."""
    return [path for route in leaf_routes(app.routes) if isinstance(path := getattr(route, "path", None), str)]


def create_http_app(
    service: InferenceService,
    jobs: JobService | None = None,
    settings: ServerSettings | None = None,
    gate: SecurityGate | None = None,
) -> FastAPI:
    """The app of one Ingress replica (or a test): routes read `service`, `jobs` and `gate` from `app.state`.
    `gate` None: auth off (tests, tools)."""
    settings = settings or ServerSettings.from_env()
    gate = gate or SecurityGate("off", None, SecuritySettings(auth="off"))
    # /docs is the UI package's own Swagger page (assets served here, not from a CDN); no ReDoc
    app = FastAPI(
        title="imgserve",
        version=__version__,
        description="Image inference and analysis: classification, quality, metadata, conversion, batch jobs",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.jobs = jobs
    app.state.training = TrainingService(service, jobs) if jobs is not None else None
    app.state.gate = gate
    app.state.max_request_bytes = settings.max_request_bytes  # a decompressed OIP body is held to it too
    app.state.image_operations = ImageOperations(service, settings.decode_limits())
    KNOWN_MODELS.update(service.repository.entries, service.pipeline.model_names)  # metrics label values
    app.include_router(oip_routes.router)
    app.include_router(image_routes.router)
    app.include_router(operation_routes.router)
    app.include_router(job_routes.router)
    app.include_router(collection_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(model_routes.router)
    app.include_router(training_routes.router)
    app.include_router(ui.router)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    # Specific classes, not `Exception`: Starlette re-raises after an `Exception` handler. Errors from other
    # replicas arrive as RayError subclasses (usually also instances of the original class).
    # The store's connection errors are an outage of the job/key database (503 store_unavailable, Retry-After).
    handled = (ImageInputError, ServiceError, UnknownModelError, RayError, BackPressureError)
    for error_class in (*handled, sa_exc.OperationalError, sa_exc.InterfaceError):
        app.add_exception_handler(error_class, _service_error)
    app.add_middleware(AdmissionMiddleware)  # innermost: a refusal is still counted and timed
    app.add_middleware(AuthMiddleware, gate=gate)  # before admission: a caller without a key holds no slot
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes, read_timeout_s=settings.body_read_timeout_s
    )
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(ShedMiddleware)  # outside the metrics and auth layers: shedding must cost next to nothing
    if gate.settings.cors_origins:  # off by default; outermost, so preflights are answered without credentials
        from serving.http.cors import JsonCorsMiddleware

        app.add_middleware(
            JsonCorsMiddleware,
            allow_origins=gate.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            # the OIP binary tensor extension's header both ways, and a compressed OIP body's Content-Encoding
            allow_headers=[
                "authorization",
                "content-type",
                "x-request-id",
                "content-encoding",
                oip_routes.HEADER_LENGTH,
            ],
            expose_headers=["x-request-id", "retry-after", oip_routes.HEADER_LENGTH, *operation_routes.RESULT_HEADERS],
        )
    app.add_middleware(HeadRequestMiddleware)  # outermost: every layer under it sees a HEAD as the GET it answers

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    return app
