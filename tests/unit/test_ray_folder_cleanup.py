"""The server's Ray folder (/tmp/imgserve-ray-XXXX) at a stop, whichever process stops Ray: the supervisor after the
hand-over, or the driver itself (`IMGSERVE_LEAN_RAY=0`, a stop before the hand-over, a server that joined a cluster
with RAY_ADDRESS), which left the folder behind at every stop. `clean_up_ray_folder` removes it once no process names
it (Ray's workers outlive `ray.shutdown()`, which does not wait for them, by a moment); a folder no Ray was started in
(RAY_ADDRESS) goes at any stop; a folder not named as the server names it, such as a cluster's own, is never
removed."""

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from serving.local_ray import RAY_TEMP_PREFIX
from serving.ray_supervisor import clean_up_ray_folder, ray_folder_users

pytestmark = pytest.mark.unit

# Stands in for a Ray worker still running after its raylet stopped: it writes its last lines into the folder a
# moment later and says whether it could (argv: --temp-dir=FOLDER RESULT_FILE).
LATE_WORKER = """
import sys, time
from pathlib import Path
folder, result = Path(sys.argv[1].split("=", 1)[1]), Path(sys.argv[2])
time.sleep(2)
try:
    (folder / "session_latest" / "logs" / "worker-01.err").write_text("last lines\\n")
    result.write_text("wrote")
except OSError:
    result.write_text("folder gone")
"""
SLEEPER = "import time; time.sleep(60)"


def ray_folder(tmp_path: Path, name: str = f"{RAY_TEMP_PREFIX}k2x9q1ab") -> Path:
    folder = tmp_path / name
    (folder / "session_latest" / "logs").mkdir(parents=True)
    (folder / "session_latest" / "logs" / "raylet.out").write_text("raylet started\n")
    return folder


def start_orphan(code: str, *args: str) -> psutil.Process:
    """A Python process running `code` that is not this process's child (its parent exits at once), as Ray's workers
    are once their raylet has stopped."""
    launcher = (
        "import subprocess, sys\n"
        "devnull = subprocess.DEVNULL\n"
        "print(subprocess.Popen(sys.argv[1:], stdin=devnull, stdout=devnull, stderr=devnull).pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return psutil.Process(int(done.stdout))


def stop(process: psutil.Process) -> None:
    try:
        process.kill()
        process.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass


def test_a_clean_stop_waits_for_rays_last_processes_before_removing_the_folder(tmp_path: Path) -> None:
    """`ray.shutdown()` returns before the workers have exited: the folder was removed under a worker still writing
    its logs (nothing checked for processes outside this one's tree)."""
    folder = ray_folder(tmp_path)
    result = tmp_path / "worker_result"
    worker = start_orphan(LATE_WORKER, f"--temp-dir={folder}", str(result))
    try:
        clean_up_ray_folder(folder, True)
        assert not folder.exists()
        worker.wait(timeout=30)
        assert result.read_text() == "wrote"  # the folder was still there while the worker ran
    finally:
        stop(worker)


def test_a_folder_a_running_ray_process_names_is_kept_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = ray_folder(tmp_path)
    raylet = start_orphan(SLEEPER, f"--session_dir={folder}/session_latest")
    try:
        assert not clean_up_ray_folder(folder, clean_stop=True, wait_s=0.5)
        assert (folder / "session_latest" / "logs" / "raylet.out").exists()
        assert f"Ray's logs are kept in {folder}" in capsys.readouterr().err
    finally:
        stop(raylet)
    assert clean_up_ray_folder(folder, clean_stop=True, wait_s=0.5) and not folder.exists()


def test_only_processes_that_name_the_folder_itself_use_it(tmp_path: Path) -> None:
    folder = ray_folder(tmp_path)
    neighbour = start_orphan(SLEEPER, f"--temp-dir={folder}9")  # another server's folder, a longer name
    user = start_orphan(SLEEPER, f"--object_store_name={folder}/sockets/plasma_store")
    try:
        users = {process.pid for process in ray_folder_users(folder)}
        assert user.pid in users and neighbour.pid not in users
    finally:
        stop(neighbour)
        stop(user)


@pytest.mark.parametrize(
    ("clean_stop", "own_ray", "removed"),
    [
        (True, True, True),  # Ctrl-C on a server that started its Ray (lean or IMGSERVE_LEAN_RAY=0)
        (False, True, False),  # Ray ended on its own, or the deploy failed: its logs say why
        (True, False, True),  # RAY_ADDRESS: no Ray ran in the folder, the cluster's logs are in its own
        (False, False, True),  # RAY_ADDRESS, any stop: nothing in the folder to keep
    ],
)
def test_which_stops_remove_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_stop: bool, own_ray: bool, removed: bool
) -> None:
    folder = ray_folder(tmp_path)
    token = folder / "ray_auth_token"
    token.write_text("secret")
    assert clean_up_ray_folder(folder, clean_stop, own_ray=own_ray, token=token, wait_s=0.5) is removed
    assert folder.exists() is not removed
    assert not token.exists()  # the generated Ray token goes with Ray in any case
    assert (f"Ray's logs are kept in {folder}" in capsys.readouterr().err) is not removed


@pytest.mark.parametrize("own_ray", [True, False])
def test_a_folder_not_named_as_the_server_names_it_is_never_removed(tmp_path: Path, own_ray: bool) -> None:
    """Such as the temp folder of a cluster the server joined (/tmp/ray)."""
    cluster_folder = ray_folder(tmp_path, "ray")
    assert not clean_up_ray_folder(cluster_folder, clean_stop=True, own_ray=own_ray, wait_s=0.5)
    assert (cluster_folder / "session_latest" / "logs" / "raylet.out").exists()
