"""Start the real server once per test run: `imgserve serve` (local Ray + Ray Serve) on free ports."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.paths import MOBILENET_DIR, PROJECT_ROOT

pytestmark = pytest.mark.integration

# Small limits so the 413 paths are cheap to exercise; stage queues are bounded so overload shows.
TEST_ENV = {"IMGSERVE_MAX_IMAGE_BYTES": str(8 * 1024 * 1024), "IMGSERVE_MAX_REQUEST_BYTES": str(16 * 1024 * 1024)}
MAX_QUEUED = 16


@dataclass(frozen=True)
class RunningServer:
    http_url: str
    grpc_target: str
    log_path: Path
    access_log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_config(tmp: Path) -> Path:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] != "Ingress":
            deployment["max_queued_requests"] = MAX_QUEUED
    path = tmp / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"imgserve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"imgserve not ready after {timeout_s}s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not MOBILENET_DIR.exists():
        pytest.skip(f"{MOBILENET_DIR} is absent: the default model's weights are read from ../shared/models")
    tmp = tmp_path_factory.mktemp("server")
    http_port, grpc_port = _free_port(), _free_port()
    log = tmp / "server.log"
    access_log = tmp / "access.jsonl"
    env = {
        **os.environ,
        **TEST_ENV,
        "PYTHONUNBUFFERED": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "IMGSERVE_ACCESS_LOG": str(access_log),
    }
    (tmp / "metrics").mkdir()
    cli = shutil.which("imgserve", path=str(Path(sys.executable).parent)) or "imgserve"
    command = [
        cli,
        "serve",
        "--config",
        str(_test_config(tmp)),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True
        )
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(url, proc, log)
        yield RunningServer(url, f"127.0.0.1:{grpc_port}", log, access_log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client
