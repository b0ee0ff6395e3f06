"""The access log makes no system call on the request's thread: lines are written by the log's own thread within
`FLUSH_S` (a `write` there let the GIL go and the event loop waited to get it back), and request ids come without
`getrandom` per request. A write that fails drops its lines and never reaches the request."""

import io
import json
import logging
import threading
import time

import pytest

from serving import access_log

pytestmark = pytest.mark.unit


class RecordingStream(io.StringIO):
    """A stream that notes which thread wrote to it, and can fail."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.writers: list[str] = []
        self.fail = fail

    def write(self, text: str) -> int:
        self.writers.append(threading.current_thread().name)
        if self.fail:
            raise OSError(28, "No space left on device")
        return super().write(text)


def _logger(stream: RecordingStream) -> logging.Logger:
    handler = access_log.BufferedLineHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"imgserve.access.buffer-test-{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_are_written_by_the_logs_thread_within_the_flush_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = RecordingStream()
    monkeypatch.setattr(access_log, "_logger", _logger(stream))
    monkeypatch.delenv(access_log.ACCESS_LOG_ENV, raising=False)
    for i in range(3):
        access_log.log_request("http", "/v1/classify", "m", "200", 0.01 * i, {"decode": 1.0})
    assert stream.writers == []  # nothing written on the request's thread
    deadline = time.monotonic() + 5 * access_log.FLUSH_S
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["latency_ms"] for line in lines] == [0.0, 10.0, 20.0]  # all three, in order, one write
    assert stream.writers == ["imgserve-access-log"]
    access_log.log_request("grpc", "Classify", "m", "OK", 0.001, None)
    access_log.flush()  # at once, as a stopping replica does
    assert json.loads(stream.getvalue().splitlines()[-1])["endpoint"] == "Classify"


def test_a_failing_write_drops_its_lines_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stream = RecordingStream(fail=True)
    monkeypatch.setattr(access_log, "_logger", _logger(stream))
    monkeypatch.delenv(access_log.ACCESS_LOG_ENV, raising=False)
    for _ in range(2):
        access_log.log_request("http", "/v1/classify", "m", "200", 0.01, None)
        access_log.flush()
    warnings = [r for r in caplog.records if "cannot write the access log" in r.getMessage()]
    assert len(warnings) == 1 and "1 line(s) dropped" in warnings[0].getMessage()


def test_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {access_log.new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
