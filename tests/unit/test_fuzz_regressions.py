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
from tooling.fuzz.seeds import SEEDS
from tooling.fuzz.targets import TARGETS, FuzzFinding, check

pytestmark = pytest.mark.unit


def _corpus(target: str) -> list[Path]:
    folder = CORPUS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_and_regression_corpus_replay_clean(target: str) -> None:
    inputs = [(name, data) for name, data in SEEDS[target]()]
    inputs += [(path.name, path.read_bytes()) for path in _corpus(target)]
    assert inputs
    for name, data in inputs:
        try:
            check(target, data)
        except FuzzFinding as exc:
            raise AssertionError(f"{target}/{name}: {exc}") from exc


def test_findings_are_kept_as_regression_cases() -> None:
    """Each crash a campaign found is a committed input under its target (named finding-*)."""
    findings = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/finding-*"))
    assert "archive/finding-zip-version-not-implemented.zip" in findings
    assert "decode/finding-tiff-exif-rewrite-typeerror.tif" in findings


def test_a_short_coverage_guided_campaign_finds_nothing(tmp_path: Path) -> None:
    """A few thousand libFuzzer-mutated inputs per target (the real campaign runner, its own processes)."""
    pytest.importorskip("atheris", reason="atheris (the coverage-guided fuzzer) is not installed")
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "tooling.fuzz.campaign", "--runs", "2000", "--summary", str(summary)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    figures = json.loads(summary.read_text())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert {t["target"] for t in figures["targets"]} == set(TARGETS)
    assert all(t["executions"] >= 2000 and not t["findings"] for t in figures["targets"]), figures
