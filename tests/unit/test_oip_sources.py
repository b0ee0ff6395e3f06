"""An OIP input carries its values in one place, as Triton requires; a refusal names the input.

A hostile-client walkthrough found each of these answered 200: a gRPC input with both `raw_input_contents` and typed
`contents` (the raw bytes used, the contents ignored), `fp32_contents` and `int_contents` set at once, and an HTTP
input with both `data` and a `binary_data_size` parameter. Triton refuses them ("unexpected explicit tensor data for
input tensor ..., binary data was already supplied"); they are 400 `invalid_tensor` / INVALID_ARGUMENT now.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from serving.errors import InvalidTensorError, classify_error
from serving.http.oip_routes import parse_infer_request
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit


def grpc_refusals() -> None:
    """Run in a process of its own (imgserve's `inference` messages and tritonclient's cannot load in one): print,
    as one JSON object, what `request_from_proto` answers to each message, by case."""
    import numpy as np

    from serving.errors import classify_error
    from serving.grpc.oip_codec import pb, request_from_proto

    def request(**contents: list) -> object:
        message = pb.ModelInferRequest(model_name="tiny")
        message.inputs.add(name="input", datatype="FP32", shape=[1, 3], contents=pb.InferTensorContents(**contents))
        return message

    both = request(fp32_contents=[1.0, 2.0, 3.0])
    both.raw_input_contents.append(np.array([4, 5, 6], dtype="<f4").tobytes())
    raw_only = request()
    raw_only.raw_input_contents.append(np.array([4, 5, 6], dtype="<f4").tobytes())
    raw_nan = request()
    raw_nan.raw_input_contents.append(np.array([4, np.nan, 6], dtype="<f4").tobytes())
    cases = {
        "raw and contents": both,
        "two contents fields": request(fp32_contents=[1.0, 2.0, 3.0], int_contents=[1, 2, 3]),
        "the wrong contents field": request(int_contents=[1, 2, 3]),
        "fp32_contents of nan": request(fp32_contents=[float("nan")] * 3),
        "raw of nan": raw_nan,
    }
    answers: dict[str, object] = {}
    for case, message in cases.items():
        try:
            request_from_proto(message)
            answers[case] = "accepted"
        except Exception as exc:  # noqa: BLE001 - the answer the server would give, whatever it is
            info = classify_error(exc)
            answers[case] = [info.grpc_code, info.message]
    fine = [request_from_proto(m).inputs[0].data.tolist() for m in (raw_only, request(fp32_contents=[1, 2, 3]))]
    answers["fine"] = fine
    print(json.dumps(answers))


@pytest.fixture(scope="module")
def grpc_answers() -> dict[str, object]:
    script = "from tests.unit.test_oip_sources import grpc_refusals; grpc_refusals()"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("raw and contents", "input 'input' has values in raw_input_contents and contents.fp32_contents"),
        ("two contents fields", "input 'input' has values in contents.int_contents and contents.fp32_contents"),
        ("the wrong contents field", "input 'input' is FP32: its values go in contents.fp32_contents, not contents"),
        ("fp32_contents of nan", "input 'input': data is not valid FP32: a value is NaN, infinite or outside"),
        ("raw of nan", "input 'input': data is not valid FP32: a value is NaN, infinite or outside"),
    ],
)
def test_grpc_inputs_triton_refuses_are_invalid_argument(
    grpc_answers: dict[str, object], case: str, message: str
) -> None:
    code, text = grpc_answers[case]  # type: ignore[misc]
    assert code == "INVALID_ARGUMENT" and text.startswith(message), (case, text)


def test_grpc_inputs_with_one_source_are_read(grpc_answers: dict[str, object]) -> None:
    assert grpc_answers["fine"] == [[[4.0, 5.0, 6.0]], [[1.0, 2.0, 3.0]]]


def test_http_input_with_data_and_binary_data_size_is_refused() -> None:
    raw = np.array([4, 5, 6], dtype="<f4").tobytes()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}).encode()
    with pytest.raises(InvalidTensorError, match="input 'x' has values in 'data' and a binary_data_size") as info:
        parse_infer_request("m", head + raw, str(len(head)))
    assert classify_error(info.value).http_status == 400
    alone = json.dumps({"inputs": [{**tensor, "data": None, "parameters": {"binary_data_size": len(raw)}}]}).encode()
    assert parse_infer_request("m", alone + raw, str(len(alone))).inputs[0].data.tolist() == [[4.0, 5.0, 6.0]]


def test_http_refusals_of_values_name_the_input() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [float("nan")]}]})
    with pytest.raises(InvalidTensorError, match="^input 'x': data is not valid FP32"):
        parse_infer_request("m", body.encode(), None)
