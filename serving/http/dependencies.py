"""FastAPI dependencies: the replica's service and job service, from `app.state` (set by `create_http_app`).

Dependencies that do not block are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread
hand-off per request (with py-spy, ~16 % of the Ingress replica's GIL time on the web mix went to that hand-off
for `get_service`)."""

from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from serving.errors import BadRequestError, ModelUnavailableError, RequestTooLargeError
from serving.jobs.service import JobService
from serving.security.audit import AuditEntry
from serving.security.gate import current_principal
from serving.security.principal import Principal
from serving.service import InferenceService


async def get_service(request: Request) -> InferenceService:
    return request.app.state.service


async def get_job_service(request: Request) -> JobService:
    jobs = request.app.state.jobs
    if jobs is None:
        raise ModelUnavailableError("batch jobs are not enabled in this application")
    return jobs


async def get_principal() -> Principal:
    """The caller the auth middleware admitted (serving.http.auth); ANONYMOUS when auth is off."""
    return current_principal()


def _query_names(dependant: Dependant) -> set[str]:
    return {p.alias for p in dependant.query_params}.union(*(_query_names(d) for d in dependant.dependencies))


_DECLARED: dict[int, tuple[APIRoute, frozenset[str]]] = {}  # id(route) -> (route, names); routes are not hashable


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """The query parameters a route (its endpoint and every dependency) declares, worked out once per route."""
    known = _DECLARED.get(id(route))
    if known is None or known[0] is not route:
        known = _DECLARED[id(route)] = (route, frozenset(_query_names(route.dependant)))
    return known[1]


async def reject_unknown_query(request: Request) -> None:
    """400 for a query parameter the route does not take: a misspelt option (`?to=webp`, `?topk=3`, `?field=`) would
    otherwise be ignored and the request served with the default, as a JSON body's unknown `options` are not. The
    `/v1` routers use it; `/v2` does not (Triton clients may add their own query parameters, Triton ignores them)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = declared_query_parameters(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        accepted = ", ".join(sorted(known)) or "none"
        raise BadRequestError(f"unknown query parameter {names} for {request.method} {route.path}; known: {accepted}")


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


def audit(
    request: Request, principal: Principal, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """One audit entry for what `principal` just did, through the replica's gate (written in the background)."""
    request.app.state.gate.audit(AuditEntry.by(principal, action, client_host(request), target=target, detail=detail))


async def multipart_form(request: Request, max_files: int, max_fields: int) -> FormData:
    """The request's multipart form. Starlette answers a form it cannot take with a bare 400: too many files or
    fields is a 413 `too_large` (as too many images is everywhere else), a malformed body a 400 `bad_request`."""
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except (HTTPException, MultiPartException) as exc:  # HTTPException when the scope has an app, as here
        detail = str(exc.detail if isinstance(exc, HTTPException) else exc.message)
        if detail.startswith(("Too many files", "Too many fields", "Part exceeded maximum size")):
            raise RequestTooLargeError(f"multipart request: {detail}") from None
        raise BadRequestError(f"multipart request: {detail}") from None
