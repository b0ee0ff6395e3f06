"""`inference.ModelInferRequest`/`ModelInferResponse` protos <-> the protocol-neutral OIP dataclasses."""

from typing import Any

import numpy as np

from serving.errors import InvalidTensorError
from serving.grpc.stubs import load
from serving.oip import inference as oip
from serving.oip.tensors import (
    array_from_json,
    array_from_raw,
    array_to_raw,
    integer_parameter,
    one_data_source,
    tensor_shape,
)

pb = load("inference_pb2")

# InferTensorContents field per datatype (the spec has no typed field for FP16).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(param: Any) -> Any:
    """Python value of an `InferParameter` (whichever oneof member is set)."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which else None


def _contents_fields(tensor: Any) -> list[str]:
    """The typed `contents` fields an input sets (with values: proto3 cannot tell an empty list from none)."""
    return [field.name for field, _ in tensor.contents.ListFields()]


def _typed_contents(tensor: Any, shape: list[int]) -> np.ndarray:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidTensorError(f"datatype {tensor.datatype} must be sent in raw_input_contents")
    one_data_source(tensor.name, [f"contents.{name}" for name in _contents_fields(tensor)])
    wrong = [name for name in _contents_fields(tensor) if name != field]
    if wrong:  # Triton: "unexpected explicit tensor data ... expected datatype"; read as empty, it said "0 elements"
        raise InvalidTensorError(
            f"input '{tensor.name}' is {tensor.datatype}: its values go in contents.{field}, not contents.{wrong[0]}"
        )
    try:  # the JSON path's checks: the count against the shape, values the datatype cannot hold (300 as UINT8)
        return array_from_json(list(getattr(tensor.contents, field)), tensor.datatype, shape)
    except InvalidTensorError as exc:
        raise InvalidTensorError(f"input '{tensor.name}': {exc}") from None


def _raw_contents(tensor: Any, raw: bytes, shape: list[int]) -> np.ndarray:
    try:  # the input's name in the message, as `_typed_contents` gives it
        return array_from_raw(raw, tensor.datatype, shape)
    except InvalidTensorError as exc:
        raise InvalidTensorError(f"input '{tensor.name}': {exc}") from None


def request_from_proto(request: Any) -> oip.InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensorError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        try:
            shape = tensor_shape([int(d) for d in tensor.shape])
        except ValueError as exc:
            raise InvalidTensorError(f"input '{tensor.name}': {exc}") from None
        if raw:  # Triton: "unexpected explicit tensor data ..., binary data was already supplied"
            one_data_source(tensor.name, ["raw_input_contents", *(f"contents.{f}" for f in _contents_fields(tensor))])
        data = _raw_contents(tensor, raw[i], shape) if raw else _typed_contents(tensor, shape)
        inputs.append(oip.InferInput(tensor.name, tensor.datatype, shape, data))
    outputs = []
    for out in request.outputs:
        params = {k: parameter_value(v) for k, v in out.parameters.items()}
        classes = integer_parameter(params.get("classification") or 0, f"output {out.name!r}: classification")
        outputs.append(oip.RequestedOutput(out.name, True, classes))
    parameters = {k: parameter_value(v) for k, v in request.parameters.items()}
    return oip.InferRequest(request.model_name, inputs, request.id, outputs, parameters, binary_outputs=True)


def response_to_proto(response: oip.InferResponse) -> Any:
    """Outputs always travel in raw_output_contents (what tritonclient and KServe clients read first)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        message.raw_output_contents.append(array_to_raw(out.data))
    return message


def model_config_to_proto(config: dict[str, Any]) -> Any:
    """`serving.oip.model_config.model_config`'s answer (Triton's JSON) as a `ModelConfigResponse`: the data type
    names are the `DataType` enum's, so each field reads in tritonclient as it does over HTTP."""
    batching = config["dynamic_batching"]
    message = pb.ModelConfig(
        name=config["name"],
        platform=config["platform"],
        max_batch_size=config["max_batch_size"],
        dynamic_batching=pb.ModelDynamicBatching(
            preferred_batch_size=batching["preferred_batch_size"],
            max_queue_delay_microseconds=batching["max_queue_delay_microseconds"],
        ),
    )
    for tensor in config["input"]:
        message.input.add(name=tensor["name"], data_type=pb.DataType.Value(tensor["data_type"]), dims=tensor["dims"])
    for tensor in config["output"]:
        message.output.add(name=tensor["name"], data_type=pb.DataType.Value(tensor["data_type"]), dims=tensor["dims"])
    return pb.ModelConfigResponse(config=message)
