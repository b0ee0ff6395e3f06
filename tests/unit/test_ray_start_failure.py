"""A start of `imgserve serve` that fails after its Ray folder (/tmp/imgserve-ray-XXXX, with the Prometheus
multiprocess folder inside) was made but before the server runs: `ray.init` raising (a RAY_ADDRESS that cannot be
reached, a port in use), or a step before it (`ensure_generated`). The folder was left behind, only its
`imgserve-metrics-*` inside (CI's tests left three). Now it is removed, unless a Ray of the server's own wrote its
session logs there before failing: kept and named then, as after a Ray that ended on its own. No Ray is started:
`ray.init` and the steps around it are replaced."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from loadtests.server_process import free_port
from serving import server
from serving.grpc import stubs
from serving.local_ray import LEAN_ENV, RAY_TEMP_PREFIX
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
SESSION_LOG = Path("session_2026-12-05_10-00-00_000000_4242") / "logs" / "gcs_server.err"
# What run_server and its steps write into os.environ: restored after each test.
SERVER_ENV = (
    "RAY_ADDRESS",
    "IMGSERVE_AUTH",
    LEAN_ENV,
    "PROMETHEUS_MULTIPROC_DIR",
    "RAY_USAGE_STATS_ENABLED",
    "MALLOC_ARENA_MAX",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    server.GRPC_MAX_MESSAGE_ENV,
    server.RAY_INTERNAL_HOST_ENV,
    server.RAY_GRPC_PROXY_HOST_ENV,
)


class StartFailed(Exception):
    pass


@pytest.fixture
def made_folders(monkeypatch: pytest.MonkeyPatch, ray_folder_base: Path) -> Iterator[list[Path]]:
    """The Ray folders run_server makes (recorded where it prepares the environment in them), in a clean
    environment; any left at the end is removed so that a failing test leaves nothing in /tmp."""
    for name in SERVER_ENV:
        monkeypatch.setenv(name, "recorded")  # so that monkeypatch restores what was there (or its absence)
        monkeypatch.delenv(name)
    monkeypatch.setenv(LEAN_ENV, "0")  # the lean path blocks imports in this process
    monkeypatch.setattr(server, "print_key_hint", lambda: None)  # opens the job database
    folders: list[Path] = []
    prepare_environment = server.prepare_environment

    def recording(folder: Path | None = None) -> str:
        assert folder is not None
        folders.append(folder)
        return prepare_environment(folder)

    monkeypatch.setattr(server, "prepare_environment", recording)
    yield folders
    for folder in folders:
        if folder.name.startswith(RAY_TEMP_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)


def run_failing_start(folders: list[Path], error: type[BaseException]) -> Path:
    with pytest.raises(error):
        server.run_server(SERVE_CONFIG, http_port=free_port(), grpc_port=free_port())
    assert len(folders) == 1
    return folders[0]


def test_a_ray_address_that_cannot_be_reached_leaves_no_folder(
    made_folders: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    monkeypatch.setenv("IMGSERVE_AUTH", "required")  # a cluster's Serve binds every interface
    monkeypatch.setattr(stubs, "ensure_generated", lambda: None)

    def unreachable(**_: Any) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(ray, "init", unreachable)
    folder = run_failing_start(made_folders, ConnectionError)
    assert not folder.exists()
    assert "Ray's logs are kept" not in capsys.readouterr().err


def test_a_step_before_ray_init_failing_leaves_no_folder(
    made_folders: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_generated() -> None:
        raise StartFailed("cannot generate the gRPC stubs")

    monkeypatch.setattr(stubs, "ensure_generated", not_generated)
    monkeypatch.setattr(ray, "init", lambda **_: pytest.fail("ray.init ran"))
    folder = run_failing_start(made_folders, StartFailed)
    assert not folder.exists()


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (StartFailed, True),  # the GCS or raylet did not come up: the session logs say why
        (KeyboardInterrupt, False),  # Ctrl-C during the start: a stop asked for
    ],
)
def test_a_ray_of_our_own_failing_in_ray_init_keeps_its_session_logs(
    made_folders: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: type[BaseException],
    kept: bool,
) -> None:
    monkeypatch.setattr(stubs, "ensure_generated", lambda: None)
    started_in: list[Path] = []

    def session_then_failure(**options: Any) -> None:
        folder = Path(options["_temp_dir"])
        started_in.append(folder)
        (folder / SESSION_LOG).parent.mkdir(parents=True)
        (folder / SESSION_LOG).write_text("GCS failed to start\n")
        raise error("ray.init failed")

    monkeypatch.setattr(ray, "init", session_then_failure)
    folder = run_failing_start(made_folders, error)
    assert started_in == [folder]
    assert (folder / SESSION_LOG).exists() is kept
    assert folder.exists() is kept
    assert (f"Ray's logs are kept in {folder}" in capsys.readouterr().err) is kept
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") is None  # loopback: no generated token to leave behind


def test_a_ray_of_our_own_that_wrote_nothing_before_failing_leaves_no_folder(
    made_folders: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray.init raising before Ray made its session folder (an option Ray refuses, say): nothing to keep."""
    monkeypatch.setattr(stubs, "ensure_generated", lambda: None)

    def refused(**_: Any) -> None:
        raise ValueError("an option Ray refuses")

    monkeypatch.setattr(ray, "init", refused)
    folder = run_failing_start(made_folders, ValueError)
    assert not folder.exists()
