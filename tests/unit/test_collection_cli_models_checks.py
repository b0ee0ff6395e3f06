"""`imgserve collection analyze` serves nothing: on a machine without resnet50's weights every run printed the
server's `model resnet50 is not deployed: ...` warning and the weights' `looked in ...` line, though it used only
the default classifier. Now those are debug lines for the CLI; the server's start keeps its warnings and paths, and
a model the run does use that cannot be served is the run's one error line, naming the paths looked in."""

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

FILE = "absent-11ad3fa6.pth"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The tiny repository plus `absent`, a model whose weights file is not there, as the process's settings."""
    settings = tiny_settings(tmp_path / "server")
    tiny, absent = settings.model_repository / "tiny", settings.model_repository / "absent"
    absent.mkdir()
    config = yaml.safe_load((tiny / "config.yaml").read_text())
    sha256 = hashlib.sha256(b"never written").hexdigest()
    config |= {"name": "absent", "weights": {"file": FILE, "format": "onnx", "sha256": sha256}}
    (absent / "config.yaml").write_text(yaml.safe_dump(config))
    (absent / "labels.txt").write_text((tiny / "labels.txt").read_text())
    for name in ("model_repository", "weights_dir", "cache_dir"):
        monkeypatch.setenv(f"IMGSERVE_{name.upper()}", str(getattr(settings, name)))
    return settings


def _analyze(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> tuple[int, list[Any]]:
    """`imgserve collection analyze` of one photo, the Ray run replaced by a stand-in that records its setup."""
    from serving.cli import main
    from serving.collections import analyze
    from serving.collections.run_stats import RunStats

    setups: list[Any] = []

    def run_analysis(items: Any, setup: Any, *args: Any, **kwargs: Any) -> RunStats:
        setups.append(setup)
        return RunStats(listed=len(items), skipped=len(items))

    monkeypatch.setattr(analyze, "run_analysis", run_analysis)
    (tmp_path / "photos").mkdir(exist_ok=True)
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    argv = ["collection", "analyze", str(tmp_path / "photos"), "--name", "holiday", *options]
    return main([*argv, "--database-url", f"sqlite:///{tmp_path}/jobs.sqlite3"]), setups


def test_a_collection_run_says_nothing_of_models_it_does_not_use(
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.DEBUG):
        code, setups = _analyze(tmp_path, monkeypatch, "--model", "tiny", "--stages", "classification,quality")
    assert code == 0 and [setup.classifier for setup in setups] == ["tiny"]
    about_absent = [r for r in caplog.records if "absent" in r.getMessage()]
    assert about_absent and all(r.levelno == logging.DEBUG for r in about_absent)  # were two warnings
    assert "absent" not in capsys.readouterr().err


def test_the_servers_start_still_warns_with_the_paths_looked_in(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.config.app_args import AppArgs
    from serving.placement import compose

    with caplog.at_level(logging.WARNING):
        config = compose(AppArgs(placement="local", default_model="tiny"), settings)
    assert "absent" not in config.stages.models
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "model absent is not deployed" in warnings
    assert str(settings.weights_dir / "absent" / FILE) in warnings  # the operator's paths, in the server log


def test_a_model_the_run_uses_that_cannot_be_served_is_one_error_line_with_its_paths(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, setups = _analyze(tmp_path, monkeypatch, "--model", "absent", "--stages", "classification")
    assert code == 2 and setups == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imgserve: error: default model 'absent' cannot be served: ")
    assert f"looked in {settings.weights_dir / 'absent' / FILE}" in err and "server log" not in err


def test_a_command_using_one_model_says_nothing_of_the_others(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    """`imgserve enhance --auto` and the quality tools scan for the quality model alone (`scan_for_one`): they
    printed resnet50's `looked in ...` warning on every run. The model they use still gets its warning."""
    from serving.repository import scan_for_one

    with caplog.at_level(logging.DEBUG):
        assert scan_for_one("tiny", settings).available
    about_absent = [r for r in caplog.records if "absent" in r.getMessage()]
    assert about_absent and all(r.levelno == logging.DEBUG for r in about_absent)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not scan_for_one("absent", settings).available
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        next(r.getMessage() for r in caplog.records if "looked in" in r.getMessage())
    ]
    assert str(settings.weights_dir / "absent" / FILE) in caplog.text


def test_a_heads_base_model_gets_its_warning_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """quality_mos is a head on mobilenet_v2_imagenet's graph: without the base's weights `imgserve enhance --auto`
    fell back to the classical verdict with no line saying why (its reason says the server log names the paths)."""
    from serving.config.settings import ServerSettings
    from serving.repository import scan_for_one
    from tests.paths import PROJECT_ROOT

    settings = ServerSettings(
        model_repository=PROJECT_ROOT / "models", weights_dir=tmp_path / "no-weights", cache_dir=tmp_path / "cache"
    )
    with caplog.at_level(logging.WARNING):
        assert not scan_for_one("quality_mos", settings).available
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("model 'mobilenet_v2_imagenet'"), warned
    assert str(tmp_path / "no-weights") in warned[0]


def test_ctrl_c_during_a_run_is_one_line_and_exit_130(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while Ray analyses: the images recorded so far stay and the same command resumes (README); it printed
    Ray's and Python's KeyboardInterrupt traceback and exited 1."""
    from serving.cli import main
    from serving.collections import analyze

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(analyze, "run_analysis", interrupted)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    argv = ["collection", "analyze", str(tmp_path / "photos"), "--name", "holiday", "--model", "tiny"]
    assert main([*argv, "--database-url", f"sqlite:///{tmp_path}/jobs.sqlite3"]) == 130
    err = capsys.readouterr().err
    assert "stopped by Ctrl-C" in err and "run the same command again" in err and "Traceback" not in err
