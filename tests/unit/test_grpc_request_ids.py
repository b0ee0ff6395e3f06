"""A gRPC client's `request_id` metadata is echoed in the trailing metadata only when gRPC can send it back: a value
that is not printable ASCII (UTF-8 `é`, a control byte), which gRPC core takes in from a raw HTTP/2 client, made every
answer INTERNAL "Invalid metadata" after its work was done (a refusal's own status too)."""

import asyncio
from typing import Any

import pytest

from serving.grpc.edge import answer, client_request_id

pytestmark = pytest.mark.unit


class Context:
    def __init__(self, request_id: str) -> None:
        self.metadata = [("request_id", request_id)]
        self.trailing: list[tuple[str, str]] = []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def set_trailing_metadata(self, trailing: list[tuple[str, str]]) -> None:
        self.trailing = list(trailing)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"


@pytest.mark.parametrize("given", ["\u00e9-id", "a\x01b", "tab\there", "\x7f"])
def test_an_id_gRPC_cannot_send_back_is_replaced(given: str) -> None:
    context = Context(given)
    assert client_request_id(context) is None

    async def call() -> str:
        return "answered"

    assert asyncio.run(answer("ServerMetadata", "", context, call, lambda: "empty")) == "answered"
    echoed = dict(context.trailing)["request_id"]
    assert echoed != given and all(" " <= c <= "~" for c in echoed)


def test_a_printable_id_is_kept_and_echoed() -> None:
    context = Context("order-42 / retry 1")
    assert client_request_id(context) == "order-42 / retry 1"

    async def call() -> Any:
        return "answered"

    asyncio.run(answer("ServerMetadata", "", context, call, lambda: "empty"))
    assert dict(context.trailing)["request_id"] == "order-42 / retry 1"
