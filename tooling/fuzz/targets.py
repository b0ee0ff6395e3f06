"""Fuzz targets: the real entry points that parse client bytes, each held to the server's own rule.

A target takes one input (bytes) and runs it through production code: the decoder with the quality stage's
working image and native crop, metadata extraction (EXIF, GPS, XMP, IPTC, ICC, colours), the partial JPEG decode,
the XMP parser, the batch archive reader, and the Open Inference Protocol codecs (HTTP JSON + binary extension,
gRPC protobuf). Any exception is allowed only if `serving.errors.classify_error` answers it with a 4xx, exactly
what the server would send the client; anything it would answer with a 5xx is a finding (`FuzzFinding`).
"""

import io
from collections.abc import Callable
from functools import cache

from google.protobuf.message import DecodeError

from pipelines.decode import decode_image
from pipelines.limits import DecodeLimits
from pipelines.metadata.extract import extract_metadata
from pipelines.metadata.xmp import parse_xmp
from pipelines.native_crop import jpeg_centre_crop
from pipelines.preprocess import PreprocessSpec
from serving.errors import classify_error
from serving.grpc.oip_codec import request_from_proto
from serving.grpc.stubs import load
from serving.http.oip_routes import parse_infer_request
from serving.jobs.archives import ArchiveLimits, read_archive

# Small limits: the campaign hunts for crashes and unbounded work, not for big legal inputs.
LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=4_000_000, max_full_decode_pixels=4_000_000)
ARCHIVE_LIMITS = ArchiveLimits(max_entries=256, max_total_bytes=8 << 20, max_entry_bytes=1 << 20, max_ratio=100.0)
SPEC = PreprocessSpec(resize_size=(64, 64), crop_size=(56, 56))


class FuzzFinding(AssertionError):
    """An input the server would answer with a 5xx (or that broke an invariant)."""


def _decode(data: bytes) -> None:
    decoded = decode_image(data, SPEC, LIMITS, working_max_side=128)
    if decoded.tensor.shape != (3, 56, 56):
        raise FuzzFinding(f"tensor shape {decoded.tensor.shape}")


def _metadata(data: bytes) -> None:
    extract_metadata(data, LIMITS).to_dict()


def _jpeg_crop(data: bytes) -> None:
    # the first two bytes choose the size the caller believes the photo has (it comes from the header in the server)
    width, height = 16 + data[0] * 4 if data else 16, 16 + data[1] * 4 if len(data) > 1 else 16
    crop = jpeg_centre_crop(data[2:], (width, height), 1 + (data[0] % 8 if data else 0), size=64)
    if crop is not None and (crop.ndim != 3 or crop.shape[2] != 3):
        raise FuzzFinding(f"crop shape {crop.shape}")


def _xmp(data: bytes) -> None:
    parse_xmp(data)


def _archive(data: bytes) -> None:
    for entry in read_archive(io.BytesIO(data), ARCHIVE_LIMITS):
        if entry.data is not None and len(entry.data) > ARCHIVE_LIMITS.max_entry_bytes:
            raise FuzzFinding(f"entry of {len(entry.data)} bytes passed the entry budget")


def _oip_http(data: bytes) -> None:
    # first byte: 0 = JSON only; otherwise the JSON header's length is the next two bytes (binary extension)
    if not data or data[0] == 0:
        parse_infer_request("m", data[1:], None)
        return
    header = str(int.from_bytes(data[1:3], "big")) if data[0] < 200 else data[1:3].decode("latin-1")
    parse_infer_request("m", data[3:], header)


@cache
def _infer_request_type() -> type:
    return load("inference_pb2").ModelInferRequest


def _oip_grpc(data: bytes) -> None:
    message = _infer_request_type()()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return  # gRPC itself refuses what does not parse (INVALID_ARGUMENT before our code runs)
    request_from_proto(message)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decode": _decode,
    "metadata": _metadata,
    "jpeg_crop": _jpeg_crop,
    "xmp": _xmp,
    "archive": _archive,
    "oip_http": _oip_http,
    "oip_grpc": _oip_grpc,
}


def check(target: str, data: bytes) -> None:
    """Run one input; raises `FuzzFinding` when the server would answer it with a 5xx."""
    try:
        TARGETS[target](data)
    except FuzzFinding:
        raise
    except Exception as exc:  # noqa: BLE001 - the point: every exception is judged as the server judges it
        info = classify_error(exc)
        if info.http_status >= 500:
            raise FuzzFinding(f"{target}: {type(exc).__name__}: {exc} -> {info.http_status}") from exc
