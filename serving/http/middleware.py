"""ASGI middleware: admission, shedding, per-request metrics and error answers (the body's limits: body_limit)."""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import Match

from serving.access_log import echoed_request_id, log_request, start_request
from serving.admission import REPLICA_LIMIT, UNLIMITED_HTTP_PATHS, abandoned_when_client_goes, holds_no_slot
from serving.errors import ErrorInfo, ServiceError, classify_error, internal_detail, retry_after_value
from serving.metrics import ERRORS, INFLIGHT, REQUEST_LATENCY, REQUESTS, model_label

logger = logging.getLogger("imgserve.http")

# The status a request whose client went away before its answer is counted and logged with (nginx's "client closed
# request"): nothing is sent, and it is not a server error, so it must not show up as a 5xx on a dashboard.
CLIENT_CLOSED_REQUEST = 499

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_json_error(
    send: Send, status: int, message: str, kind: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with the JSON error body every imgserve error has: {"error": message, "kind": kind}."""
    body = json.dumps({"error": message, "kind": kind}).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


# Routes whose bodies are multipart uploads streamed to disk as they arrive (batch jobs): admitted at their start.
STREAMED_UPLOAD_PREFIXES = ("/v1/batch", "/v1/jobs/")
# Bytes all connections together may hold while their bodies arrive before admission (beyond: 503 overloaded).
PREREAD_BUDGET_BYTES = 1024 * 1024 * 1024
DRAIN_ON_REFUSAL_BYTES = 8 * 1024 * 1024  # a refused body up to this size is read and dropped (keep-alive)
DRAIN_TIMEOUT_S = 10.0  # ... if it arrives within this


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length")
    return b"transfer-encoding" in headers or (length is not None and length not in (b"0", b""))


async def send_error_info(send: Send, info: ErrorInfo, close: bool = False) -> None:
    """`send_json_error` for a classified error, with its `Retry-After`; `close`: the request body was not read,
    so the connection cannot carry another request."""
    headers: list[tuple[bytes, bytes]] = [(b"connection", b"close")] if close else []
    if info.retry_after_s is not None:
        headers.append((b"retry-after", retry_after_value(info.retry_after_s).encode()))
    await send_json_error(send, info.http_status, info.message, info.kind, tuple(headers))


async def refuse_overloaded(scope: Scope, receive: Receive | None, send: Send) -> None:
    """503 overloaded with `Retry-After: 1`. With `receive` (the body not read yet, shedding must stay cheap): a small
    body is read and dropped after the answer so the keep-alive connection stays usable (a reconnect per refusal
    costs more), a big one closes the connection."""
    info = classify_error(REPLICA_LIMIT.overloaded())
    ERRORS.labels("(admission)", info.kind).inc()
    unread = receive is not None and _has_body(scope)
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    drain = unread and declared.isdigit() and int(declared) <= DRAIN_ON_REFUSAL_BYTES
    await send_error_info(send, info, close=unread and not drain)
    try:  # within a deadline: outside the body-deadline layer, a trickled body held this task for as long as it took
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while drain and (message := await receive())["type"] == "http.request" and message.get("more_body"):  # type: ignore[misc]
                pass
    except TimeoutError:
        pass  # answered already; uvicorn closes a connection whose body was not read to its end


class ShedMiddleware:
    """The outermost layer: while the replica is at its admission limit, a request is answered 503 here, before
    request ids, the access log, latency histograms and auth are spent on it (counted in
    `imgserve_requests_total{endpoint="(shed)"}` and `imgserve_errors_total{endpoint="(admission)"}`, not written
    to the access log). Under overload most requests take this path, and it costs the admitted ones little."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and REPLICA_LIMIT.at_limit() and scope.get("path") not in UNLIMITED_HTTP_PATHS:
            REQUESTS.labels("(shed)", "http", "", "503").inc()
            await refuse_overloaded(scope, receive, send)
            return
        await self.app(scope, receive, send)


class AdmissionMiddleware:
    """Refuses a request with a JSON 503 (kind "overloaded") when the replica already has its limit of requests
    in flight (serving.admission); health and metrics paths always pass.

    With a limit set (the direct listeners), a request's body is read *before* it takes a slot: a slow upload holds
    a connection and the bytes it has sent (all of them together at most `PREREAD_BUDGET_BYTES`), never a slot, so
    a thousand clients trickling bodies cannot starve the others (the body read timeout ends them with 408)."""

    def __init__(self, app: Any, preread_budget_bytes: int = PREREAD_BUDGET_BYTES):
        self.app = app
        self.budget = preread_budget_bytes
        self.buffered = 0

    async def _preread(self, receive: Receive) -> tuple[list[Message], int]:
        """Every message up to the end of the body; (messages, bytes held against the budget)."""
        messages: list[Message] = []
        held = 0
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    return messages, held
                size = len(message.get("body", b""))
                if self.buffered + size > self.budget:
                    raise REPLICA_LIMIT.overloaded()
                self.buffered += size
                held += size
                if not message.get("more_body", False):
                    return messages, held
        except BaseException:
            self.buffered -= held
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") or ""
        if scope["type"] != "http" or holds_no_slot(path):
            await self.app(scope, receive, send)
            return
        held = 0  # (a request arriving at the limit was already answered by ShedMiddleware, body unread)
        upstream, read_ahead = receive, False
        if REPLICA_LIMIT.limit is not None and _has_body(scope) and not path.startswith(STREAMED_UPLOAD_PREFIXES):
            try:
                messages, held = await self._preread(receive)
            except ServiceError as exc:  # 408 slow body, 413 too big, 503 budget: answered here, no traceback
                info = classify_error(exc)
                ERRORS.labels("(admission)", info.kind).inc()
                await send_error_info(send, info, close=True)
                return
            if messages and messages[-1]["type"] == "http.disconnect":
                self.buffered -= held  # its bytes no longer wait (they stayed counted: 1 GiB of them refused all)
                raise ClientDisconnect()  # gone before its body arrived: no slot, nothing to answer
            read_ahead = True

            async def replay() -> Message:
                return messages.pop(0) if messages else await upstream()

            receive = replay
        admitted = REPLICA_LIMIT.try_enter()
        self.buffered -= held  # admitted or not, its body no longer waits for admission
        if not admitted:
            await refuse_overloaded(scope, None, send)
            return
        try:
            if read_ahead and abandoned_when_client_goes(path):
                await run_until_client_goes(self.app, scope, receive, upstream, send)
            else:
                await self.app(scope, receive, send)
        finally:
            REPLICA_LIMIT.leave()


async def run_until_client_goes(app: Any, scope: Scope, receive: Receive, upstream: Receive, send: Send) -> None:
    """Run `app` on a request whose whole body was read ahead (`receive` replays it) and cancel it when the client
    disconnects before its answer: its admission slot is freed, its batch-queue entry is skipped, and it is counted
    and logged as 499 (ClientDisconnect). `upstream` (the connection's own receive, which nobody else reads once the
    body is in) is watched for the disconnect meanwhile."""
    gone = asyncio.Event()
    answered = False
    app_read_body = False

    async def app_receive() -> Message:
        nonlocal app_read_body
        if app_read_body:  # after the body only a disconnect can come (Starlette's disconnect listeners wait here)
            await gone.wait()
            return {"type": "http.disconnect"}
        message = await receive()
        app_read_body = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    async def tracking_send(message: Message) -> None:
        nonlocal answered
        answered = answered or (message["type"] == "http.response.body" and not message.get("more_body", False))
        await send(message)

    task = asyncio.ensure_future(app(scope, app_receive, tracking_send))

    async def watch() -> None:
        if (await upstream())["type"] == "http.disconnect" and not answered:  # (servers say so once answered too)
            gone.set()
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone.is_set() and (current is None or not current.cancelling()):
            raise ClientDisconnect() from None  # the client left: RequestMetricsMiddleware counts a 499
        raise
    finally:
        watcher.cancel()


def log_answered_error(info: ErrorInfo, path: str, exc: BaseException, what: str = "internal error") -> None:
    """The server log's line for an error answered to a client: a traceback for an internal error, one line for a
    known outage (store down, full disk, replica gone), nothing for client errors and overload (counted instead).
    A line the log cannot take (a Ray worker's stderr refuses a lone surrogate in the exception's text, and
    logging's own fallback raises then) is dropped: it must not keep the client from its answer."""
    try:
        if info.kind == "internal":
            logger.error("%s on %s", what, path, exc_info=exc)
        elif info.http_status >= 500 and info.kind != "overloaded":
            logger.warning("%s on %s: %.300s", info.kind, path, internal_detail(exc))
    except Exception:  # noqa: BLE001, S110 - see above
        pass


class InternalErrorMiddleware:
    """Turns an exception no handler claimed into a JSON 500 (and logs it) instead of a bare text page."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            raise  # the client left; RequestMetricsMiddleware counts it (499), nobody is there to answer
        except Exception as exc:  # noqa: BLE001 - last line of defence: the replica keeps serving
            info = classify_error(exc)
            log_answered_error(info, str(scope.get("path")), exc, "unhandled error")
            if started:
                return
            ERRORS.labels(getattr(scope.get("route"), "path", "unmatched"), info.kind).inc()
            retry = info.retry_after_s
            headers = ((b"retry-after", retry_after_value(retry).encode()),) if retry is not None else ()
            await send_json_error(send, info.http_status, info.message, info.kind, headers)


def request_header(scope: Scope, name: bytes, limit: int = 128) -> str | None:
    """A request header's value (first one, at most `limit` characters; latin-1 as ASGI sends them), or None."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")[:limit] or None
    return None


def request_header_values(scope: Scope, name: bytes, limit: int = 128) -> list[str]:
    """Every value of a request header, in order (each at most `limit` characters; latin-1 as ASGI sends them)."""
    return [value.decode("latin-1")[:limit] for key, value in scope.get("headers") or () if key.lower() == name]


def route_template(scope: Scope) -> str:
    """The endpoint label of a request: its route's template, also for a request answered before routing (a refused
    key, a shed request), found by matching the app's routes; "unmatched" when no route matches."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None) or "unmatched"
    router = getattr(scope.get("app"), "router", None)
    probe = dict(scope)  # matching may write FastAPI's routing context into the scope it is given
    for candidate in leaf_routes(getattr(router, "routes", ())):
        if candidate.matches(probe)[0] == Match.FULL:
            return getattr(candidate, "path", None) or "unmatched"
    return "unmatched"


def leaf_routes(routes: Any) -> Iterator[Any]:
    """The routes themselves: FastAPI keeps an included router as one entry (`original_router` holds its routes)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


class RequestMetricsMiddleware:
    """Counts every answered request by endpoint (route template), model and status; times it."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        stages = start_request(request_header(scope, b"x-request-id"))
        echo = echoed_request_id()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            endpoint = route_template(scope)
            if endpoint == "/metrics":
                return
            state = scope.get("state") or {}
            model = model_label(state.get("model") or (scope.get("path_params") or {}).get("model", ""))
            latency = time.perf_counter() - start
            REQUESTS.labels(endpoint, "http", model, str(status)).inc()
            REQUEST_LATENCY.labels(endpoint, "http", model).observe(latency)
            log_request("http", endpoint, model, str(status), latency, stages)

        async def capture(message: Message) -> None:
            # Counted when the status line goes out, so a client never sees its answer before the metric moves.
            if message["type"] == "http.response.start":
                record(message["status"])
                if echo is not None and not any(k.lower() == b"x-request-id" for k, _ in message.get("headers", [])):
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"x-request-id", echo.encode("latin-1"))],
                    }
            await send(message)

        # the scrape is not counted in flight: /metrics would always show itself as one request in flight
        inflight = INFLIGHT.labels("http") if scope.get("path") != "/metrics" else None
        if inflight is not None:
            inflight.inc()
        try:
            await self.app(scope, receive, capture)
        except ClientDisconnect:  # the client closed the connection before its answer (e.g. mid-upload)
            if not recorded:
                record(CLIENT_CLOSED_REQUEST)
        except asyncio.CancelledError:  # behind Ray's proxy a client that leaves cancels this task: a 499, not a 500
            if not recorded:
                record(CLIENT_CLOSED_REQUEST)
            raise
        finally:
            if inflight is not None:
                inflight.dec()
            if not recorded:  # the app failed before answering: the server will send a 500
                record(500)
