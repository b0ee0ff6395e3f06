"""Closed network defaults of a real server. While `imgserve serve` runs as `make serve` runs it, no listening
socket of its process session (the imgserve process, gcs_server, raylet, dashboard agents, runtime-env agent,
autoscaler monitor, Ray workers and Serve replicas) is on a non-loopback address: read from /proc (socket inodes
of every process matched with /proc/net/tcp{,6}) and cross-checked with `ss -ltnp`. With `--host 0.0.0.0` only
imgserve's own listeners leave loopback, auth is required and Ray's token auth is on. With `IMGSERVE_AUTH=off`
an exposed server refuses to start before Ray does."""

import ipaddress
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from loadtests.server_process import ServerProcess, imgserve_command, session_pids
from tests.integration.conftest import RunningServer, started_server
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration

# Ray's daemons a local server must have: the scan below sees them, or it proves nothing.
RAY_DAEMONS = {"gcs_server", "raylet"}


@dataclass(frozen=True)
class Listener:
    address: str  # IPv4-mapped IPv6 shown as IPv4
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def _address(raw: str, v6: bool) -> str:
    packed = bytes.fromhex(raw)
    if not v6:
        return str(ipaddress.IPv4Address(packed[::-1]))
    address = ipaddress.IPv6Address(b"".join(packed[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def session_listeners(sid: int) -> list[Listener]:
    """Every listening TCP socket held by a process of session `sid`."""
    owners: dict[str, tuple[int, str]] = {}
    for pid in session_pids(sid):
        try:
            process = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = (pid, process)
        except OSError:  # a worker that exited meanwhile
            continue
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in owners:  # 0A: LISTEN
                continue
            raw, port = fields[1].split(":")
            found.append(Listener(_address(raw, v6), int(port, 16), *owners[fields[9]]))
    return found


def ss_listeners(pids: set[int]) -> list[Listener]:
    """The same from `ss -ltnp` (iproute2), for the given pids; empty when ss is absent or cannot see pids."""
    if shutil.which("ss") is None:
        return []
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        host, port = fields[3].rsplit(":", 1)
        host = host.strip("[]").split("%")[0]
        address = "::" if host == "*" else host
        mapped = ipaddress.ip_address(address)
        address = str(getattr(mapped, "ipv4_mapped", None) or mapped)
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append(Listener(address, int(port), int(pid), name))
    return found


def show(listeners: list[Listener]) -> str:
    return "\n".join(f"{x.address}:{x.port}  {x.process}({x.pid})" for x in sorted(listeners, key=str))


def test_make_serve_listens_on_loopback_only(local_server: RunningServer) -> None:
    assert local_server.proc is not None
    sid = local_server.proc.pid
    listeners = session_listeners(sid)
    processes = {x.process for x in listeners}
    assert RAY_DAEMONS <= processes, f"Ray's daemons not found among the listeners:\n{show(listeners)}"
    http_port = int(local_server.http_url.rsplit(":", 1)[1])
    assert http_port in {x.port for x in listeners}
    exposed = [x for x in listeners if not x.loopback]
    assert not exposed, f"listening beyond loopback:\n{show(exposed)}\nall:\n{show(listeners)}"
    seen_by_ss = ss_listeners(set(session_pids(sid)))
    if seen_by_ss:  # ss agrees: same sockets, none beyond loopback
        assert not [x for x in seen_by_ss if not x.loopback], show(seen_by_ss)
        assert {x.port for x in seen_by_ss} >= {x.port for x in listeners if x.pid in {y.pid for y in seen_by_ss}}


def test_exposed_server_opens_only_its_own_listeners_and_turns_ray_token_auth_on(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    with started_server(tmp_path_factory, "exposed", config, ["--host", "0.0.0.0"]) as server:
        check_exposed(server)


def check_exposed(server: ServerProcess) -> None:
    assert server.proc is not None
    sid = server.proc.pid
    http_port = int(server.http_url.rsplit(":", 1)[1])
    grpc_port = int(server.grpc_target.rsplit(":", 1)[1])
    listeners = session_listeners(sid)
    exposed = {(x.port, x.address) for x in listeners if not x.loopback}
    assert {port for port, _ in exposed} == {http_port, grpc_port}, show(listeners)
    deadline = time.monotonic() + 60  # the banner comes once every application is RUNNING, after the probe answers
    while "auth required" not in server.tail(200_000) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "auth required" in server.tail(200_000)
    # Ray's token auth: on, with a token file only this user can read; the GCS refuses a call without it.
    raylet = next(pid for pid in session_pids(sid) if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet")
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{raylet}/environ").read_text().split("\0") if "=" in entry
    )
    assert environ["RAY_AUTH_MODE"] == "token" and environ["IMGSERVE_AUTH"] == "required"
    token = Path(environ["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    gcs = next(x for x in listeners if x.process == "gcs_server")
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{gcs.port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CheckAlive(gcs_service_pb2.CheckAliveRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {token.read_text().strip()}")]
        stub.CheckAlive(gcs_service_pb2.CheckAliveRequest(), timeout=10, metadata=metadata)
    # imgserve's own auth on the exposed listener: probes open, the rest needs a key.
    assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=10).status_code == 200
    assert httpx.get(f"{server.http_url}/v1/models", timeout=10).status_code == 401


@pytest.fixture
def refusal_env() -> Iterator[dict[str, str]]:
    yield {**os.environ, "IMGSERVE_AUTH": "off", "PYTHONUNBUFFERED": "1"}


def test_auth_off_and_exposed_refuses_to_start_before_ray(refusal_env: dict[str, str]) -> None:
    command = imgserve_command(PROJECT_ROOT / "serve_config.yaml", 18999, 19999, ["--host", "0.0.0.0"])
    started = time.monotonic()
    result = subprocess.run(command, env=refusal_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 60  # a Ray start alone takes longer on this machine
    assert "refusing to start" in result.stderr and "IMGSERVE_AUTH=off" in result.stderr
    assert "0.0.0.0" in result.stderr
    assert "Ray listens" not in result.stdout and "is ready" not in result.stdout
