"""The request body's one deadline (serving.http.body_limit): a timer per request, not per ASGI message; the 408
whether the time runs out while waiting for bytes or between two messages; anyone else's cancellation untouched."""

import asyncio
import time
from typing import Any

import pytest

from serving.errors import RequestTimeoutError, RequestTooLargeError
from serving.http.body_limit import BodySizeLimitMiddleware

pytestmark = pytest.mark.unit

SCOPE = {"type": "http", "method": "POST", "path": "/", "headers": []}


def reader(pause_after_first_s: float = 0.0) -> tuple[Any, list[int]]:
    """An ASGI app that reads the whole body (pausing after its first message, as an app working between reads)
    and records its length."""
    lengths: list[int] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        total, first = 0, True
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if first and pause_after_first_s:
                await asyncio.sleep(pause_after_first_s)
            first = False
            if not message.get("more_body", False):
                break
        lengths.append(total)

    return app, lengths


def chunks(count: int, size: int = 1000, every_s: float = 0.0) -> Any:
    sent = 0

    async def receive() -> dict:
        nonlocal sent
        if every_s:
            await asyncio.sleep(every_s)
        sent += 1
        return {"type": "http.request", "body": b"x" * size, "more_body": sent < count}

    return receive


async def nothing(message: dict) -> None:
    pass


def test_a_body_in_many_messages_arms_one_timer_and_leaves_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, each of a camera photo's ~16 messages armed and cancelled a timer of its own (~20 us each)."""
    app, lengths = reader()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        armed: list[float] = []
        call_at = loop.call_at

        def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            armed.append(when)
            return call_at(when, callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", counting_call_at)
        await BodySizeLimitMiddleware(app, max_bytes=10**6, read_timeout_s=30)(SCOPE, chunks(50), nothing)
        pending = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert not pending, pending  # the timer went with the body's last message
        return len(armed)

    assert asyncio.run(main()) == 1
    assert lengths == [50_000]


def test_a_body_slower_in_all_than_the_deadline_is_a_timeout() -> None:
    """Every message comes quickly after the last, the whole body does not: the deadline is the body's, not the
    message's."""
    app, lengths = reader()
    start = time.perf_counter()
    with pytest.raises(RequestTimeoutError, match="within 0.3 s"):
        asyncio.run(
            BodySizeLimitMiddleware(app, max_bytes=10**6, read_timeout_s=0.3)(SCOPE, chunks(40, every_s=0.05), nothing)
        )
    assert 0.25 < time.perf_counter() - start < 1.5 and lengths == []


def test_a_deadline_passing_while_the_app_works_is_raised_at_its_next_read_not_into_its_work() -> None:
    """The app's own await (a sleep here) is not cancelled: the timer only cancels a wait for body bytes. The body is
    due within the deadline as the app reads it: past it, the next read is the 408 even if the next bytes are there
    (before, a read that did not have to wait was let through after the deadline, one that had to wait was not)."""
    app, lengths = reader(pause_after_first_s=0.4)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(BodySizeLimitMiddleware(app, max_bytes=10**6, read_timeout_s=0.2)(SCOPE, chunks(3), nothing))
    assert lengths == []


def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    """A caller giving up on the request (a client gone, a server stopping) is not turned into a 408."""
    app, _ = reader()

    async def main() -> None:
        task = asyncio.ensure_future(
            BodySizeLimitMiddleware(app, max_bytes=10**6, read_timeout_s=30)(SCOPE, chunks(10, every_s=1), nothing)
        )
        await asyncio.sleep(0.1)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_the_size_limit_still_counts_every_message() -> None:
    app, lengths = reader()
    with pytest.raises(RequestTooLargeError):
        asyncio.run(BodySizeLimitMiddleware(app, max_bytes=4_500, read_timeout_s=30)(SCOPE, chunks(10), nothing))
    assert lengths == []
