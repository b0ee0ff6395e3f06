"""What `imgserve serve` becomes after the deploy (serving.ray_supervisor): the hand-over of the worker log
follower, the stop of the processes under it, and the exec'd process stopping on a signal or when Ray exits. A
real server going through the hand-over is every integration test's; the memory it saves is measured by `make
bench` (BENCHMARKS.md "Memory (issue #19)")."""

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from serving.local_ray import WorkerLogFollower
from serving.ray_supervisor import SupervisorState


def poll_into(follower: WorkerLogFollower) -> str:
    """What one poll prints to stderr (the follower writes to the stream `sys.stderr` is when it meets a file)."""
    return follower_output(follower, lambda: None)


def follower_output(follower: WorkerLogFollower, before_poll) -> str:  # noqa: ANN001
    real = sys.stderr
    sys.stderr = captured = io.StringIO()
    try:
        before_poll()
        follower.poll()
    finally:
        sys.stderr = real
    return captured.getvalue()


def test_a_resumed_follower_prints_only_what_is_new_with_the_actor_name(tmp_path: Path) -> None:
    log = tmp_path / "worker-0a1b-01000000-4242.err"
    log.write_text(":actor_name:ServeReplica:imgserve:Ingress\nbefore the hand-over\nhalf a li")
    first = WorkerLogFollower(tmp_path, threading.Event())
    prefix = "(ServeReplica:imgserve:Ingress pid=4242)"
    assert poll_into(first) == f"{prefix} before the hand-over\n"
    SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(tmp_path), log_offsets=first.snapshot()).write(
        tmp_path / "state.json"
    )
    with log.open("a") as handle:
        handle.write("ne\nafter the hand-over\n")

    second = WorkerLogFollower(tmp_path, threading.Event())
    offsets = SupervisorState.read(tmp_path / "state.json").log_offsets
    printed = follower_output(second, lambda: second.resume(offsets))
    assert printed == f"{prefix} half a line\n{prefix} after the hand-over\n"


# Run in a process of its own: stop_ray_processes ends every process under its caller, never the test runner's.
# Under it: a child that exits on SIGTERM, and a grandchild that ignores SIGTERM (like a process stuck in a
# syscall: only SIGKILL ends it).
STOP_TREE = r"""
import subprocess, sys
import psutil
from serving.ray_supervisor import stop_ray_processes
stubborn = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
)
parent = (
    "import signal, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
child = subprocess.Popen([sys.executable, "-c", parent, stubborn], stdout=subprocess.PIPE)
child.stdout.readline()
grandchild = psutil.Process(child.pid).children()[0]
killed = stop_ray_processes(grace_s=1.0, timeout_s=1.0)
print(child.poll(), killed, grandchild.is_running() and grandchild.status() != psutil.STATUS_ZOMBIE)
"""


