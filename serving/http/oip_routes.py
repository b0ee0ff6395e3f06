"""Open Inference Protocol (KServe v2) over HTTP/REST, with the binary tensor data extension."""

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from serving.errors import BadRequestError, InvalidTensorError
from serving.http.dependencies import get_service
from serving.model_status import repository_index as model_repository_index
from serving.oip import inference as oip
from serving.oip.tensors import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
    integer_parameter,
    tensor_shape,
)
from serving.service import IMAGE_MODEL_NAME, InferenceService

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])
HEADER_LENGTH = "inference-header-content-length"


def _not_ready(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=503)


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


def config_data_type(datatype: str) -> str:
    """A model configuration's data type for an OIP datatype: Triton names BYTES `TYPE_STRING` there."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


@router.get("/models/{model}/config")
@router.get("/models/{model}/versions/{version}/config", openapi_extra=VERSIONED)
async def model_config(
    model: str, version: str | None = None, service: InferenceService = Depends(get_service)
) -> dict[str, Any]:
    """Triton-style model configuration (name, platform, max_batch_size, dynamic batching)."""
    service.check_loaded(model, version)
    meta = await oip.model_metadata(service, model, version)
    batching = service.served_entry(None if model == IMAGE_MODEL_NAME else model, version or "").config.batching
    return {
        "name": meta["name"],
        "platform": meta["platform"],
        "max_batch_size": batching.max_batch_size,
        "input": [
            {"name": i["name"], "data_type": config_data_type(i["datatype"]), "dims": i["shape"][1:]}
            for i in meta["inputs"]
        ],
        "output": [
            {"name": o["name"], "data_type": config_data_type(o["datatype"]), "dims": o["shape"][1:]}
            for o in meta["outputs"]
        ],
        "dynamic_batching": {
            "preferred_batch_size": batching.preferred_batch_sizes,
            "max_queue_delay_microseconds": int(batching.batch_wait_timeout_ms * 1000),
        },
    }


@router.post("/repository/index")
async def repository_index(request: Request, service: InferenceService = Depends(get_service)) -> list[dict[str, Any]]:
    """One row per model version; `{"ready": true}` in the body lists only the loaded ones (Triton's index)."""
    body = await request.body()
    try:
        ready = bool(json.loads(body).get("ready")) if body.strip() else False
    except (ValueError, AttributeError):
        raise BadRequestError("the repository index body must be empty or a JSON object") from None
    return await model_repository_index(service, ready)


def parse_infer_request(model: str, body: bytes, header_length: str | None) -> oip.InferRequest:
    """JSON, or JSON header + binary tensors (binary tensor data extension), -> `InferRequest`."""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise BadRequestError(f"{HEADER_LENGTH} is {header_length!r} but the body has {len(body)} bytes")
        split = int(header_length)
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, b""
    try:
        payload = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"inference request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("inference request is nested too deeply to parse") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequestError("inference request must be a JSON object with an 'inputs' list")
    offset = 0
    inputs = []
    for item in payload["inputs"]:
        try:
            name, datatype, shape = item["name"], item["datatype"], tensor_shape(item["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTensorError(f"each input needs name, datatype and shape: {exc}") from None
        params = item.get("parameters") or {}
        if "binary_data_size" in params:
            size = integer_parameter(params["binary_data_size"], f"input '{name}': binary_data_size")
            if offset + size > len(binary):
                raise InvalidTensorError(
                    f"input '{name}' says {size} binary bytes but only {len(binary) - offset} remain"
                )
            data = array_from_raw(binary[offset : offset + size], datatype, shape)
            offset += size
        elif "data" in item:
            data = array_from_json(item["data"], datatype, shape)
        else:
            raise InvalidTensorError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        inputs.append(oip.InferInput(name, datatype, shape, data))
    if offset != len(binary):
        raise InvalidTensorError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    try:
        parameters = dict(payload.get("parameters") or {})
        binary_default = bool(parameters.get("binary_data_output", False))
        outputs = []
        for item in payload.get("outputs") or []:
            params = item.get("parameters") or {}
            binary = bool(params.get("binary_data", binary_default))
            classes = integer_parameter(params.get("classification", 0), f"output {item['name']!r}: classification")
            outputs.append(oip.RequestedOutput(str(item["name"]), binary, classes))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidTensorError(f"malformed 'outputs' or 'parameters': {type(exc).__name__}: {exc}") from None
    request_id = payload.get("id") or ""
    if not isinstance(request_id, str):
        raise InvalidTensorError(f"'id' must be a string, got {request_id!r}")
    request = oip.InferRequest(model, inputs, request_id, outputs, parameters, binary_default)
    return request


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
    head = json.dumps(body).encode()  # NaN and Infinity as Triton writes them (JSONResponse refuses them: a 500)
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
    parsed = parse_infer_request(model, await request.body(), request.headers.get(HEADER_LENGTH))
    parsed.version = version or ""
    response = await oip.infer(service, parsed)
    return render_infer_response(response)
