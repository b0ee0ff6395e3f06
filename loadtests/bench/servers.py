"""The servers under test: how to start each (a `ProcessSession`), where to send requests, which client to use."""

import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench.auth import BenchKey, verify_enforced
from loadtests.bench.catalog import AUTH_PAIRS, IMGSERVE_ENV, IMGSERVE_EXTRA_ARGS, MODEL_NAME, SERVE_CONFIG, is_grpc
from loadtests.bench.console import log, shown
from loadtests.bench.monitor import TreeMonitor
from loadtests.bench.senders import naive_sender
from loadtests.bench.triton_venv import python_libdir
from loadtests.closed_loop import SenderFactory, keyed_sender
from loadtests.server_process import (
    PROJECT_ROOT,
    READY_PATH,
    ProcessSession,
    StartError,
    free_port,
    imgserve_command,
)

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*)$")


def last_error(log_text: str) -> str:
    """The last `SomeError: message` line of a log (a traceback's verdict), else its last non-empty line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match:
            return match.group(1)
    return lines[-1] if lines else "(no output)"


@dataclass
class Server:
    """One server under test: how to start it, where to send requests, which client to use."""

    name: str
    command: list[str]
    url: str  # what the client talks to
    ready_url: str  # GET -> 200 when ready
    sender: SenderFactory | None = None  # None: closed_loop picks http_sender / grpc_sender from the URL
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 300.0
    session: ProcessSession | None = None
    monitor: TreeMonitor | None = None
    auth: BenchKey | None = None  # *_auth servers: a key made before each start, sent by their clients

    @property
    def args(self) -> list[str]:
        """The command line after the executable (bench.json records it for the imgserve servers)."""
        return self.command[1:]

    @property
    def log_path(self) -> Path | None:
        return self.session.log if self.session else None

    @property
    def client_sender(self) -> SenderFactory | None:
        """What the bench's clients send with: `sender`, or for an *_auth server the default sender with its key."""
        if self.auth is not None and self.auth.value:
            return keyed_sender(self.url, self.auth.value)
        return self.sender

    def start(self, log_dir: Path) -> None:
        """Start in a process session of its own, monitor its process tree from the first moment, wait ready.
        An *_auth server gets a fresh key and database first, and must then refuse a call without the key."""
        env = dict(self.env)
        if self.auth is not None:
            self.auth.create(env)
            env.update(self.auth.env())
            log(f"{self.name}: made an analyst API key in a database of its own ({self.auth.database_url})")
        self.session = ProcessSession(
            self.command,
            log=log_dir / f"{self.name}.log",
            ready_url=self.ready_url,
            env=env,
            cwd=PROJECT_ROOT,
            stop_signal=self.stop_signal,
            name=self.name,
        )
        self.monitor = TreeMonitor(self.session.launch()).start()
        try:
            self.session.wait_ready(self.start_timeout)
        except StartError as exc:
            verdict = last_error(self.session.tail(lines=40))
            raise RuntimeError(f"{self.name} {exc.reason}: {verdict} (log: {shown(self.log_path)})") from None
        if self.auth is not None and self.auth.value:
            try:
                verify_enforced(self.url, self.auth.value)
            except RuntimeError as exc:
                raise RuntimeError(f"{self.name}: {exc}") from None

    def stop(self, timeout: float = 60.0) -> None:
        """Signal the server, wait, then SIGKILL whatever is left of its process session."""
        if self.session is None:
            return
        if self.monitor:
            self.monitor.stop()
        if not self.session.stop(timeout):
            log(f"{self.name}: no exit {timeout:.0f} s after signal {self.stop_signal}; killed its processes")
        if self.auth is not None:
            self.auth.cleanup()  # the key and its database go with the server


def naive_server(model_path: Path, labels_path: Path) -> Server:
    port = free_port()
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    return Server(
        "naive",
        [uvicorn, "--factory", "loadtests.baselines.naive_server:create_app", "--host", "127.0.0.1"]
        + ["--port", str(port), "--log-level", "warning", "--no-access-log"],
        url=f"http://127.0.0.1:{port}",
        ready_url=f"http://127.0.0.1:{port}/health",
        sender=naive_sender,
        env={"NAIVE_MODEL": str(model_path), "NAIVE_LABELS": str(labels_path)},
        start_timeout=120,
    )


def triton_server(triton_python: Path, model_path: Path, name: str = "triton") -> Server:
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    libdir = python_libdir(triton_python)
    ld_path = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    script = PROJECT_ROOT / "loadtests" / "baselines" / "triton_server.py"
    return Server(
        name,
        [str(triton_python), str(script), "--model", str(model_path), "--http-port", str(http)]
        + ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics)],
        url=f"http://127.0.0.1:{http}",
        ready_url=f"http://127.0.0.1:{http}/v2/models/{MODEL_NAME}/ready",
        env={"LD_LIBRARY_PATH": ld_path},
        start_timeout=240,
    )


def imgserve_server(name: str) -> Server:
    """`imgserve serve --config serve_config.yaml` (what `make serve` runs) plus the server's placement args; an
    *_auth server also gets IMGSERVE_AUTH=required and a `BenchKey` (its database and key, made at start)."""
    http, grpc_port = free_port(), free_port()
    return Server(
        name,
        imgserve_command(SERVE_CONFIG, http, grpc_port, IMGSERVE_EXTRA_ARGS[name]),
        url=f"grpc://127.0.0.1:{grpc_port}" if is_grpc(name) else f"http://127.0.0.1:{http}",
        ready_url=f"http://127.0.0.1:{http}{READY_PATH}",  # the probes answer without a key
        env=dict(IMGSERVE_ENV.get(name, {})),
        stop_signal=signal.SIGINT,
        start_timeout=300,
        auth=BenchKey(name) if name in AUTH_PAIRS else None,
    )


def build_servers(
    names: list[str], model_path: Path, labels_path: Path, triton_python: Path | None, int8_path: Path | None = None
) -> list[Server]:
    """The servers named, in order; triton only when its venv is there (`triton_python`), triton_int8 only when
    the INT8 variant is built too (`int8_path`)."""
    servers: list[Server] = []
    for name in names:
        if name == "naive":
            servers.append(naive_server(model_path, labels_path))
        elif name == "triton" and triton_python is not None:
            servers.append(triton_server(triton_python, model_path))
        elif name == "triton_int8" and triton_python is not None and int8_path is not None:
            servers.append(triton_server(triton_python, int8_path, name))
        elif name in IMGSERVE_EXTRA_ARGS:
            servers.append(imgserve_server(name))
    return servers
