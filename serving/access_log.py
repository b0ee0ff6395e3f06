"""Structured access log: one JSON line per request (request id, protocol, endpoint, model, status, latency,
per-stage timings), written where `IMGSERVE_ACCESS_LOG` says: `stderr` (default), a file path, or `off`.

The request id is taken from the client's `X-Request-Id` header (HTTP) or `request_id` metadata (gRPC) and
generated otherwise. Behind Ray Serve's proxy it is Ray's (the proxy echoes it); on the Ingress replica's own
listeners the edges set it here (`start_request`) and echo it in the response header / trailing metadata.

Nothing here makes a system call on the request's thread (the event loop's, which every request of the replica
waits on): a call that lets the GIL go (`uuid4`'s `getrandom`, a log line's `write`) had the loop wait to get it back
from the decode and model threads, ~90 and ~180 us a request under load (py-spy, BENCHMARKS.md "Where the web mix's
idle CPU goes"). Ids come from a generator seeded once from the OS, and lines are written by a thread of their own
at most `FLUSH_S` later (as nginx's `access_log ... buffer= flush=`): a process killed outright loses that much.
"""

import atexit
import json
import logging
import os
import random
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, TextIO

_stages: ContextVar[dict[str, float] | None] = ContextVar("imgserve_stage_ms", default=None)
_request_id: ContextVar[str] = ContextVar("imgserve_request_id", default="")
_logger: logging.Logger | None = None
_warnings = logging.getLogger("imgserve.access_log")  # about the access log itself, not a request line
ACCESS_LOG_ENV = "IMGSERVE_ACCESS_LOG"
FLUSH_S = 0.25  # the longest a line waits for its write
FLUSH_BYTES = 64 * 1024  # ... or until this much is waiting
_ids = random.Random(os.urandom(32))  # request ids: unique and unguessable enough for tracing, no system call each


def new_request_id() -> str:
    """32 hex digits, as `uuid4().hex` (what ids were before), without its `getrandom` call per request."""
    return f"{_ids.getrandbits(128):032x}"


class BufferedLineHandler(logging.Handler):
    """Formats each record on the caller's thread and leaves the writing to a thread of its own, which writes what
    has gathered every `FLUSH_S` (sooner past `FLUSH_BYTES`), and at exit. A failed write drops its lines (a
    request's answer never depends on its access log line) and is reported once."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._pending: list[str] = []
        self._size = 0
        self._wake = threading.Event()
        self._write_failed = False
        threading.Thread(target=self._write_periodically, name="imgserve-access-log", daemon=True).start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock (logging.Handler.handle)
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self._wake.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr] - made by Handler.__init__
            lines, self._pending, self._size = self._pending, [], 0
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception as exc:  # noqa: BLE001 - a full disk, a closed stream: the lines go, the server stays
            if not self._write_failed:
                self._write_failed = True
                _warnings.warning("cannot write the access log (%s): %d line(s) dropped", exc, len(lines))

    def _write_periodically(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            self.flush()


def start_request(client_request_id: str | None = None) -> dict[str, float]:
    """A fresh per-request stage-timing record, visible to the service layer running in this context; outside a
    Ray Serve request (the direct listeners) also the request id: the client's, or a new one."""
    stages: dict[str, float] = {}
    _stages.set(stages)
    if not ray_request_id():
        _request_id.set(client_request_id or new_request_id())
    return stages


def echoed_request_id() -> str | None:
    """The id the edge must echo itself: set when no Ray proxy carries the request (None behind the proxy)."""
    return None if ray_request_id() else _request_id.get() or None


def record_stages(stage_ms: dict[str, float]) -> None:
    """Merge one item's stage timings into the current request's (slowest item per stage)."""
    stages = _stages.get()
    if stages is not None:
        for name, ms in stage_ms.items():
            stages[name] = max(stages.get(name, 0.0), round(ms, 3))


def ray_request_id() -> str:
    """Ray Serve's request id when the request came through its proxy or a handle; '' otherwise."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or ""
    except Exception:  # noqa: BLE001 - outside a Serve request (tests, tools)
        return ""


def current_request_id() -> str:
    return ray_request_id() or _request_id.get()


def access_log_target(env: dict[str, str] | None = None) -> str:
    """IMGSERVE_ACCESS_LOG: `stderr` (default), `off`, or a file appended to; ValueError naming it when the file
    cannot be opened for appending (or the value is empty), as `imgserve serve` checks before starting: opened and
    closed here as a replica opens it."""
    target = (os.environ if env is None else env).get(ACCESS_LOG_ENV, "stderr")
    if target in ("stderr", "off"):
        return target
    if not target.strip():
        raise ValueError(f"{ACCESS_LOG_ENV} is set but empty: unset it for stderr, or give stderr, a file or off")
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"{ACCESS_LOG_ENV}={target!r}: cannot open it for appending: {exc.strerror or exc}") from None
    return target


def _log_stream(target: str) -> TextIO:
    """The file, appended to, or stderr (with a warning, once: this logger is made once) when the file cannot be
    opened: a request's answer must never depend on its access log line."""
    if target == "stderr":
        return sys.stderr
    try:
        return open(target, "a", encoding="utf-8")  # noqa: SIM115 - the replica's for its lifetime
    except OSError as exc:
        _warnings.warning(
            "cannot open %s=%r (%s): writing the access log to stderr", ACCESS_LOG_ENV, target, exc.strerror or exc
        )
        return sys.stderr


def _access_logger() -> logging.Logger | None:
    global _logger
    target = os.environ.get(ACCESS_LOG_ENV, "stderr")
    if target == "off":
        return None
    if _logger is None:
        logger = logging.getLogger("imgserve.access")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = BufferedLineHandler(_log_stream(target))
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        _logger = logger
    return _logger


def log_request(
    protocol: str, endpoint: str, model: str, status: str, latency_s: float, stages: dict[str, float] | None
) -> None:
    """One JSON line for a finished request, written within `FLUSH_S` (`flush` writes it now). Never raises."""
    logger = _access_logger()
    if logger is None:
        return
    line: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "request_id": current_request_id(),
        "protocol": protocol,
        "endpoint": endpoint,
        "model": model,
        "status": status,
        "latency_ms": round(latency_s * 1000.0, 3),
        "stage_ms": stages or {},
    }
    logger.info(json.dumps(line))


def flush() -> None:
    """Write the access log lines waiting in this process now (a replica stopping, a test reading them)."""
    if _logger is not None:
        for handler in _logger.handlers:
            handler.flush()
