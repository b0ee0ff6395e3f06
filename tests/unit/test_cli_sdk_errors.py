"""The SDK and CLI as a user meets them when something is wrong (a review of serving/client and serving/cli*):
errors keep their meaning and their cause, a given timeout holds, and mistakes are one-line messages, found before
the work rather than after it."""

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving.cli import main as cli_main
from serving.cli_output import table_row
from serving.client import AuthenticationError, Client, ImgServeError

pytestmark = pytest.mark.unit
Answer = Callable[[bytes], tuple[int, dict[str, str], bytes]]


def json_answer(status: int, document: Any) -> Answer:
    return lambda body: (status, {"Content-Type": "application/json"}, json.dumps(document).encode())


class Canned:
    """An HTTP server on 127.0.0.1 answering (method, path) from `routes`; it records every request's path."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Answer] = {}
        self.requests: list[str] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                path = self.path.split("?", 1)[0]
                canned.requests.append(f"{self.command} {path}")
                answer = canned.routes.get((self.command, path), json_answer(404, {"error": "no", "kind": "x"}))
                status, headers, out = answer(body)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(out))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_DELETE = _any  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.server.shutdown()


JOB = {"job_id": "j1", "status": "running", "counts": {"total": 2, "done": 1, "failed": 0}, "progress": 0.5}


def test_watch_raises_a_stream_error_with_the_code_a_plain_call_gets(canned: Canned) -> None:
    """Every error the progress stream ended with was UNAVAILABLE (retryable): a retry loop kept reopening the
    stream of a purged job or with a revoked key."""
    for code, kind, retryable in (("UNAUTHENTICATED", "unauthenticated", False), ("NOT_FOUND", "unknown_job", False)):
        events = [("progress", JOB), ("error", {"job_id": "j1", "code": code, "kind": kind, "error": "it ended"})]
        text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        canned.routes[("GET", "/v1/jobs/j1/progress")] = lambda body, t=text: (
            200,
            {"Content-Type": "text/event-stream"},
            t.encode(),
        )
        with Client(canned.url, api_key="") as client, pytest.raises(ImgServeError) as error:
            list(client.watch("j1"))
        assert error.value.code == code and error.value.retryable is retryable
        assert isinstance(error.value, AuthenticationError) is (code == "UNAUTHENTICATED")


def test_a_given_timeout_holds_for_batch_and_model_control_calls() -> None:
    """`Client(timeout=2)` waited 60 s for a model load: batch and training calls raised any timeout to 60 s."""
    with Client("http://127.0.0.1:9", timeout=2, api_key="") as client:
        assert client.training._http.timeout.read == 2 and client.batch._http.timeout.read == 2
    with Client("http://127.0.0.1:9", api_key="") as client:  # not given: 30 s, and 60 s for the long calls
        assert client.timeout == 30 and client.training._http.timeout.read == 60


def test_a_failed_upload_is_raised_even_when_cleaning_up_fails_too(canned: Canned, tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8" + name.encode() * 100)
    canned.routes[("POST", "/v1/batch")] = json_answer(202, {**JOB, "status": "open"})
    canned.routes[("POST", "/v1/jobs/j1/items")] = json_answer(
        413, {"error": "request body too large", "kind": "too_large"}
    )
    canned.routes[("DELETE", "/v1/jobs/j1")] = json_answer(503, {"error": "job store unavailable", "kind": "x"})
    with Client(canned.url, api_key="", retries=0) as client, pytest.raises(ImgServeError) as error:
        client.batch.submit([str(tmp_path)], chunk_bytes=100)
    assert error.value.kind == "too_large"  # the cancel's 503 was raised instead, the cause hidden
    assert any("could not be cancelled" in note for note in getattr(error.value, "__notes__", []))


def test_cli_mistakes_are_one_line_and_found_before_the_work(
    canned: Canned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL without a scheme was a traceback for `models load` and `train`; `--out` into a missing folder was a
    traceback after every image had been sent; an empty folder looked like success."""
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8x")
    (tmp_path / "empty").mkdir()
    cases = [
        (["models", "load", "m", "--url", "127.0.0.1:8000"], "unsupported server URL"),
        (["models", "promote", "m", "2", "--url", canned.url, "--timeout", "0"], "timeout must be > 0"),
        (["train", str(tmp_path), "--model", "m", "--url", "grpc://127.0.0.1:9000"], "served over HTTP"),
        (["classify", str(tmp_path / "a.jpg"), "--url", canned.url, "--out", str(tmp_path / "no/such.csv")], "--out"),
        (["classify", str(tmp_path / "empty"), "--url", canned.url], "no image files"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
    assert canned.requests == []  # nothing was sent


def test_the_table_shows_control_characters_in_names_escaped() -> None:
    record = {"image": "/x/line\nbreak\x1b[31mRED.jpg", "model": "m", "predictions": [{"label": "cat\r", "score": 0.9}]}
    row = table_row(record)
    assert "\n" not in row and "\x1b" not in row and "\r" not in row
    assert "line\\nbreak\\x1b[31mRED.jpg" in row and "cat\\r" in row


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "t", "--quota", "1000/hour"],
        ["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "t", "--rate", "1/s", "--burst", "-1"],
        ["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "t", "--rate", "inf"],
        ["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "t", "--burst", "5"],
        ["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "acme\n"],
        ["tenants", "update", "t", "--quota-bytes", "-5"],
    ],
)
def test_key_and_tenant_values_that_would_mean_something_else_are_refused(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--quota 1000/hour` was stored as 1000 a day, `--burst -1` made the key unlimited, `--rate inf` was a
    traceback, a tenant name could end in a newline, a negative stored-bytes quota was taken."""
    monkeypatch.setenv("IMGSERVE_CACHE_DIR", str(tmp_path))
    try:
        code = cli_main(argv)
    except SystemExit as exit_:  # argparse refuses a value of the wrong form itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err and "created key" not in err


def test_keys_list_says_when_there_are_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`imgserve keys list` printed nothing at all on an empty database: no way to tell it from a hang or a bad
    database URL. It says so on stderr; the table on stdout stays empty for scripts, and `--json` prints []."""
    monkeypatch.setenv("IMGSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("IMGSERVE_DATABASE_URL", raising=False)
    assert cli_main(["keys", "list", "--tenant", "acme"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no active keys for tenant 'acme'" in err
    assert cli_main(["keys", "list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert cli_main(["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "acme"]) == 0
    capsys.readouterr()
    assert cli_main(["keys", "list"]) == 0
    out, err = capsys.readouterr()
    assert "acme" in out and err == ""
