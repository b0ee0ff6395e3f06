"""A real `imgserve serve` for the batch-job tests that can be killed (SIGKILL) and started again.

Unlike the session `server` fixture, each instance has its own job store (IMGSERVE_DATABASE_URL), object
store and cache directory, so a restart finds exactly the state the killed server left behind.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.conftest import _free_port, _wait_ready
from tests.paths import PROJECT_ROOT


def _session_pids(sid: int) -> list[int]:
    """Processes still in the server's session (Ray's workers and daemons are started inside it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


class BatchServer:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "IMGSERVE_CACHE_DIR": str(tmp / "cache"),
            **env,
        }
        # The project's serve_config.yaml as it is (full stage queues): the batch tests measure real behaviour.
        self.config = tmp / "serve_config.yaml"
        shutil.copyfile(PROJECT_ROOT / "serve_config.yaml", self.config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.tmp / f"server-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        metrics = self.tmp / f"metrics-{self.starts}"
        metrics.mkdir()
        http_port, grpc_port = _free_port(), _free_port()
        cli = shutil.which("imgserve", path=str(Path(sys.executable).parent)) or "imgserve"
        command = [cli, "serve", "--config", str(self.config), "--http-port", str(http_port)]
        command += ["--grpc-port", str(grpc_port)]
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{http_port}"
        try:
            _wait_ready(self.url, self.proc, self.log)
            self._wait_jobs_api()
        except BaseException:
            self.kill()
            raise

    def _wait_jobs_api(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/jobs", params={"limit": 1}, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"/v1/jobs not answering after {timeout_s}s:\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash or an OOM kill would."""
        if self.proc is None:
            return
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for _ in range(50):  # Ray's processes notice their parent is gone; make sure, one pid at a time
            left = _session_pids(sid)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.proc = None

    def stop(self) -> None:
        """Clean shutdown (SIGINT, like Ctrl-C); SIGKILL if it does not stop within a minute."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
