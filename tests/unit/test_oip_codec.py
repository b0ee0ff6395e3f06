"""OIP over HTTP (serving/http/oip_routes.py): request and response bodies as tritonclient builds and reads them."""

import json

import numpy as np
import pytest

from serving.errors import BadRequestError, InvalidTensorError, classify_error
from serving.http.oip_routes import parse_infer_request, render_infer_response
from serving.oip import inference as oip

httpclient = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.unit

ARRAYS: dict[str, np.ndarray] = {
    "FP32": np.array([[0.5, -1.25, 3e38], [0.0, 1e-7, -0.0]], dtype=np.float32),
    "INT64": np.array([[1, -2, 2**62], [0, -(2**63), 7]], dtype=np.int64),
    "UINT8": np.array([[0, 1, 255], [128, 7, 9]], dtype=np.uint8),
    "BYTES": np.array([[b"cat", b"", "caf\u00e9".encode()], [b"\x00\xff", b"x" * 300, b"z"]], dtype=np.object_),
}


def json_body(**payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_parse_json_only_request() -> None:
    body = json_body(
        id="42",
        inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}],
        outputs=[{"name": "probs", "parameters": {"classification": 2}}],
        parameters={"top_k": 3},
    )
    request = parse_infer_request("m", body, None)
    assert (request.model, request.id, request.parameters) == ("m", "42", {"top_k": 3})
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("input", "FP32", [1, 3])
    np.testing.assert_array_equal(tensor.data, [[1.0, 2.0, 3.0]])
    assert request.outputs == [oip.RequestedOutput("probs", binary=False, classification=2)]


def tritonclient_body() -> tuple[bytes, int]:
    """FP32 and BYTES as binary blobs plus an INT64 input as JSON, the way tritonclient sends them."""
    inputs = [httpclient.InferInput(n, list(ARRAYS[t].shape), t) for n, t in [("x", "FP32"), ("img", "BYTES")]]
    for item, datatype in zip(inputs, ["FP32", "BYTES"], strict=True):
        item.set_data_from_numpy(ARRAYS[datatype], binary_data=True)
    ids = httpclient.InferInput("ids", [2, 3], "INT64")
    ids.set_data_from_numpy(ARRAYS["INT64"], binary_data=False)
    outputs = [httpclient.InferRequestedOutput("probs", binary_data=True, class_count=3)]
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        [*inputs, ids], outputs=outputs, request_id="r1"
    )
    assert header_length is not None
    return body, header_length


def test_parse_binary_extension_request() -> None:
    body, header_length = tritonclient_body()
    request = parse_infer_request("m", body, str(header_length))
    assert [(i.name, i.datatype, i.shape) for i in request.inputs] == [
        ("x", "FP32", [2, 3]),
        ("img", "BYTES", [2, 3]),
        ("ids", "INT64", [2, 3]),
    ]
    for tensor, datatype in zip(request.inputs, ["FP32", "BYTES", "INT64"], strict=True):
        assert tensor.data.tolist() == ARRAYS[datatype].tolist()
    assert request.id == "r1"
    assert request.outputs == [oip.RequestedOutput("probs", binary=True, classification=3)]


def test_tritonclient_default_asks_for_all_outputs_binary() -> None:
    item = httpclient.InferInput("x", [1], "FP32")
    item.set_data_from_numpy(np.ones(1, np.float32), binary_data=False)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([item])
    request = parse_infer_request("m", body, None if header_length is None else str(header_length))
    assert request.outputs == [] and request.binary_outputs is True


def test_unclaimed_trailing_bytes_are_rejected() -> None:
    body, header_length = tritonclient_body()
    with pytest.raises(InvalidTensorError, match="3 bytes of binary data are not claimed"):
        parse_infer_request("m", body + b"xyz", str(header_length))


def test_binary_size_beyond_body_is_rejected() -> None:
    head = json_body(inputs=[{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}])
    with pytest.raises(InvalidTensorError, match="says 8 binary bytes but only 4 remain"):
        parse_infer_request("m", head + b"\x00" * 4, str(len(head)))


@pytest.mark.parametrize(
    ("body", "header_length", "error", "message"),
    [
        (b"{not json", None, BadRequestError, "not valid JSON"),
        (b"\xff\xfe", None, BadRequestError, "not valid JSON"),
        (b"[1, 2]", None, BadRequestError, "JSON object with an 'inputs' list"),
        (json_body(inputs={"x": 1}), None, BadRequestError, "'inputs' list"),
        (b"{}", "99", BadRequestError, "is '99' but the body has 2 bytes"),
        (b"{}", "-1", BadRequestError, "is '-1'"),
        (json_body(inputs=[{"name": "x", "shape": [1], "data": [1]}]), None, InvalidTensorError, "needs name"),
        (json_body(inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}]), None, InvalidTensorError, "neither"),
    ],
)
def test_malformed_requests_are_client_errors(
    body: bytes, header_length: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        parse_infer_request("m", body, header_length)
    assert classify_error(info.value).http_status == 400


X_INPUT = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}


