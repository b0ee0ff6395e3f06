"""`imgserve serve` makes a folder for its own Ray (/tmp/imgserve-ray-XXXX: session logs, sockets, the Ray token;
~500 KB) and left it behind at every stop (a machine had 233). The supervisor the server becomes after the deploy
(serving.ray_supervisor) removes it once a stop asked for by a signal has stopped every Ray process; when Ray ended
on its own the folder stays (its logs say why) and the supervisor says where it is."""

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from serving.local_ray import RAY_TEMP_PREFIX, remove_ray_temp_dir
from serving.ray_supervisor import SupervisorState
from tests.unit.test_ray_supervisor import launch_supervisor

pytestmark = pytest.mark.unit


def ray_temp_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A folder laid out as the server's (prefix, Ray's session logs, the token, the supervisor's state file)."""
    folder = tmp_path / f"{RAY_TEMP_PREFIX}k2x9q1"
    logs = folder / "session_2026-12-05_10-00-00_000000_4242" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("raylet started\n")
    token = folder / "ray_auth_token"
    token.write_text("secret")
    state = folder / "supervisor.json"
    SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(logs), token_file=str(token)).write(state)
    return folder, state


def supervise(state: Path, child_seconds: float, stop: bool) -> subprocess.CompletedProcess[str]:
    """The supervisor (`launch_supervisor`) run to its end; with `stop`, stopped by SIGINT once it runs."""
    process = launch_supervisor(state, child_seconds)
    try:
        if stop:
            deadline = time.monotonic() + 30
            while "ray_supervisor" not in " ".join(psutil.Process(process.pid).cmdline()):
                assert time.monotonic() < deadline, "the supervisor did not start"
                time.sleep(0.05)
            time.sleep(1.0)  # its signal handlers are set
            os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_clean_stop_removes_the_ray_temp_folder(tmp_path: Path) -> None:
    folder, state = ray_temp_dir(tmp_path)
    done = supervise(state, 600, stop=True)
    assert done.returncode == 0, done.stderr
    assert "imgserve: Ray stopped" in done.stdout
    assert not folder.exists()


def test_the_folder_of_a_ray_that_died_is_kept_and_named(tmp_path: Path) -> None:
    folder, state = ray_temp_dir(tmp_path)
    done = supervise(state, 1, stop=False)
    assert done.returncode == 1
    assert (folder / "session_2026-12-05_10-00-00_000000_4242" / "logs" / "raylet.out").exists()
    assert f"Ray's logs are kept in {folder}" in done.stderr


def test_only_a_folder_named_as_the_server_makes_it_is_removed(tmp_path: Path) -> None:
    other = tmp_path / "someone-elses"
    other.mkdir()
    assert not remove_ray_temp_dir(other) and other.exists()
    ours, _ = ray_temp_dir(tmp_path)
    assert remove_ray_temp_dir(ours) and not ours.exists()
