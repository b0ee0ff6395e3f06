"""Protocol-neutral Open Inference Protocol operations: metadata and infer, for HTTP and gRPC alike."""

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving import __version__
from serving.errors import InvalidTensorError, ServiceError
from serving.model_statistics import recorded_batch
from serving.oip.tensors import OIP_TO_NUMPY, integer_parameter, oip_datatype
from serving.postprocess import top_k
from serving.requests import ImageOptions
from serving.service import IMAGE_MODEL_NAME, InferenceService

SERVER_EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "statistics"]
IMAGE_MODEL_VERSION = "1"
IMAGE_INPUT = "IMAGE"
IMAGE_OUTPUTS = {"LABELS": "BYTES", "SCORES": "FP32", "INDICES": "INT64"}
DEFAULT_TOP_K = 5


class NonFiniteOutputError(ServiceError):
    """A JSON output holding NaN or an infinity (a model overflowing on finite but extreme inputs): JSON has no such
    numbers (RFC 8259; JavaScript's JSON.parse and Go's encoding/json refuse a bare NaN). Binary outputs carry them."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"  # never over gRPC, whose outputs are raw bytes
    kind = "non_finite_output"


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False
    classification: int = 0


@dataclass
class InferRequest:
    model: str
    inputs: list[InferInput]
    id: str = ""
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: every output
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_outputs: bool = False  # how outputs not listed in `outputs` are returned (binary_data_output)
    version: str = ""  # the version path segment / model_version field; empty: the model's routing (canary split)


@dataclass
class InferOutput:
    name: str
    data: np.ndarray
    binary: bool = False

    @property
    def datatype(self) -> str:
        return oip_datatype(self.data)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]


def server_metadata() -> dict[str, Any]:
    return {"name": "imgserve", "version": __version__, "extensions": SERVER_EXTENSIONS}


async def model_metadata(service: InferenceService, name: str, version: str | None = None) -> dict[str, Any]:
    """OIP model metadata of `version` (default: the loaded one; a canary's when it names it), the platform from the
    model stage's backend, `versions` every version served (loaded, canary); the image-level model describes its
    BYTES input."""
    if name == IMAGE_MODEL_NAME:
        entry = service.served_entry(None)
        return {
            "name": IMAGE_MODEL_NAME,
            "versions": [IMAGE_MODEL_VERSION],
            "platform": "imgserve_image",
            "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": n, "datatype": t, "shape": [-1, -1]} for n, t in IMAGE_OUTPUTS.items()],
            "parameters": {"classifier": entry.name, "top_k": DEFAULT_TOP_K},
        }
    entry = service.served_entry(name, version or "")
    loaded = service.loaded_entry(name)
    canary = service.repository.canaries.get(loaded.name)
    config = entry.config
    info = await service.backend_info(entry.key)  # a canary version's own stage (`<name>@<version>`)
    return {
        "name": config.name,
        "versions": [loaded.version, *([canary[0].version] if canary else [])],
        "platform": info.get("platform", "onnxruntime_onnx"),
        "inputs": [{"name": config.input.name, "datatype": config.input.dtype, "shape": [-1, *config.input.shape]}],
        "outputs": [{"name": o.name, "datatype": o.dtype, "shape": [-1, *o.shape]} for o in config.outputs],
    }


def _classification_strings(values: np.ndarray, labels: tuple[str, ...], k: int, spec: Any) -> np.ndarray:
    """Triton's classification extension: each row's k highest values as `<value>:<index>[:<label>]`, the value
    being the output's own (a logits output's logit, as Triton writes it) and the label the model's only on its
    classification outputs (logits, probabilities): a `raw` output such as a score has no labels of its own."""
    labelled = spec.kind in ("logits", "probabilities")
    if values.dtype == np.object_:  # a BYTES output has no values to rank (it was a 500 from the cast below)
        raise InvalidTensorError(f"output '{spec.name}' is BYTES: the classification extension needs a numeric output")
    rows = []
    for row in values:
        preds = top_k(np.asarray(row, dtype=np.float64).reshape(-1), labels if labelled else (), k)
        rows.append([(f"{p.score:f}:{p.index}" + (f":{p.label}" if labelled else "")).encode() for p in preds])
    out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=np.object_)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


def _int_parameter(parameters: dict[str, Any], name: str, default: int) -> int:
    return integer_parameter(parameters.get(name, default), f"parameter '{name}'")


async def _infer_images(service: InferenceService, request: InferRequest) -> dict[str, np.ndarray]:
    images_in = [i for i in request.inputs if i.name == IMAGE_INPUT] or request.inputs[:1]
    if len(images_in) != 1 or images_in[0].datatype != "BYTES":
        raise InvalidTensorError(
            f"model '{IMAGE_MODEL_NAME}' takes one BYTES input named '{IMAGE_INPUT}' of encoded images"
        )
    images = [bytes(x) for x in images_in[0].data.reshape(-1)]
    k = _int_parameter(request.parameters, "top_k", DEFAULT_TOP_K)
    model = request.parameters.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidTensorError(f"parameter 'model' must be a string, got {model!r}")
    threshold = request.parameters.get("confidence_threshold")
    options = ImageOptions.parse(model=model, top_k=k, confidence_threshold=threshold)
    start = time.perf_counter()  # the image-level model's statistics: the request is its batch, all of it compute
    with recorded_batch(IMAGE_MODEL_NAME, IMAGE_MODEL_VERSION, [start] * len(images), start) as mark:
        mark()  # no input phase: the pipeline below decodes, batches and runs the classifier
        results = await service.classify(images, options)
    width = max(max(len(r.predictions) for r in results), 1)
    labels = np.full((len(results), width), b"", dtype=np.object_)
    scores = np.zeros((len(results), width), dtype=np.float32)
    indices = np.full((len(results), width), -1, dtype=np.int64)
    for i, result in enumerate(results):
        for j, p in enumerate(result.predictions):
            labels[i, j], scores[i, j], indices[i, j] = p.label.encode(), p.score, p.index
    return {"LABELS": labels, "SCORES": scores, "INDICES": indices}


def _check_requested_outputs(outputs: list[RequestedOutput]) -> None:
    """Before the model runs: a classification count below 0 is the client's error, not "no classification"."""
    for output in outputs:
        if output.classification < 0:
            raise InvalidTensorError(
                f"output '{output.name}': classification must be a number of classes, 1 or more (0: none), "
                f"got {output.classification}"
            )


