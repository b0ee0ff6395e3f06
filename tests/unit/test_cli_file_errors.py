"""A file or folder a command is pointed at that cannot be used is one `imgserve: error:` line and exit 1, not a
traceback (CLI review: `quality calibrate --out DIR` raised IsADirectoryError, `--out nodir/x.yaml` and a missing
`--base` FileNotFoundError, `collection report --out DIR` the same)."""

from pathlib import Path

import pytest

import tooling.quality.calibrate as calibrate_module
from pipelines.quality.thresholds import load_thresholds
from serving.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("out", ["folder", "missing/x.yaml"])
def test_an_unwritable_out_is_one_line(
    tmp_path: Path, out: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(calibrate_module, "calibrate", lambda folder, base, negatives: (load_thresholds(), []))
    (tmp_path / "folder").mkdir()
    assert main(["quality", "calibrate", str(tmp_path), "--out", str(tmp_path / out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("imgserve: error: ") and str(tmp_path / out) in err and "Traceback" not in err


def test_a_missing_base_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["quality", "calibrate", str(tmp_path), "--out", str(tmp_path / "t.yaml"), "--base", "/nonexistent.yaml"]
    )
    assert code == 1 and capsys.readouterr().err.startswith("imgserve: error: No such file or directory")
