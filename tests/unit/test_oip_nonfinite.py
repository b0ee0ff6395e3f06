"""OIP floating-point tensors hold finite numbers only, and an answer is always valid JSON.

A hostile-client walkthrough sent FP32 `data` of NaN, Infinity, -Infinity, 1e400, 1e39 and 3.5e38 (all 200), and got
`"data": [NaN, ...]` back: no JSON parser but Python's reads that (RFC 8259 has no NaN). Inputs of NaN, an infinity
or a number past the datatype's range are now 400 `invalid_tensor` however they are sent (JSON `data`, gRPC typed
contents, raw bytes); an output a model made NaN from finite inputs is a 422 `non_finite_output` as JSON and travels
as it is in binary. A negative `classification` count was ignored (raw values answered); it is a 400 now.
"""

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.config.app_args import AppArgs
from serving.errors import InvalidTensorError, classify_error
from serving.http.app import create_http_app
from serving.oip import inference as oip
from serving.oip.tensors import array_from_json, array_from_raw, one_data_source
from serving.placement import IngressConfig, build_service, compose
from serving.service import InferenceService
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

SHAPE = [1, 3, 32, 32]  # the tiny classifier's input
COUNT = int(np.prod(SHAPE))
FP32_MAX = 3.4028234663852886e38


def strict_json(text: str | bytes) -> object:
    """JSON as JavaScript's JSON.parse and Go's encoding/json read it: NaN and Infinity are errors."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e400, -1e400])
def test_json_values_that_are_not_finite_numbers_are_invalid_tensors(datatype: str, value: float) -> None:
    with pytest.raises(InvalidTensorError, match=f"not valid {datatype}: a value is NaN, infinite or outside") as info:
        array_from_json([0.5, value, 1.0], datatype, [3])
    assert classify_error(info.value).http_status == 400


@pytest.mark.parametrize(
    ("datatype", "value", "limits"),
    [
        ("FP32", 3.5e38, r"-3.4028235e\+38..3.4028235e\+38"),  # the walkthrough's: finite JSON, infinite as FP32
        ("FP32", -1e39, r"-3.4028235e\+38..3.4028235e\+38"),
        ("FP16", 65520.0, "-65504..65504"),  # rounds to infinity
        ("FP16", 70000, "-65504..65504"),  # an integer too
    ],
)
def test_finite_json_numbers_past_the_datatypes_range_are_invalid_tensors(
    datatype: str, value: float, limits: str
) -> None:
    with pytest.raises(InvalidTensorError, match=f"not valid {datatype}: .*outside {limits}"):
        array_from_json([value], datatype, [1])


def test_finite_extremes_are_read_as_they_are() -> None:
    data = [FP32_MAX, -FP32_MAX, 1e-40, 1e-400, 0.0]  # subnormal and underflow to 0 are still numbers
    np.testing.assert_array_equal(array_from_json(data, "FP32", [5]), np.array(data, dtype=np.float32))
    assert array_from_json([65504, -65504], "FP16", [2]).tolist() == [65504.0, -65504.0]
    assert array_from_json([1.7976931348623157e308], "FP64", [1]).tolist() == [1.7976931348623157e308]


def test_grpc_typed_contents_of_nan_are_refused() -> None:
    """The gRPC codec reads `fp32_contents` through `array_from_json` (values already float32: nan, inf)."""
    contents = list(np.full(COUNT, np.nan, dtype=np.float32).tolist())
    with pytest.raises(InvalidTensorError, match="not valid FP32"):
        array_from_json(contents, "FP32", SHAPE)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_raw_bytes_of_nan_or_infinity_are_refused(datatype: str, value: float) -> None:
    raw = np.array([1.0, value], dtype=np.dtype(datatype.replace("FP", "float")).newbyteorder("<")).tobytes()
    with pytest.raises(InvalidTensorError, match=f"not valid {datatype}"):
        array_from_raw(raw, datatype, [2])
    assert array_from_raw(raw[: len(raw) // 2], datatype, [1]).tolist() == [1.0]


def test_an_input_with_values_in_two_places_is_refused() -> None:
    one_data_source("input", ["raw_input_contents"])
    one_data_source("input", [])
    with pytest.raises(InvalidTensorError, match="input 'x' has values in raw_input_contents and contents.fp32"):
        one_data_source("x", ["raw_input_contents", "contents.fp32_contents"])


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> IngressConfig:
    return compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def service(config: IngressConfig) -> InferenceService:
    return build_service(config)


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def json_infer(http: TestClient, data_text: str, outputs: list[dict] | None = None) -> tuple[int, object]:
    """POST a JSON infer request whose `data` is written verbatim (NaN and Infinity as Python's json writes them)."""
    extra = f', "outputs": {json.dumps(outputs)}' if outputs else ""
    head = f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": {SHAPE}, "data": {data_text}}}]{extra}}}'
    response = http.post("/v2/models/tiny/infer", content=head, headers={"content-type": "application/json"})
    return response.status_code, strict_json(response.content)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "1e39", "3.5e38"])
