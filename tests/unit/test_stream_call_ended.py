"""A stream's messages never read the call's live context: grpc.aio frees the call when the RPC ends (the client
cancels, its deadline passes) while messages can still be in flight, and one that then asked the context for its
peer crashed the whole Ingress replica (SIGSEGV in grpc_call_get_peer; seen under a client cancelling
AnalyzeStream and ModelStreamInfer calls mid-stream). The context here counts the reads made after the call ended.
ModelStreamInfer takes its `CallFacts` the same way (its generated messages cannot load beside tritonclient's)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from serving.grpc import edge
from serving.service import InferenceService
from tests.unit.test_edges_in_process import GrpcIngress, jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit
MESSAGES = 6


class EndingCall:
    """A servicer context whose call can end: reads of its peer or metadata after that are counted."""

    def __init__(self) -> None:
        self.ended, self.reads_after_end = False, 0

    def _read(self) -> None:
        self.reads_after_end += self.ended

    def peer(self) -> str:
        self._read()
        return "ipv4:10.0.0.7:5123"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self._read()
        return (("request_id", "s1"),)

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


class OpenGate:
    def __init__(self) -> None:
        self.clients: list[str | None] = []

    async def admit(self, authorization: Any, client: str | None, *args: Any, **kwargs: Any) -> None:
        self.clients.append(client)

    def audit_refusal(self, error: BaseException, client: str | None, endpoint: str) -> None:
        pass


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


def test_messages_after_the_call_ended_do_not_read_its_context(
    service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.grpc.generated import image_service_pb2 as pb

    gate = OpenGate()
    monkeypatch.setattr(edge, "replica_gate", lambda: gate)
    call = EndingCall()

    async def scenario() -> list[str]:
        first_answered = asyncio.Event()

        async def messages() -> AsyncIterator[Any]:
            yield pb.AnalyzeStreamRequest(image=jpeg(), request_id="0", fields=["quality"])
            await first_answered.wait()  # the rest arrive after the call ended
            for i in range(1, MESSAGES):
                yield pb.AnalyzeStreamRequest(image=jpeg(), request_id=str(i), fields=["quality"])

        replies = []
        async for reply in GrpcIngress(service).AnalyzeStream(messages(), call):
            replies.append(reply.request_id)
            call.ended = True
            first_answered.set()
        return replies

    assert asyncio.run(scenario()) == [str(i) for i in range(MESSAGES)]
    assert call.reads_after_end == 0  # each message read the peer and key from the call: 2 reads each before
    assert gate.clients == ["10.0.0.7"] * (MESSAGES + 1)  # the stream's opening, then every message, as before
