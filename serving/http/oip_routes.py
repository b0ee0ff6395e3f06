"""Open Inference Protocol (KServe v2) over HTTP/REST, with the binary tensor data extension."""

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from serving.errors import BadRequestError, InvalidTensorError, ModelUnavailableError
from serving.http.dependencies import get_service
from serving.model_status import repository_index as model_repository_index
from serving.oip import inference as oip
from serving.oip.model_config import model_config as oip_model_config
from serving.oip.statistics import statistics as oip_statistics
from serving.oip.tensors import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
    integer_parameter,
    one_data_source,
    tensor_shape,
)
from serving.requests import loads_client_json
from serving.service import InferenceService

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])
HEADER_LENGTH = "inference-header-content-length"


def _not_ready(message: str) -> JSONResponse:
    """A readiness probe's "no": 503 with the `{error, kind}` body of every error (`model_unavailable`, as a request
    to a model that is known but not servable gets), answered here rather than raised, so that probes polling a
    starting server are neither counted as errors nor logged."""
    return JSONResponse({"error": message, "kind": ModelUnavailableError.kind}, status_code=503)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return oip.server_metadata()


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(service: InferenceService = Depends(get_service)) -> Response:
    if await service.server_ready():
        return JSONResponse({"ready": True})
    return _not_ready("not every model is ready")


# The versioned paths share the unversioned handlers: one version per model is loaded at a time (its version policy
# chooses it), and a request for another version is a 404; their path parameters are declared here so the OpenAPI
# document matches the routes.
VERSIONED = {
    "parameters": [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in ("model", "version")
    ]
}


@router.get("/models/stats")  # before /models/{model}, which would take "stats" for a model's name
async def all_model_statistics(service: InferenceService = Depends(get_service)) -> dict[str, Any]:
    """Triton's statistics extension (tritonclient's `get_inference_statistics`) for every loaded model version:
    items and batches run, time queued and computing, per batch size, summed over the node's replicas.
    Server-wide figures (every tenant's traffic): with auth on, an operator key of the server's own tenant."""
    return await oip_statistics(service)


@router.get("/models/{model}/stats")
@router.get("/models/{model}/versions/{version}/stats", openapi_extra=VERSIONED)
async def model_statistics(
    model: str, version: str | None = None, service: InferenceService = Depends(get_service)
) -> dict[str, Any]:
    """The statistics of one model's loaded versions, or of one version."""
    return await oip_statistics(service, model, version or "")


@router.get("/models/{model}")
@router.get("/models/{model}/versions/{version}", openapi_extra=VERSIONED)
async def model_metadata(
    model: str, version: str | None = None, service: InferenceService = Depends(get_service)
) -> dict[str, Any]:
    service.check_loaded(model, version)
    return await oip.model_metadata(service, model, version)


@router.get("/models/{model}/ready")
@router.get("/models/{model}/versions/{version}/ready", openapi_extra=VERSIONED)
async def model_ready(
    model: str, version: str | None = None, service: InferenceService = Depends(get_service)
) -> Response:
    service.check_loaded(model, version)
    if await service.model_ready(model):
        return JSONResponse({"name": model, "ready": True})
    return _not_ready(f"model '{model}' is not ready")


@router.get("/models/{model}/config")
@router.get("/models/{model}/versions/{version}/config", openapi_extra=VERSIONED)
async def model_config(
    model: str, version: str | None = None, service: InferenceService = Depends(get_service)
) -> dict[str, Any]:
    """Triton-style model configuration (name, platform, max_batch_size, dynamic batching): gRPC's ModelConfig."""
    return await oip_model_config(service, model, version)


@router.post("/repository/index")
async def repository_index(request: Request, service: InferenceService = Depends(get_service)) -> list[dict[str, Any]]:
    """One row per model version; `{"ready": true}` in the body lists only the loaded ones (Triton's index)."""
    body = await request.body()
    try:
        ready = loads_client_json(body).get("ready", False) if body.strip() else False
    except (ValueError, AttributeError):
        raise BadRequestError("the repository index body must be empty or a JSON object") from None
    if not isinstance(ready, bool):  # the string "false" is not taken as true
        raise BadRequestError(f"the repository index's 'ready' must be true or false, got {ready!r:.40}")
    return await model_repository_index(service, ready)


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _json_object(value: object, what: str) -> dict[str, Any]:
    """`value` when it is a JSON object (absent: an empty one); any other JSON type is the client's error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidTensorError(f"{what} must be a JSON object, got {_json_type(value)}")
    return value


def _bool_parameter(value: object, what: str) -> bool:
    """A true/false parameter (binary_data, binary_data_output): the string "false" is not taken as true."""
    if not isinstance(value, bool):
        raise InvalidTensorError(f"{what} must be true or false, got {value!r:.40}")
    return value


def _named(name: str, read: Callable[[], np.ndarray]) -> np.ndarray:
    """`read()`, its `InvalidTensorError` naming the input, as the gRPC codec's do."""
    try:
        return read()
    except InvalidTensorError as exc:
        raise InvalidTensorError(f"input '{name}': {exc}") from None