def _json_output(name: str, data: np.ndarray) -> np.ndarray:
    """`data` of an output answered as JSON numbers, or `NonFiniteOutputError` when it holds NaN or an infinity."""
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise NonFiniteOutputError(
            f"output '{name}' holds NaN or infinity (the model overflowed on this input), which JSON cannot carry: "
            'request it as binary data ("binary_data": true) to receive the values as they are'
        )
    return data


async def infer(service: InferenceService, request: InferRequest) -> InferResponse:
    """Run an OIP inference request against a tensor model or the image-level model."""
    if not request.inputs:
        raise InvalidTensorError("request has no inputs")
    _check_requested_outputs(request.outputs)
    if request.model == IMAGE_MODEL_NAME:
        outputs, version, labels, spec_by_name = await _infer_images(service, request), IMAGE_MODEL_VERSION, (), {}
    else:
        entry = service.routed_entry(request.model, request.version)
        expected = entry.config.input
        if len(request.inputs) != 1 or request.inputs[0].name != expected.name:
            names = [i.name for i in request.inputs]
            raise InvalidTensorError(f"model '{entry.name}' takes one input named '{expected.name}', got {names}")
        tensor = request.inputs[0]
        if tensor.datatype != expected.dtype:
            raise InvalidTensorError(f"input '{expected.name}' must be {expected.dtype}, got {tensor.datatype}")
        want = np.dtype(OIP_TO_NUMPY[expected.dtype])
        outputs = await service.infer_on(entry, np.ascontiguousarray(tensor.data, dtype=want))
        version, labels = entry.config.version, entry.labels
        spec_by_name = {o.name: o for o in entry.config.outputs}
    requested = request.outputs or [RequestedOutput(name, request.binary_outputs) for name in outputs]
    result: list[InferOutput] = []
    for req in requested:
        if req.name not in outputs:
            raise InvalidTensorError(f"unknown output '{req.name}'; outputs: {', '.join(outputs)}")
        data = outputs[req.name]
        if req.classification > 0:
            if req.name not in spec_by_name:
                raise InvalidTensorError(f"output '{req.name}' does not support the classification extension")
            data = _classification_strings(data, labels, req.classification, spec_by_name[req.name])
        result.append(InferOutput(req.name, data if req.binary else _json_output(req.name, data), req.binary))
    return InferResponse(request.model, version, request.id, result)
