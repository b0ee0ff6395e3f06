"""The short API campaign's gRPC requests against the graph placement behind Ray's own proxy (the KubeRay shape), the
server the integration tests share: a mutated message that did not parse was UNKNOWN there until 2026-12-07 (21 of
these 400 requests with the generated servicer functions in the config; none with serving.grpc.proxy_services).
Its own module so that test_api_fuzz.py's own server does not run beside the shared one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import RunningServer
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_short_grpc_campaign_behind_rays_proxy_finds_no_server_faults(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    target = ["--url", server.http_url, "--grpc", server.grpc_target, "--no-http", "--grpc-requests", "400"]
    command = [sys.executable, "-m", "tooling.fuzz.api", *target, "--seed", "2", "--out", str(out)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())
    print(f"\n[api fuzz, Ray's proxy] gRPC {report['grpc']['requests']} requests {report['grpc']['statuses']}")
    assert report["grpc"]["faults"] == [], report["grpc"]["faults"][:10]
    assert report["grpc"]["requests"] == 400 and report["http"]["requests"] == 0
    assert any("(raw)" in status for status in report["grpc"]["statuses"])  # mutated message bytes were sent
    assert result.returncode == 0, result.stderr[-2000:]
