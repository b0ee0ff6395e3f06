"""A stream whose caller is refused part-way (its key revoked or expired, its role no longer enough) ends with that
status: each message of `AnalyzeStream` is admitted again, and such a refusal was answered as that message's error,
the stream going on (every later message getting the same error), while the SDK's stream over HTTP (one
/v1/analyze call per image) ends by raising on the 401/403. A rate limit or quota stays the message's own error
(the next one may pass), and so does a refusal from inside the work (a model name another tenant trained: it is
about that message's request). The servicer on a local port with a stand-in security gate (no key store); the real
gate with a revoked key is tests/unit/test_security_in_process.py. The SDK side: its gRPC stream raises on a caller
refusal even when a server (an older one) answers it as an item's error, as its HTTP stream does."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from serving.client.errors import AuthenticationError, PermissionDeniedError, RateLimitedError
from serving.client.grpc_transport import GrpcTransport
from serving.client.inputs import NamedImage
from serving.client.options import RequestOptions
from serving.grpc import edge
from serving.grpc.edge import ERROR_KIND_METADATA
from serving.security import errors as security
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_stub
from tests.unit.test_client_retry_after import StreamCall
from tests.unit.test_edges_in_process import GrpcIngress, jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

ADMITTED = 2  # messages the stand-in gate lets through before it refuses the caller
MESSAGES = 5
REFUSALS = {
    "unauthenticated": (security.UnauthenticatedError("API key revoked"), grpc.StatusCode.UNAUTHENTICATED),
    "permission_denied": (
        security.PermissionDeniedError("role viewer may not analyze"),
        grpc.StatusCode.PERMISSION_DENIED,
    ),
}


class RefusingGate:
    """Admits a stream when it opens and its first `ADMITTED` messages, then raises `error` for every message."""

    def __init__(self, error: Exception):
        self.error, self.messages = error, 0

    async def admit(
        self,
        authorization: str | None,
        client: str | None,
        role: Any,
        endpoint: str,
        rate: bool = True,
        server_wide: bool = False,
    ) -> None:
        if not rate:  # the stream opening
            return
        self.messages += 1
        if self.messages > ADMITTED:
            raise self.error

    def audit_refusal(self, error: BaseException, client: str | None, endpoint: str) -> None:
        pass


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


def stream_outcome(service: InferenceService, gate: RefusingGate) -> tuple[list[str], grpc.aio.AioRpcError | None]:
    """Each reply's error code ("OK" for an analysis) in lock-step (a message sent once the one before is answered),
    and the status the stream ended with when not OK."""
    from serving.grpc.generated import image_service_pb2 as pb

    async def scenario() -> tuple[list[str], grpc.aio.AioRpcError | None]:
        answered = asyncio.Queue[None]()

        async def messages() -> AsyncIterator[Any]:
            for i in range(MESSAGES):
                yield pb.AnalyzeStreamRequest(image=jpeg(), request_id=str(i), fields=["quality"])
                await answered.get()

        replies: list[str] = []
        async with image_service_stub(GrpcIngress(service)) as stub:
            try:
                async for reply in stub.AnalyzeStream(messages()):
                    replies.append(reply.error.code or "OK")
                    answered.put_nowait(None)
            except grpc.aio.AioRpcError as ended:
                return replies, ended
        return replies, None

    return asyncio.run(scenario())


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_caller_refused_mid_stream_ends_the_stream(
    service: InferenceService, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    error, code = REFUSALS[kind]
    monkeypatch.setattr(edge, "replica_gate", lambda: gate)
    gate = RefusingGate(error)
    replies, ended = stream_outcome(service, gate)
    assert replies == ["OK"] * ADMITTED, replies  # was OK, OK, then the refusal as each later message's error
    assert ended is not None and ended.code() == code, ended
    assert str(error) in (ended.details() or "")
    assert dict(ended.trailing_metadata() or ())[ERROR_KIND_METADATA] == kind
    assert gate.messages == ADMITTED + 1  # nothing admitted after the refusal


def test_a_rate_limited_message_is_its_own_error_and_the_stream_goes_on(
    service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = RefusingGate(security.RateLimitedError("slow down", 2.0))
    monkeypatch.setattr(edge, "replica_gate", lambda: gate)
    replies, ended = stream_outcome(service, gate)
    assert ended is None and replies == ["OK"] * ADMITTED + ["RESOURCE_EXHAUSTED"] * (MESSAGES - ADMITTED)


def test_a_refusal_from_inside_the_work_stays_the_messages_error(
    service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past admission a 403 is about the message's request (each message names its model), not the caller."""
    gate = RefusingGate(RuntimeError("never raised"))
    monkeypatch.setattr(gate, "admit", lambda *args, **kwargs: asyncio.sleep(0))
    monkeypatch.setattr(edge, "replica_gate", lambda: gate)
    analyze = service.analyze
    calls = []

    async def other_tenants_model_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise security.PermissionDeniedError("model 'theirs' belongs to another tenant")
        return await analyze(*args, **kwargs)

    monkeypatch.setattr(service, "analyze", other_tenants_model_once)
    replies, ended = stream_outcome(service, gate)
    assert ended is None and replies == ["OK", "PERMISSION_DENIED", "OK", "OK", "OK"], replies


@pytest.fixture
def transport() -> Iterator[GrpcTransport]:
    transport = GrpcTransport("127.0.0.1:1", 5, 0)
    yield transport
    transport.close()


@pytest.mark.parametrize(
    ("code", "kind", "raised"),
    [
        ("UNAUTHENTICATED", "unauthenticated", AuthenticationError),
        ("PERMISSION_DENIED", "permission_denied", PermissionDeniedError),
    ],
)
def test_the_sdk_stream_raises_on_a_caller_refusal_answered_as_an_item(
    transport: GrpcTransport, code: str, kind: str, raised: type[Exception]
) -> None:
    """As over HTTP (`CALLER_REFUSALS`): the answers before it are yielded, then the refusal is raised."""
    from serving.client.grpc_transport import pb

    ok = pb.AnalyzeStreamResponse(request_id="0", analysis=pb.ImageAnalysis())
    refused = pb.AnalyzeStreamResponse(request_id="1", error=pb.Error(code=code, kind=kind, message="key revoked"))
    canned = [ok, refused, pb.AnalyzeStreamResponse(request_id="2", error=refused.error)]
    transport._stub.AnalyzeStream = lambda feed, metadata=None: StreamCall(canned)  # type: ignore[method-assign]
    results = transport.stream([NamedImage(str(i), b"x") for i in range(3)], RequestOptions())
    assert next(results).ok
    with pytest.raises(raised) as error:
        next(results)
    assert error.value.kind == kind and error.value.message == "key revoked"


def test_the_sdk_stream_keeps_going_past_a_rate_limited_item(transport: GrpcTransport) -> None:
    from serving.client.grpc_transport import pb

    limited = pb.Error(code="RESOURCE_EXHAUSTED", kind="rate_limited", message="slow down", retry_after_s=1)
    canned = [pb.AnalyzeStreamResponse(request_id="0", error=limited), pb.AnalyzeStreamResponse(request_id="1")]
    transport._stub.AnalyzeStream = lambda feed, metadata=None: StreamCall(canned)  # type: ignore[method-assign]
    results = list(transport.stream([NamedImage("0", b"x"), NamedImage("1", b"y")], RequestOptions()))
    assert isinstance(results[0].error, RateLimitedError) and results[1].ok
