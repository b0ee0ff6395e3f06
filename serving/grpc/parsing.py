"""A request deserializer that does not raise: bytes that are not a valid protobuf of the method's request type
become a `MalformedRequest` for the method to refuse (serving.grpc.malformed). Kept free of the server's modules:
Ray's proxy imports it (serving.grpc.proxy_services).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.grpc.bytes_apart import bytes_apart


@dataclass(frozen=True)
class MalformedRequest:
    """What the safe deserializer returns for bytes that do not parse."""

    reason: str


def safe_parser(deserialize: Callable[[bytes], Any], apart: bool = True) -> Callable[[bytes], Any]:
    """`deserialize` returning a `MalformedRequest` instead of raising; with `apart`, a message that parses comes
    as a `BytesApart` (which does not pickle: Ray's proxy, which sends the message to a replica, takes it whole)."""

    def parse(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and whatever a parser raises on bad bytes
            return MalformedRequest(str(exc)[:200] or type(exc).__name__)
        return bytes_apart(message) if apart else message

    return parse