def _parse_input(item: object, position: int, binary: bytes, offset: int) -> tuple[oip.InferInput, int]:
    """One entry of `inputs`, each field checked for its JSON type, and the binary data offset after it."""
    if not isinstance(item, dict):
        raise InvalidTensorError(f"inputs[{position}] must be a JSON object, got {_json_type(item)}")
    try:
        name, datatype, shape = item["name"], item["datatype"], tensor_shape(item["shape"])
    except (KeyError, ValueError) as exc:
        raise InvalidTensorError(f"each input needs name, datatype and shape: {exc}") from None
    if not isinstance(name, str):
        raise InvalidTensorError(f"inputs[{position}]: 'name' must be a string, got {_json_type(name)}")
    if not isinstance(datatype, str):
        raise InvalidTensorError(f"input '{name}': 'datatype' must be a string, got {_json_type(datatype)}")
    params = _json_object(item.get("parameters"), f"input '{name}': 'parameters'")
    sources = ["'data'"] if item.get("data") is not None else []  # Triton would read the binary data only
    one_data_source(name, [*sources, "a binary_data_size parameter"] if "binary_data_size" in params else sources)
    if "binary_data_size" in params:
        size = integer_parameter(params["binary_data_size"], f"input '{name}': binary_data_size")
        if size < 0 or offset + size > len(binary):
            raise InvalidTensorError(f"input '{name}' says {size} binary bytes but only {len(binary) - offset} remain")
        data = _named(name, lambda: array_from_raw(binary[offset : offset + size], datatype, shape))
        return oip.InferInput(name, datatype, shape, data), offset + size
    if "data" not in item:
        raise InvalidTensorError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    if not isinstance(item["data"], list):
        raise InvalidTensorError(f"input '{name}': 'data' must be a JSON array, got {_json_type(item['data'])}")
    data = _named(name, lambda: array_from_json(item["data"], datatype, shape))
    return oip.InferInput(name, datatype, shape, data), offset


def _parse_outputs(value: object, binary_default: bool) -> list[oip.RequestedOutput]:
    """The request's `outputs` (absent: every output, as `binary_default` says)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidTensorError(f"'outputs' must be a JSON array, got {_json_type(value)}")
    outputs = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidTensorError(f"outputs[{position}] must be a JSON object, got {_json_type(item)}")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidTensorError(f"outputs[{position}] needs a string 'name', got {_json_type(name)}")
        params = _json_object(item.get("parameters"), f"output '{name}': 'parameters'")
        binary = _bool_parameter(params.get("binary_data", binary_default), f"output '{name}': binary_data")
        classes = integer_parameter(params.get("classification", 0), f"output '{name}': classification")
        outputs.append(oip.RequestedOutput(name, binary, classes))
    return outputs


def parse_infer_request(model: str, body: bytes, header_length: str | None) -> oip.InferRequest:
    """JSON, or JSON header + binary tensors (binary tensor data extension), -> `InferRequest`. A field of the wrong
    JSON type (parameters that are not an object, a datatype that is not a string, ...) is a 400 naming it."""
    if header_length is not None:
        digits = header_length.isascii() and header_length.isdigit()
        # int() of more than 4300 digits raises ValueError (a 500): no body is 10**18 bytes long
        if not digits or len(header_length.lstrip("0")) > 18 or int(header_length) > len(body):
            raise BadRequestError(f"{HEADER_LENGTH} is {header_length!r:.40} but the body has {len(body)} bytes")
        split = int(header_length)
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, b""
    try:
        payload = loads_client_json(head)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer literal past int()'s 4300 digits
        raise BadRequestError(f"inference request is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise BadRequestError("inference request is nested too deeply to parse") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequestError("inference request must be a JSON object with an 'inputs' list")
    offset = 0
    inputs = []
    for position, item in enumerate(payload["inputs"]):
        tensor, offset = _parse_input(item, position, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidTensorError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = dict(_json_object(payload.get("parameters"), "the request's 'parameters'"))
    binary_default = _bool_parameter(parameters.get("binary_data_output", False), "parameter 'binary_data_output'")
    outputs = _parse_outputs(payload.get("outputs"), binary_default)
    request_id = payload.get("id") or ""
    if not isinstance(request_id, str):
        raise InvalidTensorError(f"'id' must be a string, got {request_id!r}")
    return oip.InferRequest(model, inputs, request_id, outputs, parameters, binary_default)


def render_infer_response(response: oip.InferResponse) -> Response:
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        body["id"] = response.id
    blobs: list[bytes] = []
    outputs = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.binary:
            raw = array_to_raw(out.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array_to_json(out.data)
        outputs.append(entry)
    body["outputs"] = outputs
    # strict JSON (RFC 8259): `oip.infer` answers an output of NaN or infinity asked for as JSON with a 422
    # (non_finite_output); one that got here anyway is a server fault, never a body JavaScript or Go cannot parse
    head = json.dumps(body, allow_nan=False).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


@router.post("/models/{model}/infer")
@router.post("/models/{model}/versions/{version}/infer", openapi_extra=VERSIONED)
async def infer(
    model: str, request: Request, version: str | None = None, service: InferenceService = Depends(get_service)
) -> Response:
    service.check_loaded(model, version)
    # a compressed body arrives inflated (serving.http.body_encoding, for every route)
    parsed = parse_infer_request(model, await request.body(), request.headers.get(HEADER_LENGTH))
    parsed.version = version or ""
    response = await oip.infer(service, parsed)
    return render_infer_response(response)
