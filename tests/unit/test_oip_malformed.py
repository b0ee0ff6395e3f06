"""OIP `/v2/models/{m}/infer` with a field of the wrong JSON type: each is a 400 `invalid_tensor` naming the field,
never a 500 with a traceback in the log, nor a request quietly served (`"data": null` read as NaN, the string
"false" taken as true). In-process app over the tiny models, as test_hostile_requests."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.placement import build_service, compose
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

PIXELS = [0.1] * (3 * 32 * 32)
GOOD = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": PIXELS}
BINARY = {"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}


def _infer(**fields: Any) -> dict[str, Any]:
    return {"inputs": [GOOD], **fields}


def _input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{**GOOD, **fields}]}


# (payload, binary data after the JSON head, a fragment of the message)
CASES: dict[str, tuple[dict[str, Any], bytes, str]] = {
    "input-parameters-string": (_input(parameters="binary_data_size"), b"", "'parameters' must be a JSON object"),
    "input-parameters-number": (_input(parameters=5), b"", "'parameters' must be a JSON object"),
    "input-parameters-array": (_input(parameters=["binary_data_size"]), b"", "'parameters' must be a JSON object"),
    "datatype-array": (_input(datatype=["FP32"]), b"", "'datatype' must be a string"),
    "datatype-number": (_input(datatype=32), b"", "'datatype' must be a string"),
    "datatype-object-binary": ({"inputs": [{**BINARY, "datatype": {"a": 1}}]}, b"\0" * 4, "'datatype' must be"),
    "name-array": (_input(name=["input"]), b"", "'name' must be a string"),
    "name-object": (_input(name={"a": 1}), b"", "'name' must be a string"),
    "shape-string": (_input(shape="1,3,32,32"), b"", "shape must be a list"),
    "shape-of-strings": (_input(shape=["1", "3", "32", "32"]), b"", "not an integer"),
    "data-null": (_input(data=None), b"", "'data' must be a JSON array"),
    "data-string": (_input(data="0.1"), b"", "'data' must be a JSON array"),
    "data-object": (_input(data={"0": 0.1}), b"", "'data' must be a JSON array"),
    "data-number": ({"inputs": [{**GOOD, "shape": [1], "data": 0.5}]}, b"", "'data' must be a JSON array"),
    "binary-size-negative": (
        {"inputs": [{**BINARY, "parameters": {"binary_data_size": -4}}]},
        b"\0" * 4,
        "says -4 binary bytes",
    ),
    "input-entry-number": ({"inputs": [5]}, b"", "inputs[0] must be a JSON object"),
    "input-entry-string": ({"inputs": ["input"]}, b"", "inputs[0] must be a JSON object"),
    "outputs-object": (_infer(outputs={"name": "logits"}), b"", "'outputs' must be a JSON array"),
    "outputs-string": (_infer(outputs="logits"), b"", "'outputs' must be a JSON array"),
    "output-entry-string": (_infer(outputs=["logits"]), b"", "outputs[0] must be a JSON object"),
    "output-name-array": (_infer(outputs=[{"name": ["logits"]}]), b"", "needs a string 'name'"),
    "output-name-missing": (_infer(outputs=[{"parameters": {}}]), b"", "needs a string 'name'"),
    "output-parameters-string": (
        _infer(outputs=[{"name": "logits", "parameters": "binary_data"}]),
        b"",
        "'parameters' must be a JSON object",
    ),
    "output-binary-data-string": (
        _infer(outputs=[{"name": "logits", "parameters": {"binary_data": "false"}}]),
        b"",
        "binary_data must be true or false",
    ),
    "request-parameters-pairs": (_infer(parameters=[["top_k", 3]]), b"", "'parameters' must be a JSON object"),
    "request-parameters-string": (_infer(parameters="top_k"), b"", "'parameters' must be a JSON object"),
    "binary-data-output-string": (
        _infer(parameters={"binary_data_output": "yes"}),
        b"",
        "binary_data_output' must be true or false",
    ),
}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("t")))
    with TestClient(create_http_app(build_service(config)), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("case", list(CASES))
def test_a_field_of_the_wrong_json_type_is_an_invalid_tensor(
    http: TestClient, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload, binary, fragment = CASES[case]
    head = json.dumps(payload).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    answer = http.post("/v2/models/tiny/infer", content=head + binary, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["kind"] == "invalid_tensor"
    assert fragment in answer.json()["error"]
    assert not [r for r in caplog.records if r.exc_info], "an answered client error logged a traceback"


def test_the_well_formed_requests_of_the_table_are_served(http: TestClient) -> None:
    """The table's cases differ from these in one field each: these are answered."""
    assert http.post("/v2/models/tiny/infer", json=_infer()).status_code == 200
    outputs = [{"name": "logits", "parameters": {"binary_data": False}}]
    answer = http.post("/v2/models/tiny/infer", json=_infer(outputs=outputs, parameters={"binary_data_output": True}))
    assert answer.status_code == 200 and len(answer.json()["outputs"][0]["data"]) == 5
    size = 4 * len(PIXELS)
    head = json.dumps({"inputs": [{**BINARY, "shape": GOOD["shape"], "parameters": {"binary_data_size": size}}]})
    body = head.encode() + bytes(size)
    headers = {"Inference-Header-Content-Length": str(len(head))}
    assert http.post("/v2/models/tiny/infer", content=body, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": %s}],'
        b' "outputs": [{"name": "\\ud800"}]}',
        b'{"inputs": [{"name": "\\udfff", "shape": [1], "datatype": "FP32", "data": [0.5]}], "x": %s}',
        b'{"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["\\uD800"]}], "x": %s}',
    ],
    ids=["output-name", "input-name", "bytes-data"],
)
@pytest.mark.parametrize("model", ["tiny", "classify"])
def test_a_lone_surrogate_escape_is_a_400_not_a_500(http: TestClient, raw: bytes, model: str) -> None:
    """JSON allows `"\\ud800"`, text does not: the unknown name quoted in the error could not be encoded (a bare-text
    500 from a Ray replica, its log line failing too), a BYTES element raised UnicodeEncodeError (500 internal)."""
    body = raw % json.dumps(PIXELS).encode()
    answer = http.post(f"/v2/models/{model}/infer", content=body)
    assert answer.status_code == 400 and answer.json()["kind"] == "bad_request", answer.text
    assert "surrogate" in answer.json()["error"]
    paired = body.replace(b"\\ud800", b"\\ud83d\\ude00").replace(b"\\udfff", b"\\ud83d\\ude00")
    valid = http.post(f"/v2/models/{model}/infer", content=paired.replace(b"\\uD800", b"\\ud83d\\ude00"))
    assert 400 <= valid.status_code < 500 and "surrogate" not in valid.text  # a valid pair is text: answered as any