def test_stop_ends_every_process_under_it_and_kills_those_ignoring_sigterm() -> None:
    done = subprocess.run([sys.executable, "-c", STOP_TREE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # the child ended by its own SIGTERM handler (status 0, not killed); the grandchild was killed, and counted
    assert done.stdout.split() == ["0", "1", "False"]


def launch_supervisor(state: Path, child_seconds: float) -> subprocess.Popen[str]:
    """The supervisor exec'd by a process that first started one child standing in for the raylet (a sleep)."""
    launcher = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({child_seconds})'])\n"
        f"os.execv(sys.executable, [sys.executable, '-m', 'serving.ray_supervisor', 'supervise', {str(state)!r}])\n"
    )
    env = {**os.environ, "IMGSERVE_SHUTDOWN_TIMEOUT_S": "10"}
    return subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def start_supervisor(state: Path, child_seconds: float) -> tuple[subprocess.Popen[str], psutil.Process]:
    """`launch_supervisor`, once the supervisor runs with its child."""
    process = launch_supervisor(state, child_seconds)
    deadline = time.monotonic() + 30
    while True:
        me = psutil.Process(process.pid)
        children = me.children()
        if children and "ray_supervisor" in " ".join(me.cmdline()):
            return process, children[0]
        assert time.monotonic() < deadline, "the supervisor did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP])
def test_supervisor_stops_its_children_on_a_stop_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    """SIGTERM (and SIGHUP: the terminal closing, `kill -HUP`, some process managers' stop, which used to end the
    supervisor by its default action, leaving Ray, the token and the state file behind): the child is stopped and
    the supervisor exits 0 (the Serve shutdown driver finds no Ray at the GCS address and is given up after
    IMGSERVE_SHUTDOWN_TIMEOUT_S); the state file and the token are removed."""
    token = tmp_path / "ray_auth_token"
    token.write_text("secret")
    state = tmp_path / "supervisor.json"
    SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(tmp_path), token_file=str(token)).write(state)
    process, sleeper = start_supervisor(state, 600)
    try:
        time.sleep(1.0)  # its signal handlers are set
        os.kill(process.pid, stop_signal)
        process.wait(timeout=120)
        child_left = sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            process.kill()
        if sleeper.is_running():  # left behind (it holds the output pipes) when the supervisor died uncleanly
            sleeper.kill()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert not child_left
    assert "imgserve: shutting down" in out and "imgserve: Ray stopped" in out
    assert not state.exists() and not token.exists()


def test_supervisor_stops_when_a_ray_process_exits(tmp_path: Path) -> None:
    """The raylet or GCS exiting on its own ends the server with status 1, saying which process it was."""
    state = tmp_path / "supervisor.json"
    SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(tmp_path)).write(state)
    process, sleeper = start_supervisor(state, 2)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert f"Ray process {sleeper.pid} (status 0) exited: stopping" in err
    assert "imgserve: shutting down" in out


def test_a_stop_asked_for_during_the_hand_over_is_not_lost(tmp_path: Path) -> None:
    """A SIGTERM that arrives while exec_supervisor has the stop signals blocked stays pending across execv: the
    supervisor stops on it as soon as its handlers are in place (without the unblock it would run on)."""
    state = tmp_path / "supervisor.json"
    SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(tmp_path)).write(state)
    launcher = (
        "import os, signal, subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        f"os.execv(sys.executable, [sys.executable, '-m', 'serving.ray_supervisor', 'supervise', {str(state)!r}])\n"
    )
    env = {**os.environ, "IMGSERVE_SHUTDOWN_TIMEOUT_S": "10"}
    done = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "imgserve: Ray stopped" in done.stdout


def test_no_hand_over_once_a_stop_was_asked_for(tmp_path: Path) -> None:
    """exec_supervisor returns (the driver then stops Ray itself) and leaves no state file behind."""
    from serving.local_ray import SignalFlag
    from serving.ray_supervisor import exec_supervisor

    stop = SignalFlag()
    stop.request()
    state = tmp_path / "supervisor.json"
    exec_supervisor(SupervisorState(gcs_address="127.0.0.1:1", logs_dir=str(tmp_path)), state, stop)
    assert not state.exists()
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # unblocked again


def test_a_child_that_is_not_rays_ending_does_not_stop_the_server() -> None:
    """In a container the supervisor is PID 1: orphans of the whole tree become its children, and the first one to
    end stopped the server ("Ray process 5 exited: stopping")."""
    import subprocess
    import sys
    import time

    from serving.ray_supervisor import ray_died

    ray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        subprocess.Popen([sys.executable, "-c", "pass"])  # not Ray's: ends at once and is not waited for here
        time.sleep(1.0)
        assert ray_died(frozenset({ray.pid})) is None  # reaped and let go
        ray.kill()
        time.sleep(0.5)
        assert f"Ray process {ray.pid}" in (ray_died(frozenset({ray.pid})) or "")
    finally:
        ray.kill()
