"""Structured access log: one JSON line per request (request id, protocol, endpoint, model, status, latency,
per-stage timings), written where `IMGSERVE_ACCESS_LOG` says: `stderr` (default), a file path, or `off`.

The request id is taken from the client's `X-Request-Id` header (HTTP) or `request_id` metadata (gRPC) and
generated otherwise. Behind Ray Serve's proxy it is Ray's (the proxy echoes it); on the Ingress replica's own
listeners the edges set it here (`start_request`) and echo it in the response header / trailing metadata.
"""

import json
import logging
import os
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

_stages: ContextVar[dict[str, float] | None] = ContextVar("imgserve_stage_ms", default=None)
_request_id: ContextVar[str] = ContextVar("imgserve_request_id", default="")
_logger: logging.Logger | None = None
_warnings = logging.getLogger("imgserve.access_log")  # about the access log itself, not a request line
ACCESS_LOG_ENV = "IMGSERVE_ACCESS_LOG"


def start_request(client_request_id: str | None = None) -> dict[str, float]:
    """A fresh per-request stage-timing record, visible to the service layer running in this context; outside a
    Ray Serve request (the direct listeners) also the request id: the client's, or a new one."""
    stages: dict[str, float] = {}
    _stages.set(stages)
    if not ray_request_id():
        _request_id.set(client_request_id or uuid.uuid4().hex)
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


def _file_handler(target: str) -> logging.Handler:
    """The file's handler, or stderr's (with a warning, once: this logger is made once) when the file cannot be
    opened: a request's answer must never depend on its access log line."""
    try:
        return logging.FileHandler(target, encoding="utf-8")
    except OSError as exc:
        _warnings.warning(
            "cannot open %s=%r (%s): writing the access log to stderr", ACCESS_LOG_ENV, target, exc.strerror or exc
        )
        return logging.StreamHandler(sys.stderr)


def _access_logger() -> logging.Logger | None:
    global _logger
    target = os.environ.get(ACCESS_LOG_ENV, "stderr")
    if target == "off":
        return None
    if _logger is None:
        logger = logging.getLogger("imgserve.access")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr) if target == "stderr" else _file_handler(target)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        _logger = logger
    return _logger


def log_request(
    protocol: str, endpoint: str, model: str, status: str, latency_s: float, stages: dict[str, float] | None
) -> None:
    """One JSON line for a finished request. Never raises (a failing write is logging's `handleError`)."""
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