@pytest.mark.parametrize(
    "payload",
    [
        {"inputs": [X_INPUT], "outputs": [{"parameters": {}}]},
        {"inputs": [X_INPUT], "outputs": [{"name": "y", "parameters": {"classification": "top"}}]},
        {"inputs": [X_INPUT], "parameters": ["not", "a", "dict"]},
        {"inputs": [{**X_INPUT, "data": None, "parameters": {"binary_data_size": "four"}}]},
        # 1e400 reads as infinity: int() raised OverflowError, which was a 500
        {"inputs": [{**X_INPUT, "data": None, "parameters": {"binary_data_size": float("inf")}}]},
        {"inputs": [X_INPUT], "outputs": [{"name": "y", "parameters": {"classification": float("inf")}}]},
        {"inputs": [X_INPUT], "id": 7},
    ],
    ids=[
        "output-without-name",
        "classification-not-int",
        "parameters-not-object",
        "binary-size-not-int",
        "binary-size-infinite",
        "classification-infinite",
        "id-not-a-string",
    ],
)
def test_malformed_optional_fields_are_client_errors(payload: dict[str, object]) -> None:
    try:
        parse_infer_request("m", json.dumps(payload).encode(), None)
    except Exception as exc:  # noqa: BLE001 - what matters is the status the edge would answer
        assert classify_error(exc).http_status == 400, f"{type(exc).__name__}: {exc}"
    else:
        pytest.fail("a malformed request was accepted")


def response() -> oip.InferResponse:
    outputs = [oip.InferOutput(t.lower(), ARRAYS[t], binary=t in ("FP32", "BYTES")) for t in sorted(ARRAYS)]
    return oip.InferResponse("m", "1", "r1", outputs)


def test_render_binary_response_is_self_consistent() -> None:
    rendered = render_infer_response(response())
    body = bytes(rendered.body)
    header_length = int(rendered.headers["inference-header-content-length"])
    head = json.loads(body[:header_length])
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in head["outputs"] if "parameters" in o}
    assert set(sizes) == {"fp32", "bytes"}
    assert sum(sizes.values()) == len(body) - header_length
    assert sizes["fp32"] == ARRAYS["FP32"].nbytes
    assert rendered.media_type == "application/octet-stream"
    parsed = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert parsed.get_response()["id"] == "r1"
    for datatype, array in ARRAYS.items():
        assert parsed.as_numpy(datatype.lower()).tolist() == array.tolist(), datatype


def test_render_json_and_binary() -> None:
    plain = oip.InferResponse("m", "1", "", [oip.InferOutput("uint8", ARRAYS["UINT8"])])
    rendered = render_infer_response(plain)
    assert "inference-header-content-length" not in rendered.headers
    payload = json.loads(bytes(rendered.body))
    assert "id" not in payload
    expected = {"name": "uint8", "datatype": "UINT8", "shape": [2, 3], "data": [0, 1, 255, 128, 7, 9]}
    assert payload["outputs"] == [expected]
    binary = oip.InferResponse("m", "1", "", [oip.InferOutput("uint8", ARRAYS["UINT8"], binary=True)])
    rendered = render_infer_response(binary)
    header_length = int(rendered.headers["inference-header-content-length"])
    assert bytes(rendered.body)[header_length:] == ARRAYS["UINT8"].tobytes()


def test_a_null_id_is_no_id() -> None:
    body = json.dumps({"inputs": [X_INPUT], "id": None}).encode()
    assert parse_infer_request("m", body, None).id == ""  # was echoed back as "None"


def test_nan_and_infinity_are_never_written_as_json() -> None:
    """Triton writes a bare NaN, which JavaScript's JSON.parse and Go's encoding/json refuse (RFC 8259 has none):
    `oip.infer` answers such a JSON output with a 422 `non_finite_output`; one reaching the encoder is refused there
    (a server fault), and a binary output carries the values as they are."""
    values = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    with pytest.raises(ValueError, match="not JSON compliant"):
        render_infer_response(oip.InferResponse("m", "1", "", [oip.InferOutput("fp32", values)]))
    rendered = render_infer_response(oip.InferResponse("m", "1", "", [oip.InferOutput("fp32", values, binary=True)]))
    split = int(rendered.headers["inference-header-content-length"])
    assert bytes(rendered.body)[split:] == values.tobytes()
