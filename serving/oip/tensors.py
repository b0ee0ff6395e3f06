"""OIP datatypes <-> numpy, and the BYTES element encoding (4-byte little-endian length + bytes)."""

import struct

import numpy as np

from serving.errors import InvalidTensorError

OIP_TO_NUMPY: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMPY_TO_OIP = {np.dtype(v).name: k for k, v in OIP_TO_NUMPY.items() if k != "BYTES"}


def oip_datatype(array: np.ndarray) -> str:
    """OIP datatype name of a numpy array (object arrays are BYTES)."""
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        return "BYTES"
    try:
        return NUMPY_TO_OIP[array.dtype.name]
    except KeyError:
        raise InvalidTensorError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype") from None


MAX_DIMENSION = 2**31 - 1  # a dimension no real tensor reaches; bigger values are errors, not allocations
MAX_RANK = 64  # numpy's own limit on dimensions
MAX_ELEMENTS = 2**40  # more elements than any request body can hold at one byte each


def tensor_shape(value: object) -> list[int]:
    """A client's `shape` as a list of ints; ValueError for anything else (floats such as 1e400 or 2.5, booleans,
    strings, negative or absurd dimensions), before any size is computed from it."""
    if not isinstance(value, list):
        raise ValueError(f"shape must be a list of integers, got {type(value).__name__}")
    if len(value) > MAX_RANK:
        raise ValueError(f"shape has {len(value)} dimensions; at most {MAX_RANK}")
    shape = []
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int):
            raise ValueError(f"shape {value!r:.80} has a dimension that is not an integer: {d!r:.40}")
        if not 0 <= d <= MAX_DIMENSION:
            raise ValueError(f"shape dimension {d} is outside 0..{MAX_DIMENSION}")
        shape.append(d)
    return shape


def element_count(shape: list[int]) -> int:
    """Elements of `shape` (at most `MAX_RANK` dimensions: `tensor_shape` checked it), exactly; a count no request
    could carry is an `InvalidTensorError` before any message or allocation is sized by it."""
    if any(d < 0 for d in shape):
        raise InvalidTensorError(f"shape {shape} has a negative dimension")
    if 0 in shape:
        return 0
    count = 1
    for d in shape:
        count *= d
        if count > MAX_ELEMENTS:
            raise InvalidTensorError(f"shape {shape[:8]}... has more than {MAX_ELEMENTS} elements")
    return count


def reshaped(array: np.ndarray, shape: list[int]) -> np.ndarray:
    """`array` in `shape`; a shape numpy cannot make (an empty tensor with absurd other dimensions) is the client's."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise InvalidTensorError(f"cannot make a tensor of shape {shape}: {exc}") from None


def deserialize_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """Split OIP binary BYTES data into `count` elements; rejects truncated or trailing data."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidTensorError("BYTES tensor data is truncated inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidTensorError("BYTES tensor element runs past the end of the data")
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count:
        raise InvalidTensorError(f"BYTES tensor has {len(items)} elements but its shape says {count}")
    return items


