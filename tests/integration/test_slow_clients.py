"""1,100 connections trickling request bodies into the local placement's listeners (a slowloris upload flood, far
over the replica's 48-request admission limit) while other clients classify (#18): the slow uploads hold sockets
and their few bytes, never admission slots, so every other client still gets 200."""

import json
import resource
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from loadtests.server_process import ServerProcess
from tests.integration.conftest import LOCAL_MAX_INFLIGHT
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration
SLOW_CONNECTIONS = 1100


def test_1100_slow_body_connections_leave_other_clients_served(local_server: ServerProcess) -> None:
    photo = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[0].read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_CONNECTIONS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    address = urlsplit(local_server.http_url)
    head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"  # loopback (host_guard)
        b"Content-Length: 1000000\r\n\r\n\xff\xd8"
    )
    sockets: list[socket.socket] = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            connection = socket.create_connection((address.hostname, address.port), timeout=10)
            connection.sendall(head)  # two bytes of a million, then silence
            sockets.append(connection)
        time.sleep(1.0)
        latencies, statuses = [], []
        with httpx.Client(base_url=local_server.http_url, timeout=30) as client:
            for _ in range(20):
                start = time.perf_counter()
                statuses.append(client.post("/v1/classify", content=photo).status_code)
                latencies.append(time.perf_counter() - start)
        for connection in sockets[:50]:  # the slow ones are still connected, waiting for their read timeout
            connection.settimeout(0.0)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
    finally:
        for connection in sockets:
            connection.close()
    print(
        f"\n[slow clients] {len(sockets)} trickling uploads held (admission limit {LOCAL_MAX_INFLIGHT}); "
        f"20 other requests: {sorted(set(statuses))}, worst {max(latencies) * 1000:.0f} ms"
    )
    assert statuses == [200] * 20
    # The uploads whose clients went away are counted 499 (client closed request), none of them as a 500.
    deadline, gone = time.monotonic() + 30, []
    while len(gone) < SLOW_CONNECTIONS and time.monotonic() < deadline:
        time.sleep(0.5)
        lines = [json.loads(line) for line in local_server.access_log.read_text().splitlines() if line.strip()]
        gone = [line for line in lines if line["protocol"] == "http" and line["status"] == "499"]
    assert len(gone) >= SLOW_CONNECTIONS, f"{len(gone)} uploads counted 499"
    assert not [line for line in lines if line["status"] == "500"]
