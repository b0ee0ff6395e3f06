"""OIP requests a client got wrong: each a 400 / INVALID_ARGUMENT, never a 500, nor a tensor of garbage served.

JSON `data` elements that are not numbers (null read as NaN, "2.5" parsed as 2.5, true as 1.0), fractions in an
integer tensor (2.7 read as 2), integer literals longer than Python converts (json.loads raised a plain ValueError,
a 500), and an Inference-Header-Content-Length of thousands of digits (int() raised, a 500)."""

import json

import numpy as np
import pytest

from serving.errors import BadRequestError, InvalidTensorError, classify_error
from serving.http.oip_routes import parse_infer_request
from serving.oip.tensors import array_from_json

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([1.0, None], "FP32", "must be numbers"),
        ([0.5, "2.5"], "FP32", "must be numbers"),
        (["1.5", "2.5"], "FP32", "not valid FP32"),
        ([True, False], "FP32", "must be numbers"),
        ([True, 0.0, 0.5], "FP32", "not true or false"),  # numpy promotes a boolean among numbers to 1.0
        ([0.5, 0.0, False], "FP32", "not true or false"),
        ([[0.5, 1.0], [True, 0.0]], "FP32", "not true or false"),
        ([True, 1, 2], "INT32", "not true or false"),
        ([3, False], "UINT8", "not true or false"),
        ([[1.0], [None]], "FP16", "must be numbers"),
        ([1.7, 2.0], "INT32", "whole numbers"),
        ([0.5, 1.0], "UINT8", "whole numbers"),
        ([1e20], "INT64", "not valid INT64"),  # these three numpy refused already: range checks of our own now
        ([-1], "UINT8", "not valid UINT8"),
        ([300], "UINT8", "not valid UINT8"),
        ([2, 0], "BOOL", "true or false"),
        (["false"], "BOOL", "true or false"),
        ([None], "INT64", "must be numbers"),
    ],
)
def test_json_data_that_is_not_the_datatype_is_an_invalid_tensor(data: list, datatype: str, message: str) -> None:
    with pytest.raises(InvalidTensorError, match=message) as info:
        array_from_json(data, datatype, [len(data)])
    assert classify_error(info.value).http_status == 400


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        ([1, 2.5, -3], "FP32", np.array([1, 2.5, -3], dtype=np.float32)),
        ([2.0, -7], "INT32", np.array([2, -7], dtype=np.int32)),
        ([0, 255], "UINT8", np.array([0, 255], dtype=np.uint8)),
        ([2**64 - 1, 0], "UINT64", np.array([2**64 - 1, 0], dtype=np.uint64)),
        ([-(2**63), 2**63 - 1], "INT64", np.array([-(2**63), 2**63 - 1], dtype=np.int64)),
        ([True, False], "BOOL", np.array([True, False])),
        ([], "FP32", np.zeros(0, dtype=np.float32)),
    ],
)
def test_json_data_of_the_datatype_is_read_exactly(data: list, datatype: str, expected: np.ndarray) -> None:
    array = array_from_json(data, datatype, [len(data)])
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


def test_an_integer_literal_too_long_to_convert_is_a_bad_request() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [' + b"9" * 5000 + b"]}]}"
    with pytest.raises(BadRequestError, match="not valid JSON") as info:
        parse_infer_request("m", body, None)
    assert classify_error(info.value).http_status == 400


def test_a_header_length_of_thousands_of_digits_is_a_bad_request() -> None:
    head = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode()
    with pytest.raises(BadRequestError, match="inference-header-content-length") as info:
        parse_infer_request("m", head, "1" * 5000)
    assert classify_error(info.value).http_status == 400
    assert parse_infer_request("m", head, "0" * 40 + str(len(head))).inputs[0].name == "x"  # leading zeros: digits


@pytest.mark.parametrize(
    ("parameters", "outputs"),
    [
        ({"binary_data_size": 4.9}, None),  # read as 4: the bytes of one input split at a place nobody named
        ({"binary_data_size": 4}, [{"name": "y", "parameters": {"classification": 2.5}}]),
        ({"binary_data_size": 4}, [{"name": "y", "parameters": {"classification": True}}]),
    ],
    ids=["size-fraction", "classification-fraction", "classification-boolean"],
)
def test_an_integer_parameter_that_is_a_fraction_or_a_boolean_is_an_invalid_tensor(
    parameters: dict, outputs: list | None
) -> None:
    first = {"name": "x", "shape": [1], "datatype": "FP32", "parameters": parameters}
    second = {"name": "z", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
    head = json.dumps({"inputs": [first, second], **({"outputs": outputs} if outputs else {})}).encode()
    with pytest.raises(InvalidTensorError, match="must be an integer") as info:
        parse_infer_request("m", head + bytes(8), str(len(head)))
    assert classify_error(info.value).http_status == 400
    whole = json.dumps({"inputs": [{**first, "parameters": {"binary_data_size": 4.0}}, second]}).encode()
    assert len(parse_infer_request("m", whole + bytes(8), str(len(whole))).inputs) == 2  # 4.0 is a whole number
