"""`QueryOptions`: a route's query options read as one model, documented and known to `reject_unknown_query`."""

import asyncio

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from starlette.requests import Request

from serving.errors import BadRequestError
from serving.http.dependencies import QueryInt, QueryOptions, declared_query_parameters, reject_unknown_query


class ExampleQuery(BaseModel):
    model: str | None = Field(default=None, description="Which model.")
    top_k: QueryInt = Field(default=None, description="How many.")
    fields: list[str] | None = None


EXAMPLE = QueryOptions(ExampleQuery)


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/x", "query_string": query, "headers": []})


def test_values_are_read_as_text_and_a_list_field_takes_every_value() -> None:
    read = asyncio.run(EXAMPLE(_request(b"top_k=3&fields=a&fields=b&other=1")))
    assert read == ExampleQuery(top_k="3", fields=["a", "b"])  # `other` is for reject_unknown_query to refuse
    assert asyncio.run(EXAMPLE(_request(b""))) == ExampleQuery()


def test_the_fields_are_documented_as_query_parameters_with_their_types() -> None:
    documented = {p["name"]: p for p in EXAMPLE.openapi["parameters"]}
    assert list(documented) == ["model", "top_k", "fields"]
    assert all(p["in"] == "query" and p["required"] is False for p in documented.values())
    assert documented["top_k"]["description"] == "How many."
    assert {"type": "integer"} in documented["top_k"]["schema"]["anyOf"]
    assert "description" not in documented["fields"]


def test_a_route_reading_them_declares_them_and_refuses_others() -> None:
    app = FastAPI()

    @app.post("/x", dependencies=[Depends(reject_unknown_query)], openapi_extra=EXAMPLE.openapi)
    async def endpoint(query: ExampleQuery = Depends(EXAMPLE)) -> dict[str, object]:
        return query.model_dump()

    route = next(r for r in app.routes if getattr(r, "path", None) == "/x")
    declared = declared_query_parameters(route)  # type: ignore[arg-type]
    assert declared.names == {"model", "top_k", "fields"} and declared.repeatable == {"fields"}

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    app.add_exception_handler(BadRequestError, bad_request)
    with TestClient(app) as client:
        assert client.post("/x?top_k=2&fields=a&fields=b").json() == {"model": None, "top_k": "2", "fields": ["a", "b"]}
        refused = client.post("/x?topk=2")
        assert refused.status_code == 400 and "unknown query parameter 'topk'" in refused.json()["error"]
        assert client.post("/x?top_k=2&top_k=3").status_code == 400  # one value only
        parameters = client.get("/openapi.json").json()["paths"]["/x"]["post"]["parameters"]
        assert [p["name"] for p in parameters] == ["model", "top_k", "fields"]
