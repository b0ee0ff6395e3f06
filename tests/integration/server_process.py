"""A real `imgserve serve` in its own process session: free ports, its own serve config and environment.

Used by the session `server` fixture and by tests that need a server of their own (autoscaling, restarts).
Ray's daemons and workers are started inside the server's session, so stopping the session stops all of
them and nothing else on the machine (never a global `ray stop`).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.paths import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class ServerProcess:
    def __init__(self, tmp: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None):
        self.tmp = tmp
        self.config = config or yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_url = ""
        self.grpc_target = ""
        self.starts = 0

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
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "IMGSERVE_ACCESS_LOG": str(self.access_log),
            **self.env,
        }
        cli = shutil.which("imgserve", path=str(Path(sys.executable).parent)) or "imgserve"
        command = [cli, "serve", "--config", str(config_path), "--http-port", str(http_port)]
        command += ["--grpc-port", str(grpc_port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True
            )
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imgserve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"imgserve not ready after {timeout_s}s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole session at once: a crash, as far as the server can tell."""
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

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C (clean Serve and Ray shutdown), then SIGKILL whatever is left of the session."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
