"""FastAPI dependencies: the replica's service and job service, from `app.state` (set by `create_http_app`).

Dependencies that do not block are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread
hand-off per request (with py-spy, ~16 % of the Ingress replica's GIL time on the web mix went to that hand-off
for `get_service`)."""

import types
from collections import Counter
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, WithJsonSchema
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.errors import BadRequestError, ModelUnavailableError, RequestTooLargeError
from serving.jobs.service import JobService
from serving.security.audit import AuditEntry
from serving.security.gate import current_principal
from serving.security.principal import Principal
from serving.service import InferenceService

M = TypeVar("M", bound=BaseModel)


def _documented_as(json_type: str) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": json_type}, {"type": "null"}]})


# An option's query value as the client wrote it, for the parser every transport shares (`OperationOptions.parse`,
# `ImageOptions.parse`) to read and refuse in its own words: a typed FastAPI parameter answered `?quality=high` with
# pydantic's (`query.quality: Input should be a valid integer`), gRPC's options map with the parser's
# (`quality='high': expected an integer from 1 to 100`). The OpenAPI document still says the option's type.
QueryInt = Annotated[str | None, _documented_as("integer")]
QueryFloat = Annotated[str | None, _documented_as("number")]
QueryBool = Annotated[str | None, _documented_as("boolean")]


async def get_service(request: Request) -> InferenceService:
    """The replica's service. The per-image routes (`serving.http.image_routes`, `operation_routes`) read
    `request.app.state` themselves: each dependency is one more solve on every request."""
    return request.app.state.service


async def get_job_service(request: Request) -> JobService:
    jobs = request.app.state.jobs
    if jobs is None:
        raise ModelUnavailableError("batch jobs are not enabled in this application")
    return jobs


async def get_principal() -> Principal:
    """The caller the auth middleware admitted (serving.http.auth); ANONYMOUS when auth is off."""
    return current_principal()


class QueryOptions(Generic[M]):
    """A route's query options as one pydantic model (its fields `str | None`, or `list[str] | None` for a
    repeatable one), read by this dependency: `query: Annotated[ClassifyQuery, Depends(CLASSIFY_QUERY)]`, with
    `openapi_extra=CLASSIFY_QUERY.openapi` to document them. FastAPI works out each declared query parameter's kind
    again on every request: `/v1/classify`'s four cost ~0.1 of the ~0.4 ms its HTTP handling took (in-process ASGI
    calls, no model), where this reads the query once and validates it in one call. `reject_unknown_query` knows
    the fields as the route's parameters."""

    def __init__(self, model: type[M]):
        self.model = model
        self.parameters = {info.alias or name: info.annotation for name, info in model.model_fields.items()}
        self.repeatable = frozenset(name for name, annotation in self.parameters.items() if _takes_many(annotation))
        schema = model.model_json_schema()["properties"]
        self.openapi = {
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "schema": {k: v for k, v in schema[name].items() if k not in ("description", "default")},
                    **({"description": schema[name]["description"]} if "description" in schema[name] else {}),
                }
                for name in self.parameters
            ]
        }

    async def __call__(self, request: Request) -> M:
        given = request.query_params
        values = {
            name: given.getlist(name) if name in self.repeatable else given[name]
            for name in self.parameters
            if name in given
        }
        return self.model.model_validate(values)


def _query_parameters(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    """(name, annotation) of every query parameter of a route: its endpoint's and every dependency's, the fields of
    its `QueryOptions` among them."""
    yield from ((field.alias, field.field_info.annotation) for field in dependant.query_params)
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, QueryOptions):
            yield from dependency.call.parameters.items()
        yield from _query_parameters(dependency)


_SEQUENCES = (list, tuple, set, frozenset)


