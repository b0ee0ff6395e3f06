"""The sweep of Ray folders (/tmp/imgserve-ray-XXXX) at each start of `imgserve serve`: nothing removed the folders
of servers killed outright (SIGKILL, the OOM killer; CI's kill-and-restart test leaves one per run), so /tmp filled
up with them. The sweep removes those of servers no longer running and never one in use: the lock its server holds
(across the exec into the supervisor), a process that still names it, works in it or has a file open there; folders
kept for their logs follow a policy; symlinks, other names and other users' folders are never touched. Everything
runs in a temporary base folder; no Ray is started."""

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from serving import ray_folders
from serving.local_ray import RAY_TEMP_PREFIX
from serving.ray_folders import (
    KEEP_LOGS_MAX_AGE_S,
    KEEP_LOGS_NEWEST,
    KEPT_FOR_LOGS_FILE,
    LEGACY_MIN_AGE_S,
    LOCK_FILE,
    folder_state,
    hold_ray_folder,
    sweep_ray_folders,
)
from serving.ray_supervisor import clean_up_ray_folder, new_ray_folder
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

FOLDER_ENV = "SWEEP_TEST_FOLDER"  # the folder is passed in the environment: no command line names it
# Takes the folder's lock as `imgserve serve` does, says so, then sleeps, or execs (as the driver does into the
# supervisor) into a Python that only sleeps.
LOCK_HOLDER = f"""
import os, sys, time
from pathlib import Path
from serving.ray_folders import hold_ray_folder
assert hold_ray_folder(Path(os.environ["{FOLDER_ENV}"])) is not None
print("locked", flush=True)
if sys.argv[1:] == ["exec"]:
    os.execv(sys.executable, [sys.executable, "-c", "import time; print('execd', flush=True); time.sleep(30)"])
time.sleep(60)
"""
SLEEPER = "import time; time.sleep(60)"
FILE_HOLDER = f"""
import os, time
handle = open(os.environ["{FOLDER_ENV}"] + "/session_1/logs/worker.out", "a")
print("open", flush=True)
time.sleep(60)
"""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def start(processes: list[subprocess.Popen[str]], code: str, folder: Path, *args: str, cwd: Path = PROJECT_ROOT) -> int:
    """`code` in a child Python told `folder` through its environment; returns its PID once it said it is ready."""
    env = {**os.environ, FOLDER_ENV: str(folder), "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-c", code, *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    if code != SLEEPER:
        assert process.stdout is not None and process.stdout.readline().strip() in ("locked", "open")
    return process.pid


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def ray_folder(base: Path, name: str, locked_once: bool = True, age_s: float = 0.0) -> Path:
    """A folder as a server leaves it: session logs, and (this imgserve's) the lock file no one holds any more."""
    folder = base / f"{RAY_TEMP_PREFIX}{name}"
    (folder / "session_1" / "logs").mkdir(parents=True)
    (folder / "session_1" / "logs" / "raylet.out").write_text("raylet started\n")
    if locked_once:
        (folder / LOCK_FILE).touch()
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def kept_for_logs(base: Path, name: str, age_s: float) -> Path:
    folder = ray_folder(base, name)
    marker = folder / KEPT_FOR_LOGS_FILE
    marker.write_text("kept\n")
    then = time.time() - age_s
    os.utime(marker, (then, then))
    return folder


def test_a_killed_servers_folder_is_swept_and_a_running_ones_kept(
    tmp_path: Path, processes: list[subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    killed, running = (tmp_path / f"{RAY_TEMP_PREFIX}{name}" for name in ("killed01", "running1"))
    for folder in (killed, running):
        folder.mkdir()
        start(processes, LOCK_HOLDER, folder)
    assert folder_state(killed) == folder_state(running) == "running"
    assert sweep_ray_folders(tmp_path) == []
    kill(processes[0])  # SIGKILL: no stop ran, the folder stays
    assert folder_state(killed) == "ended" and killed.exists()
    assert sweep_ray_folders(tmp_path) == [killed]
    assert not killed.exists() and (running / LOCK_FILE).exists()
    assert "removed 1 Ray folder(s) of servers no longer running" in capsys.readouterr().err


def test_the_lock_survives_the_exec_into_the_supervisor(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    folder = tmp_path / f"{RAY_TEMP_PREFIX}execd0001"
    folder.mkdir()
    pid = start(processes, LOCK_HOLDER, folder, "exec")
    stdout = processes[0].stdout
    assert stdout is not None and stdout.readline().strip() == "execd"  # the program it exec'd into runs
    assert psutil.Process(pid).cmdline()[-1].startswith("import time; print('execd'")
    assert folder_state(folder) == "running"
    assert sweep_ray_folders(tmp_path) == [] and folder.exists()
    kill(processes[0])
    assert sweep_ray_folders(tmp_path) == [folder]


def test_the_lock_file_appears_locked_and_is_inherited(tmp_path: Path) -> None:
    fd = hold_ray_folder(tmp_path)
    assert fd is not None
    try:
        assert os.get_inheritable(fd)
        assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_FILE]  # no pending name left
        assert folder_state(tmp_path) == "running"  # another open of the file cannot take it, even in this process
    finally:
        os.close(fd)
    assert folder_state(tmp_path) == "ended"


def test_a_folder_rays_processes_still_use_after_their_server_died_is_kept(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A killed supervisor's GCS and raylet die with it, but its agents and workers only once they see the raylet gone:
    until then they name the folder (--session-dir), or have their log files open there."""
    named, open_in, worked_in = (ray_folder(tmp_path, name) for name in ("named001", "openin01", "cwdin001"))
    start(processes, SLEEPER, named, f"--session-dir={named}/session_1")
    start(processes, FILE_HOLDER, open_in)
    start(processes, SLEEPER, worked_in, cwd=worked_in)
    time.sleep(0.5)  # the sleepers have started
    assert sweep_ray_folders(tmp_path) == []
    assert all(folder.exists() for folder in (named, open_in, worked_in))
    for process in processes:
        kill(process)
    assert sorted(sweep_ray_folders(tmp_path)) == sorted([named, open_in, worked_in])


def test_folders_kept_for_their_logs_stay_by_the_policy(tmp_path: Path) -> None:
    hours = [1, 2, 3, 4, 5, 6, 7]  # seven failed starts an hour apart: the five newest stay
    folders = [kept_for_logs(tmp_path, f"logs{hour:04d}", hour * 3600.0) for hour in hours]
    expired = kept_for_logs(tmp_path, "logsold1", KEEP_LOGS_MAX_AGE_S + 3600)
    removed = sweep_ray_folders(tmp_path)
    assert sorted(removed) == sorted([*folders[KEEP_LOGS_NEWEST:], expired])
    assert all(folder.exists() for folder in folders[:KEEP_LOGS_NEWEST])
    # a week on, none is within the policy's age
    assert len(sweep_ray_folders(tmp_path, now=time.time() + KEEP_LOGS_MAX_AGE_S)) == KEEP_LOGS_NEWEST


def test_a_stop_that_keeps_the_logs_marks_the_folder_so_the_next_start_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = ray_folder(tmp_path, "rayended")  # Ray ended on its own: kept and named
    assert not clean_up_ray_folder(kept, clean_stop=False, wait_s=0.5)
    assert (kept / KEPT_FOR_LOGS_FILE).exists()
    still_used = ray_folder(tmp_path, "stillrun")  # a clean stop while a Ray process ran: not kept for its logs
    ray_worker = subprocess.Popen([sys.executable, "-c", SLEEPER, f"--temp-dir={still_used}"])
    try:
        assert not clean_up_ray_folder(still_used, clean_stop=True, wait_s=0.5)
    finally:
        ray_worker.kill()
        ray_worker.wait(timeout=10)
    assert not (still_used / KEPT_FOR_LOGS_FILE).exists()
    assert sweep_ray_folders(tmp_path) == [still_used]
    assert kept.exists()
    assert f"Ray's logs are kept in {kept}" in capsys.readouterr().err


def test_a_failed_start_keeps_its_logs_through_the_next_start_which_sweeps_and_locks(tmp_path: Path) -> None:
    killed = ray_folder(tmp_path, "killed02")
    with pytest.raises(RuntimeError), new_ray_folder(own_ray=True, base=tmp_path) as failed:
        assert not killed.exists()  # swept before the folder was made
        assert folder_state(failed) == "running"
        (failed / "session_2026" / "logs").mkdir(parents=True)
        raise RuntimeError("the GCS did not come up")
    assert folder_state(failed) == "kept_for_logs"
    with new_ray_folder(own_ray=True, base=tmp_path) as started:
        assert failed.exists() and folder_state(started) == "running"
    assert folder_state(started) == "running"  # held until this process ends: the server runs on


def test_folders_of_an_older_imgserve_go_after_a_day_when_unused(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    recent = ray_folder(tmp_path, "recent01", locked_once=False, age_s=LEGACY_MIN_AGE_S - 3600)
    old = ray_folder(tmp_path, "oldunuse", locked_once=False, age_s=LEGACY_MIN_AGE_S + 3600)
    old_running = ray_folder(tmp_path, "oldsuper", locked_once=False, age_s=LEGACY_MIN_AGE_S + 3600)
    start(processes, SLEEPER, old_running, f"{old_running}/supervisor.json")  # an older server's supervisor
    time.sleep(0.5)
    assert sweep_ray_folders(tmp_path) == [old]
    assert recent.exists() and old_running.exists()


def test_symlinks_other_names_and_other_users_folders_are_never_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = ray_folder(tmp_path / "elsewhere", "target01")  # what looks like a killed server's folder
    link = tmp_path / f"{RAY_TEMP_PREFIX}link0001"
    link.symlink_to(elsewhere)
    (tmp_path / f"{RAY_TEMP_PREFIX}afile001").write_text("not a folder\n")
    other_name = tmp_path / "imgserve-metrics-abc"
    other_name.mkdir()
    (other_name / LOCK_FILE).touch()
    assert sweep_ray_folders(tmp_path) == []
    assert link.is_symlink() and (elsewhere / "session_1" / "logs" / "raylet.out").exists()
    assert other_name.exists() and (tmp_path / f"{RAY_TEMP_PREFIX}afile001").exists()
    not_mine = ray_folder(tmp_path, "notmine1")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(not_mine).st_uid + 1)
    assert sweep_ray_folders(tmp_path) == [] and not_mine.exists()


def test_a_sweep_that_cannot_remove_or_read_says_so_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = ray_folder(tmp_path, "stuck001")
    monkeypatch.setattr(ray_folders, "remove_ray_temp_dir", lambda folder: False)
    with caplog.at_level(logging.WARNING, logger="imgserve.server"):
        assert sweep_ray_folders(tmp_path) == []
        assert sweep_ray_folders(tmp_path / "missing") == []
    assert stuck.exists()
    assert f"could not remove {stuck}" in caplog.text
    assert f"could not sweep the Ray folders in {tmp_path / 'missing'}" in caplog.text
