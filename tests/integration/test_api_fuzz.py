"""The API fuzzing campaign's short form for CI (#18): schemathesis over every HTTP route of the OpenAPI schema and
seeded random requests to every gRPC method, against a real server this test starts (`make fuzz-api` is the long
campaign). Nothing a client sends may get a 5xx or an INTERNAL/UNKNOWN status, and the server must still be up. The
gRPC part runs again behind Ray's own proxy: test_api_fuzz_behind_proxy.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.integration


def test_short_api_campaign_finds_no_server_errors(tmp_path: Path) -> None:
    require(MOBILENET_DIR)
    out = tmp_path / "api.json"
    # its own process: our OIP protos and tritonclient's (loaded by other tests) cannot share one descriptor pool
    command = [sys.executable, "-m", "tooling.fuzz.api", "--max-examples", "8", "--grpc-requests", "400"]
    result = subprocess.run(
        [*command, "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900
    )
    code = result.returncode
    report = json.loads(out.read_text())
    print(
        f"\n[api fuzz] HTTP {report['http']['requests']} requests {report['http']['statuses']}; "
        f"gRPC {report['grpc']['requests']} requests"
    )
    assert report["http"]["status_5xx"] == 0, report["http"]["output_tail"]
    assert report["grpc"]["faults"] == [], report["grpc"]["faults"][:10]
    assert report["server_alive"] and code == 0
    assert report["http"]["requests"] >= 500 and report["grpc"]["requests"] == 400