def _takes_many(annotation: Any) -> bool:
    """Whether a query parameter's annotation is a sequence (`list[str] | None`): FastAPI then reads every value
    of a repeated parameter; of any other it keeps the last."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, Annotated):
        return any(_takes_many(arg) for arg in get_args(annotation)[: 1 if origin is Annotated else None])
    return (origin or annotation) in _SEQUENCES


@dataclass(frozen=True)
class DeclaredQuery:
    """The query parameters a route (its endpoint and every dependency) declares."""

    names: frozenset[str]
    repeatable: frozenset[str]  # list parameters (`fields`, `stages`): FastAPI reads every value, by design


_DECLARED: dict[int, tuple[APIRoute, DeclaredQuery]] = {}  # id(route) -> (route, declared); routes are not hashable


def declared_query_parameters(route: APIRoute) -> DeclaredQuery:
    """What a route declares, worked out once per route (`_takes_many`: which parameters may repeat)."""
    known = _DECLARED.get(id(route))
    if known is None or known[0] is not route:
        parameters = list(_query_parameters(route.dependant))
        repeatable = (name for name, annotation in parameters if _takes_many(annotation))
        declared = DeclaredQuery(frozenset(name for name, _ in parameters), frozenset(repeatable))
        known = _DECLARED[id(route)] = (route, declared)
    return known[1]


def _declared(request: Request) -> DeclaredQuery | None:
    route = request.scope.get("route")
    return declared_query_parameters(route) if isinstance(route, APIRoute) and request.query_params else None


def undeclared_query(request: Request) -> dict[str, str]:
    """The query parameters the request's route does not take, name -> value (the last, if repeated)."""
    declared = _declared(request)
    if declared is None:
        return {}
    return {name: request.query_params[name] for name in sorted(set(request.query_params) - declared.names)}


def repeated_query(request: Request) -> list[str]:
    """The declared parameters that take one value but were given more than once (`?top_k=3&top_k=4`)."""
    declared = _declared(request)
    if declared is None:
        return []
    counts = Counter(name for name, _ in request.query_params.multi_items())
    return sorted(name for name, count in counts.items() if count > 1 and name not in declared.repeatable)


def repeated_message(request: Request, names: list[str], noun: str) -> str:
    """`{noun} 'top_k' is given 2 times; it takes one value` (for each name, client text: bounded)."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    given = "; ".join(f"{noun} {name[:40]!r} is given {counts[name]} times" for name in names[:5])
    return f"{given}; {'each takes' if len(names) > 1 else 'it takes'} one value"


async def reject_unknown_query(request: Request) -> None:
    """400 for a query parameter the route does not take: a misspelt option (`?to=webp`, `?topk=3`, `?field=`) would
    otherwise be ignored and the request served with the default, as a JSON body's unknown `options` are not; and for
    one that takes a single value given twice (FastAPI would keep the last, silently). The `/v1` routers use it;
    `/v2` does not (Triton clients may add their own query parameters, Triton ignores them)."""
    unknown = undeclared_query(request)
    if unknown:
        route = request.scope["route"]  # an APIRoute: `undeclared_query` read what it declares
        names = ", ".join(repr(name[:40]) for name in list(unknown)[:5])
        accepted = ", ".join(sorted(declared_query_parameters(route).names)) or "none"
        raise BadRequestError(f"unknown query parameter {names} for {request.method} {route.path}; known: {accepted}")
    repeated = repeated_query(request)
    if repeated:
        raise BadRequestError(repeated_message(request, repeated, "query parameter"))


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


def audit(
    request: Request, principal: Principal, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """One audit entry for what `principal` just did, through the replica's gate (written in the background)."""
    request.app.state.gate.audit(AuditEntry.by(principal, action, client_host(request), target=target, detail=detail))


class _EndSeenParser(MultiPartParser):
    """Starlette's multipart parser, noting whether the closing boundary (`--<boundary>--`) was read: python-multipart
    keeps the parts completed before a body ends early and says nothing of the rest."""

    closed = False

    def on_end(self) -> None:
        self.closed = True


async def multipart_form(
    request: Request, max_files: int, max_fields: int, too_many_files: str | None = None
) -> FormData:
    """The request's multipart form, read to its closing boundary. Starlette answers a form it cannot take with a
    bare 400: too many files or fields is a 413 `too_large` (as too many images is everywhere else; `too_many_files`
    replaces Starlette's words for the first), a malformed body a 400 `bad_request`, and a body that ends before its
    closing boundary a 400 too (a cut-off upload was served with the images that had arrived)."""
    try:
        async with aclosing(request.stream()) as stream:
            parser = _EndSeenParser(request.headers, stream, max_files=max_files, max_fields=max_fields)
            form = await parser.parse()
    except MultiPartException as exc:
        detail = str(exc.message)
        if too_many_files and detail.startswith("Too many files"):
            raise RequestTooLargeError(too_many_files) from None
        if detail.startswith(("Too many files", "Too many fields", "Part exceeded maximum size")):
            raise RequestTooLargeError(f"multipart request: {detail}") from None
        raise BadRequestError(f"multipart request: {detail}") from None
    if not parser.closed:
        await form.close()
        raise BadRequestError(
            "multipart request ends before its closing boundary ('--<boundary>--'): the body was cut short"
            + (f" after {len(form)} complete part(s)" if len(form) else "")
        )
    return form
