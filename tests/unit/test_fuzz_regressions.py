"""The fuzzing campaigns' short form for CI (#18): replay the seeds and the committed regression corpus through every
target, and run a short coverage-guided campaign per target. The long campaigns are `make fuzz`.

Every input must get what the server would answer with a 4xx, never a 5xx (`tooling.fuzz.targets.check`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tooling.fuzz.campaign import CORPUS, ROOT

TARGET_NAMES = ("archive", "decode", "jpeg_crop", "metadata", "oip_grpc", "oip_http", "xmp")

pytestmark = pytest.mark.unit


def test_seeds_and_regression_corpus_replay_clean() -> None:
    """In its own process: our OIP protos share the `inference` package with tritonclient's, which other tests load,
    and one process cannot hold both in protobuf's default descriptor pool."""
    command = [sys.executable, "-m", "tooling.fuzz.campaign", "--replay"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    replayed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(replayed) == set(TARGET_NAMES)
    assert all(isinstance(count, int) and count > 0 for count in replayed.values()), replayed
    assert result.returncode == 0, result.stderr[-3000:]


def test_findings_are_kept_as_regression_cases() -> None:
    """Each crash a campaign found is a committed input under its target (named finding-*)."""
    findings = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/finding-*"))
    assert "archive/finding-zip-version-not-implemented.zip" in findings
    assert "decode/finding-tiff-exif-rewrite-typeerror.tif" in findings


def test_a_short_coverage_guided_campaign_finds_nothing(tmp_path: Path) -> None:
    """A few thousand libFuzzer-mutated inputs per target (the real campaign runner, its own processes, two targets
    at a time: the rest of the suite runs on one core)."""
    pytest.importorskip("atheris", reason="atheris (the coverage-guided fuzzer) is not installed")
    summary = tmp_path / "summary.json"
    campaign = ["--runs", "2000", "--jobs", "2", "--summary", str(summary)]
    command = [sys.executable, "-m", "tooling.fuzz.campaign", *campaign]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    figures = json.loads(summary.read_text())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert {t["target"] for t in figures["targets"]} == set(TARGET_NAMES)
    assert all(t["executions"] >= 2000 and not t["findings"] for t in figures["targets"]), figures
