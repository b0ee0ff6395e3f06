"""The server's Retry-After in the SDK: a gRPC stream item's error carries it as a unary call's does (it was
dropped), and a wait longer than the SDK takes on itself is raised to the caller at once (it was slept on, 10 s
at a time, `retries` times). Only the image_service stubs are loaded; no server is started."""

from collections.abc import Iterator
from typing import Any

import pytest

from serving.client.errors import ImgServeError, RateLimitedError
from serving.client.grpc_transport import GrpcTransport, pb
from serving.client.inputs import NamedImage
from serving.client.options import RequestOptions
from serving.client.retry import MAX_RETRY_AFTER_S, with_retries

pytestmark = pytest.mark.unit


class StreamCall:
    """What `AnalyzeStream` returns: the canned responses, then done."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = responses

    def __iter__(self) -> Iterator[Any]:
        return iter(self.responses)

    def cancel(self) -> None:
        pass


@pytest.mark.parametrize(("sent", "expected"), [(7.0, 7.0), (0.0, None)], ids=["said", "not-said"])
def test_a_stream_items_error_keeps_the_servers_retry_after(sent: float, expected: float | None) -> None:
    transport = GrpcTransport("127.0.0.1:1", 5, 0)
    error = pb.Error(code="RESOURCE_EXHAUSTED", kind="rate_limited", message="slow down", retry_after_s=sent)
    ok = pb.AnalyzeStreamResponse(request_id="1", analysis=pb.ImageAnalysis())
    canned = [pb.AnalyzeStreamResponse(request_id="0", error=error), ok]
    transport._stub.AnalyzeStream = lambda feed, metadata=None: StreamCall(canned)  # type: ignore[method-assign]
    try:
        images = [NamedImage("0", b"x"), NamedImage("1", b"y")]
        first, second = list(transport.stream(images, RequestOptions()))
    finally:
        transport.close()
    assert isinstance(first.error, RateLimitedError) and first.error.retry_after == expected
    assert second.error is None and second.analysis is not None


def _failing(retry_after: float | None, calls: list[int]) -> Any:
    def call() -> str:
        calls.append(1)
        raise ImgServeError("UNAVAILABLE", "store_unavailable", "database down", 503, retry_after=retry_after)

    return call


def test_a_retry_after_longer_than_the_sdk_waits_is_raised_without_sleeping() -> None:
    slept: list[float] = []
    calls: list[int] = []
    with pytest.raises(ImgServeError) as raised:
        with_retries(_failing(MAX_RETRY_AFTER_S * 3, calls), retries=3, sleep=slept.append)
    assert (len(calls), slept) == (1, [])
    assert raised.value.retry_after == MAX_RETRY_AFTER_S * 3  # the caller decides whether to wait that long


def test_a_retry_after_up_to_the_limit_is_still_waited_for() -> None:
    slept: list[float] = []
    calls: list[int] = []
    with pytest.raises(ImgServeError):
        with_retries(_failing(MAX_RETRY_AFTER_S, calls), retries=2, sleep=slept.append)
    assert (len(calls), slept) == (3, [MAX_RETRY_AFTER_S, MAX_RETRY_AFTER_S])
