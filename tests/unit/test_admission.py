"""Admission under overload (#18): the queue budget sheds a request where it waited too long (before its decode,
in the model's batch queue), batch-job work has no budget, and a refusal at the limit is answered before the body
is read (a small body is then drained so the keep-alive connection survives; a big one closes it)."""

import asyncio
import time

import pytest

from serving.admission import ADMITTED_AT, InflightLimit
from serving.errors import OverloadedError
from serving.http import middleware
from serving.http.middleware import ShedMiddleware
from serving.stages.batching import BatchQueue, Queued

pytestmark = pytest.mark.unit


def test_queue_budget_sheds_only_admitted_requests_that_waited_too_long() -> None:
    limit = InflightLimit(limit=4, max_queue_wait_s=0.05)
    assert limit.try_enter()
    limit.check_queue_wait()  # just admitted
    ADMITTED_AT.set(time.monotonic() - 0.2)
    with pytest.raises(OverloadedError, match="waited 2\\d\\d ms"):
        limit.check_queue_wait()
    ADMITTED_AT.set(None)  # a batch-job item: no budget
    limit.check_queue_wait()
    assert limit.deadline() is None


def test_batch_items_past_their_deadline_are_refused_and_not_run() -> None:
    ran: list[list[int]] = []

    async def run(items: list[Queued[int]]) -> list[int]:
        ran.append([q.item for q in items])
        return [q.item * 10 for q in items]

    async def main() -> list[object]:
        queue: BatchQueue[int, int] = BatchQueue(run, max_batch_size=8, batch_wait_timeout_s=0.01)
        past, future = time.monotonic() - 1.0, time.monotonic() + 10.0
        return await asyncio.gather(
            queue.submit(1, past), queue.submit(2, future), queue.submit(3), return_exceptions=True
        )

    first, second, third = asyncio.run(main())
    assert isinstance(first, OverloadedError) and second == 20 and third == 30
    assert ran == [[2, 3]]


def _scope(length: int) -> dict:
    return {
        "type": "http", "method": "POST", "path": "/v1/classify", "query_string": b"",
        "headers": [(b"content-length", str(length).encode())],
    }  # fmt: skip


@pytest.mark.parametrize("length, drained, closes", [(1000, True, False), (64 * 1024 * 1024, False, True)])
def test_refusal_at_the_limit_answers_before_reading_the_body(
    monkeypatch: pytest.MonkeyPatch, length: int, drained: bool, closes: bool
) -> None:
    async def inner(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("a refused request must not reach the app")

    limit = InflightLimit(limit=1)
    assert limit.try_enter()  # the one slot is taken
    monkeypatch.setattr(middleware, "REPLICA_LIMIT", limit)
    sent: list[dict] = []
    reads: list[float] = []

    async def receive() -> dict:
        reads.append(time.monotonic())
        more = len(reads) < 3
        return {"type": "http.request", "body": b"x" * 10, "more_body": more}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(ShedMiddleware(inner)(_scope(length), receive, send))
    assert sent[0]["status"] == 503
    headers = dict(sent[0]["headers"])
    assert headers[b"retry-after"] == b"1" and (headers.get(b"connection") == b"close") == closes
    assert (len(reads) == 3) == drained and (not reads) == (not drained)


def test_a_refused_body_trickled_forever_is_drained_within_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain after a refusal runs outside the body-deadline layer: a client trickling a small declared body
    held the refused request's task as long as it kept sending (async review)."""

    async def inner(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("a refused request must not reach the app")

    limit = InflightLimit(limit=1)
    assert limit.try_enter()
    monkeypatch.setattr(middleware, "REPLICA_LIMIT", limit)
    monkeypatch.setattr(middleware, "DRAIN_TIMEOUT_S", 0.2)
    sent: list[dict] = []

    async def trickle() -> dict:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}  # never the last part

    async def send(message: dict) -> None:
        sent.append(message)

    start = time.monotonic()
    asyncio.run(asyncio.wait_for(ShedMiddleware(inner)(_scope(1000), trickle, send), 5.0))  # for ever before
    assert time.monotonic() - start < 1.0 and sent[0]["status"] == 503
