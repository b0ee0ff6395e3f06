"""OIP tensor encodings (serving/oip/tensors.py): raw and JSON round trips, and what malformed data raises."""

import json
import struct

import numpy as np
import pytest

from serving.errors import InvalidTensorError, classify_error
from serving.oip.tensors import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
    deserialize_bytes_tensor,
    oip_datatype,
    serialize_bytes_tensor,
)

pytestmark = pytest.mark.unit

ARRAYS: dict[str, np.ndarray] = {
    "FP32": np.array([[0.5, -1.25, 3e38], [0.0, 1e-7, -0.0]], dtype=np.float32),
    "INT64": np.array([[1, -2, 2**62], [0, -(2**63), 7]], dtype=np.int64),
    "UINT8": np.array([[0, 1, 255], [128, 7, 9]], dtype=np.uint8),
    "BYTES": np.array([[b"cat", b"", "caf\u00e9".encode()], [b"\x00\xff", b"x" * 300, b"z"]], dtype=np.object_),
}


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_raw_round_trip(datatype: str) -> None:
    array = ARRAYS[datatype]
    assert oip_datatype(array) == datatype
    back = array_from_raw(array_to_raw(array), datatype, list(array.shape))
    assert back.shape == array.shape
    assert back.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "UINT8"])
def test_json_round_trip(datatype: str) -> None:
    array = ARRAYS[datatype]
    back = array_from_json(json.loads(json.dumps(array_to_json(array))), datatype, list(array.shape))
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_json_round_trip_bytes_as_text() -> None:
    array = np.array([["cat", "caf\u00e9"]], dtype=np.object_)
    assert array_to_json(array) == ["cat", "caf\u00e9"]
    back = array_from_json(array_to_json(array), "BYTES", [1, 2])
    assert back.tolist() == [[b"cat", "caf\u00e9".encode()]]
    assert array_from_json([[1, 2], [3, 4]], "INT64", [4]).tolist() == [1, 2, 3, 4]  # nested data is fine


def test_raw_encoding_is_little_endian_and_length_prefixed() -> None:
    assert array_to_raw(np.array([1.0], dtype=np.float32)) == b"\x00\x00\x80\x3f"
    assert array_to_raw(np.array([1], dtype=np.dtype(">i8"))) == struct.pack("<q", 1)
    assert serialize_bytes_tensor([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x02\x00\x00\x00ab\x01\x00", 2, "truncated inside a length prefix"),
        (b"\x05\x00\x00\x00ab", 1, "runs past the end"),
        (serialize_bytes_tensor([b"a", b"b"]), 3, "has 2 elements but its shape says 3"),
        (serialize_bytes_tensor([b"a", b"b"]), 1, "has 2 elements but its shape says 1"),
    ],
)
def test_bytes_decoding_rejects_bad_data(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidTensorError, match=message) as info:
        deserialize_bytes_tensor(raw, count)
    assert classify_error(info.value).http_status == 400


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: array_from_raw(b"\x00" * 20, "FP32", [2, 3]), r"needs 24 bytes, got 20"),
        (lambda: array_from_raw(b"\x00" * 4, "FP24", [1]), "unknown datatype 'FP24'"),
        (lambda: array_from_raw(b"", "FP32", [-1, 3]), "negative dimension"),
        (lambda: array_from_json([1.0, 2.0], "FP32", [3]), "data has 2 elements but shape"),
        (lambda: array_from_json(["a", "b"], "FP32", [2]), "not valid FP32"),
        (lambda: array_from_json(["a"], "BYTES", [2]), "BYTES data has 1 elements"),
        (lambda: oip_datatype(np.zeros(1, dtype=np.complex64)), "no Open Inference Protocol datatype"),
    ],
)
def test_tensor_errors_are_invalid_tensor(call: object, message: str) -> None:
    with pytest.raises(InvalidTensorError, match=message):
        call()  # type: ignore[operator]
