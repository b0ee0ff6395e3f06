"""Servers in process sessions of their own: the tests' real `imgserve serve` and the benchmark's servers.

- `ProcessSession`: any command line (environment, working folder, log file) started in a new process
  session, ready when a URL answers 200, stopped with a signal (SIGINT by default) and then SIGKILL for
  whatever is left of the session.
- `ServerProcess`: `imgserve serve` on free ports with its own serve config (written to its temp folder),
  metrics folder and access log; used by the integration tests' `server` fixtures and by tests that need a
  server of their own (autoscaling, restarts).

Ray's daemons and workers are started inside the server's session, so stopping the session stops all of
them and nothing else on the machine (never a global `ray stop`).
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
READY_PATH = "/v2/health/ready"  # imgserve answers 200 here once the Serve application is running


# Ports Ray's daemons take by default once Ray starts (GCS, dashboard, client server, dashboard agent, the
# autoscaler's and the dashboard's metrics): free now, taken a moment later, so a server must not be given them.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 44217, 44227, 52365})


# Below the kernel's ephemeral range (32768+ on Linux), where Ray's workers bind their gRPC servers on port 0,
# and above Ray's worker port range (10002-19999): a port handed out here cannot be taken by a Ray process between
# the check and the server's own bind (that race failed a restart test under load).
TEST_PORTS = range(20000, 32000)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, in `TEST_PORTS`, not one Ray's daemons will take, and not one this process was
    given before: a server's HTTP and gRPC ports are drawn one after the other while neither is bound yet, and the
    same port twice made `imgserve serve` refuse to start (every test of that server errored, once in a full run)."""
    while True:
        port = random.randrange(TEST_PORTS.start, TEST_PORTS.stop)
        if port in RAY_DEFAULT_PORTS or port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def session_pids(sid: int) -> list[int]:
    """Processes still in a process session (Ray's workers and daemons are started inside the server's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def replica_processes(deployment: str = "") -> list[Any]:
    """psutil processes of the imgserve application's Ray Serve replicas (process title
    `ray::ServeReplica:imgserve:<deployment>`); every replica when `deployment` is empty."""
    import psutil

    title = f"ServeReplica:imgserve:{deployment}"
    return [p for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or [])]


def read_tail(path: Path, chars: int = 4000, lines: int | None = None) -> str:
    """The end of a log file: its last `lines` lines when given, else its last `chars` characters."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) if lines is not None else text[-chars:]


class StartError(RuntimeError):
    """A process that exited, or did not answer its readiness URL in time; `reason` says which."""

    def __init__(self, name: str, reason: str, tail: str) -> None:
        super().__init__(f"{name} {reason}:\n{tail}")
        self.reason = reason


class ProcessSession:
    """`command` in a new process session, stdout and stderr to `log`, ready when `ready_url` answers 200."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log: Path,
        ready_url: str,
        env: Mapping[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
        stop_signal: int = signal.SIGINT,
        name: str | None = None,
    ) -> None:
        self.command = list(command)
        self.log = log
        self.ready_url = ready_url
        self.env = dict(env or {})  # on top of this process's environment
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.name = name or Path(self.command[0]).name
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> int:
        """Start the command (not waiting for it to be ready); returns its pid, which is also the session id."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
            )
        return self.proc.pid

    def wait_ready(self, timeout_s: float) -> None:
        """Poll `ready_url` every second until it answers 200; StartError if the process exits or time runs out."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(self.name, f"exited with {self.proc.returncode}", self.tail())
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise StartError(self.name, f"not ready after {timeout_s:.0f} s", self.tail())

    def start(self, timeout_s: float = 300.0) -> None:
        """Launch and wait until ready; a start that fails leaves nothing of the session running."""
        self.launch()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise

    def tail(self, chars: int = 4000, lines: int | None = None) -> str:
        return read_tail(self.log, chars, lines)

    def kill(self) -> None:
        """SIGKILL the whole session at once: a crash, as far as the process can tell."""
        if self.proc is None:
            return
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for _ in range(50):  # Ray's processes may have left the process group; the session still holds them
            left = session_pids(sid)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.proc = None

    def stop(self, timeout_s: float = 60.0) -> bool:
        """`stop_signal` (SIGINT: a clean Serve and Ray shutdown), wait, then SIGKILL whatever is left of the
        session. True when the process exited by itself within `timeout_s` (or was not running)."""
        if self.proc is None:
            return True
        exited = True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(self.stop_signal)
                self.proc.wait(timeout=timeout_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                exited = False
        self.kill()
        return exited


def imgserve_cli() -> str:
    """This venv's `imgserve` console command (else whichever `imgserve` is on PATH)."""
    return shutil.which("imgserve", path=str(Path(sys.executable).parent)) or "imgserve"


def imgserve_command(config: Path | str, http_port: int, grpc_port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """`imgserve serve --config CONFIG --http-port H --grpc-port G [extra_args]` with this venv's `imgserve`."""
    cli = imgserve_cli()
    command = [cli, "serve", "--config", str(config), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    return command + list(extra_args)


class ServerProcess:
    """A real `imgserve serve` on free ports: `config` (default serve_config.yaml) written to `tmp`, `env` on
    top of the test environment, and `extra_args` appended to the command line (e.g. `--placement graph`).
    Every start gets new ports, a new log (`server-N.log`) and a new metrics folder."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config = config or yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
        self.env = env or {}
        self.extra_args = list(extra_args or [])
        self.session: ProcessSession | None = None
        self.http_url = ""
        self.grpc_target = ""
        self.starts = 0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.session.proc if self.session else None

    @property
    def log(self) -> Path:
        return self.tmp / f"server-{self.starts}.log"

    @property
    def access_log(self) -> Path:
        return self.tmp / "access.jsonl"

    def start(self, timeout_s: float = 300.0) -> None:
        self.starts += 1
        http_port, grpc_port = free_port(), free_port()
        config_path = self.tmp / "serve_config.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        metrics = self.tmp / f"metrics-{self.starts}"
        metrics.mkdir()
        env = {
            "PYTHONUNBUFFERED": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "IMGSERVE_ACCESS_LOG": str(self.access_log),
            **self.env,
        }
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.session = ProcessSession(
            imgserve_command(config_path, http_port, grpc_port, self.extra_args),
            log=self.log,
            ready_url=f"{self.http_url}{READY_PATH}",
            env=env,
            name="imgserve",
        )
        self.session.start(timeout_s)

    def tail(self, chars: int = 4000) -> str:
        return read_tail(self.log, chars)

    def kill(self) -> None:
        """SIGKILL the whole session at once: a crash, as far as the server can tell."""
        if self.session:
            self.session.kill()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C (clean Serve and Ray shutdown), then SIGKILL whatever is left of the session."""
        if self.session:
            self.session.stop(timeout_s)

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