def serialize_bytes_tensor(items: list[bytes]) -> bytes:
    """OIP binary BYTES encoding of the elements, row-major."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def check_datatype(datatype: object) -> None:
    """InvalidTensorError unless `datatype` names an OIP datatype (a client's JSON list or object is not one)."""
    if not isinstance(datatype, str) or datatype not in OIP_TO_NUMPY:
        raise InvalidTensorError(f"unknown datatype {datatype!r:.40}")


def array_from_raw(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    """numpy array from OIP binary data (raw_input_contents / the binary tensor extension)."""
    count = element_count(shape)
    if datatype == "BYTES":
        if count > len(raw) // 4:  # every element has a 4-byte length prefix: check before allocating for the shape
            raise InvalidTensorError(f"BYTES tensor of shape {shape} needs at least {4 * count} bytes, got {len(raw)}")
        arr = np.empty(count, dtype=np.object_)
        arr[:] = deserialize_bytes_tensor(raw, count)
        return reshaped(arr, shape)
    check_datatype(datatype)
    dtype = np.dtype(OIP_TO_NUMPY[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensorError(
            f"{datatype} tensor of shape {shape} needs {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return reshaped(check_finite(np.frombuffer(raw, dtype=dtype), datatype), shape)


def check_finite(array: np.ndarray, datatype: str) -> np.ndarray:
    """`array`, or InvalidTensorError when a floating-point tensor holds NaN or an infinity, however it was sent:
    JSON's NaN, Infinity and numbers past the datatype's range (1e39 or 1e400 for an FP32, which the conversion
    makes infinite), a gRPC `fp32_contents` of nan, raw bytes of either. A model given them answers NaN, which JSON
    cannot carry. One pass over the values: about 40 microseconds for a 150,528-element FP32 image tensor."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        limit = float(np.finfo(array.dtype).max)
        raise InvalidTensorError(
            f"data is not valid {datatype}: a value is NaN, infinite or outside {-limit:.8g}..{limit:.8g}"
        )
    return array


def one_data_source(name: str, sources: list[str]) -> None:
    """InvalidTensorError when an input carries its values in more than one place (gRPC raw_input_contents and
    typed contents, two typed contents fields, HTTP `data` beside a binary_data_size parameter): Triton refuses
    these, where reading one and ignoring the others would serve a tensor the client may not have meant."""
    if len(sources) > 1:
        raise InvalidTensorError(f"input '{name}' has values in {' and '.join(sources)}: send them in one only")


def integer_parameter(value: object, what: str) -> int:
    """`value` as an int, or InvalidTensorError (400 / INVALID_ARGUMENT) naming `what`: text, null, a boolean, a
    fraction (a binary_data_size of 4.9 split the body at 4) and the OverflowError of an infinite number (JSON 1e400,
    a gRPC double_param inf) alike."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise InvalidTensorError(f"{what} must be an integer, got {value!r:.40}") from None


def array_from_json(data: object, datatype: str, shape: list[int]) -> np.ndarray:
    """numpy array from OIP JSON `data` (flat or nested, row-major)."""
    check_datatype(datatype)
    count = element_count(shape)
    if datatype == "BYTES":
        try:
            flat = list(np.asarray(data, dtype=np.object_).reshape(-1)) if count else []
        except (TypeError, ValueError) as exc:  # ragged nesting
            raise InvalidTensorError(f"BYTES data is not a regular array: {exc}") from None
        if len(flat) != count:
            raise InvalidTensorError(f"BYTES data has {len(flat)} elements but shape {shape} needs {count}")
        if any(not isinstance(x, str | bytes) for x in flat):  # bytes(10**9) would allocate a gigabyte
            raise InvalidTensorError("BYTES data elements must be strings")
        arr = np.empty(count, dtype=np.object_)
        arr[:] = [x.encode("utf-8") if isinstance(x, str) else x for x in flat]
        return reshaped(arr, shape)
    arr = _numeric_json(data, datatype)
    if arr.size != count:
        raise InvalidTensorError(f"data has {arr.size} elements but shape {shape} needs {count}")
    return reshaped(arr, shape)


JSON_KINDS = {"U": "strings", "b": "true or false"}  # numpy's kind of a JSON array that is not all numbers


def _numeric_json(data: object, datatype: str) -> np.ndarray:
    """JSON `data` as a `datatype` array: numbers only (BOOL: true and false only), an integer type's whole and
    within its range, a floating-point type's finite and within its range. numpy alone reads null as NaN, "2.5" as
    2.5, true as 1.0, 2.7 as 2 for an INT32 and 1e39 as infinity for an FP32: a tensor of values the client never
    sent, answered 200."""
    target = np.dtype(OIP_TO_NUMPY[datatype])
    try:
        values = np.asarray(data)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged nesting
        raise InvalidTensorError(f"data is not valid {datatype}: {exc}") from None
    kind = values.dtype.kind if values.size else target.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidTensorError("data is not valid BOOL: its elements must be true or false")
        return values.astype(target)
    if kind not in "iuf" or _holds_bool(data):
        found = JSON_KINDS.get("b" if kind in "iuf" else kind, "null, objects or integers past 64 bits")
        raise InvalidTensorError(f"data is not valid {datatype}: its elements must be numbers, not {found}")
    if target.kind in "iu":
        if kind in "iu":  # integers already: their range checked, converted without parsing the list again
            info = np.iinfo(target)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise InvalidTensorError(f"data is not valid {datatype}: a value is outside {info.min}..{info.max}")
            return values.astype(target)
        if not (np.isfinite(values).all() and (values == np.trunc(values)).all()):
            raise InvalidTensorError(f"data is not valid {datatype}: its elements must be whole numbers")
        try:  # from the JSON values, exactly (`values` may be float64: [2**64 - 1, 0]); out of range raises
            return np.asarray(data, dtype=target)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: 3444...4 for a UINT8
            raise InvalidTensorError(f"data is not valid {datatype}: {exc}") from None
    with np.errstate(over="ignore", invalid="ignore"):  # 1e39 as FP32, 1e6 as FP16: infinite, refused below
        return check_finite(values.astype(target), datatype)


def _holds_bool(data: object) -> bool:
    """Whether JSON `data` (numbers in regularly nested lists: numpy read it as numbers) holds a true or false, which
    numpy promotes to 1 or 0 among numbers. One pass over the elements in C (a few ms for a 1x3x224x224 tensor,
    about half of what converting it costs)."""
    if not isinstance(data, list):
        return type(data) is bool
    if data and isinstance(data[0], list):  # regular nesting: every element is a list
        return any(_holds_bool(row) for row in data)
    return bool in map(type, data)


def array_to_raw(array: np.ndarray) -> bytes:
    """OIP binary encoding (little-endian, row-major)."""
    if oip_datatype(array) == "BYTES":
        return serialize_bytes_tensor([x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)])
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def array_to_json(array: np.ndarray) -> list:
    """Flat JSON list (BYTES as UTF-8 strings)."""
    if oip_datatype(array) == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return array.reshape(-1).tolist()