def test_http_json_data_of_nan_infinity_or_past_fp32_is_a_400(http: TestClient, literal: str) -> None:
    status, body = json_infer(http, "[" + ", ".join([literal] + ["0.5"] * (COUNT - 1)) + "]")
    assert (status, body["kind"]) == (400, "invalid_tensor"), body  # type: ignore[index]
    assert "not valid FP32" in body["error"]  # type: ignore[index]


def test_http_binary_data_of_nan_is_a_400(http: TestClient) -> None:
    raw = np.full(COUNT, np.nan, dtype="<f4").tobytes()
    tensor = {"name": "input", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": len(raw)}}
    head = json.dumps({"inputs": [tensor]}).encode()
    headers = {"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"}
    response = http.post("/v2/models/tiny/infer", content=head + raw, headers=headers)
    assert response.status_code == 400 and strict_json(response.content)["kind"] == "invalid_tensor"  # type: ignore[index]


def test_an_output_the_model_made_nan_is_valid_json_or_binary(http: TestClient) -> None:
    """3e38 everywhere is finite FP32; the tiny classifier's average pool overflows to infinity (inf * 0 is NaN)."""
    data = "[" + ", ".join(["3e38"] * COUNT) + "]"
    status, body = json_infer(http, data)
    assert (status, body["kind"]) == (422, "non_finite_output"), body  # type: ignore[index]
    assert "output 'logits' holds NaN or infinity" in body["error"] and '"binary_data": true' in body["error"]  # type: ignore[index]
    outputs = [{"name": "logits", "parameters": {"binary_data": True}}]
    response = http.post(
        "/v2/models/tiny/infer",
        content=f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": {SHAPE}, "data": {data}}}], '
        f'"outputs": {json.dumps(outputs)}}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    split = int(response.headers["inference-header-content-length"])
    strict_json(response.content[:split])
    assert not np.isfinite(np.frombuffer(response.content[split:], dtype="<f4")).all()  # the values, as they are


def test_finite_outputs_are_answered_as_before(http: TestClient) -> None:
    status, body = json_infer(http, "[" + ", ".join(["0.5"] * COUNT) + "]")
    assert status == 200 and all(math.isfinite(v) for v in body["outputs"][0]["data"])  # type: ignore[index]


@pytest.mark.parametrize("count", [-5, -1])
def test_http_negative_classification_is_a_400(http: TestClient, count: int) -> None:
    outputs = [{"name": "logits", "parameters": {"classification": count}}]
    status, body = json_infer(http, "[" + ", ".join(["0.5"] * COUNT) + "]", outputs)
    assert (status, body["kind"]) == (400, "invalid_tensor"), body  # type: ignore[index]
    assert (
        f"output 'logits': classification must be a number of classes, 1 or more (0: none), got {count}"
        in (
            body["error"]  # type: ignore[index]
        )
    )


def test_negative_classification_as_grpc_sends_it_is_refused_before_the_model_runs(service: InferenceService) -> None:
    """gRPC's codec makes every requested output binary; the check is the protocol-neutral `infer`'s."""
    import asyncio

    tensor = oip.InferInput("input", "FP32", SHAPE, np.full(SHAPE, 0.5, dtype=np.float32))
    request = oip.InferRequest("tiny", [tensor], outputs=[oip.RequestedOutput("logits", True, -1)], binary_outputs=True)
    with pytest.raises(InvalidTensorError, match="classification must be a number of classes") as info:
        asyncio.run(oip.infer(service, request))
    assert classify_error(info.value).grpc_code == "INVALID_ARGUMENT"
