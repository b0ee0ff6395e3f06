"""What `imgserve serve` becomes once the application runs on a Ray it started: a small process without Ray in it.

The process that calls `ray.init` holds Ray's core worker and Ray's Python modules (~120 MB) for its whole life,
though after the deploy it only waits for a signal. So once Serve reports the application RUNNING, `imgserve
serve` replaces itself (`os.execv`, same PID) with this module:

- Ray's GCS and raylet stay its children (they were started by this PID, and Ray's fate sharing, a parent-death
  signal, still ends them if this process is killed);
- it prints the workers' output (`WorkerLogFollower`, from where the driver's follower stopped) and waits for
  SIGINT/SIGTERM/SIGHUP, or for the raylet or GCS to exit;
- then it shuts Serve down from a short-lived driver (`python -m serving.ray_supervisor shutdown-serve ADDRESS`,
  what `serve shutdown` does) and stops the Ray processes it started as `ray.shutdown()` does: the raylet, then
  the GCS, then whatever of their tree is left.

The Serve controller and replicas are detached actors: the deploying job ending does not stop them (as with
`serve deploy`). `IMGSERVE_LEAN_RAY=0`, or a Ray joined with RAY_ADDRESS, keeps the driver instead.
BENCHMARKS.md "Memory (issue #19)" has the figures.

The server's Ray folder (/tmp/imgserve-ray-XXXX) is looked after here too: made for the start (`new_ray_folder`,
which first sweeps the folders of servers no longer running, holds the folder's lock for the server's whole life
and cleans up after a start that fails), cleaned up at the stop by whichever process stops Ray
(`clean_up_ray_folder`). serving.ray_folders says which folders the sweep removes.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from serving.local_ray import RAY_TEMP_PREFIX, SignalFlag, WorkerLogFollower, remove_ray_temp_dir, seconds_from_env
from serving.ray_folders import (
    RAY_FOLDER_BASE,
    hold_ray_folder,
    mark_kept_for_logs,
    ray_folder_users,
    sweep_ray_folders,
)


def serve_shutdown_timeout_s() -> float:
    """IMGSERVE_SHUTDOWN_TIMEOUT_S (default 90): how long Serve drains replicas gracefully; Ray is stopped after
    this regardless. 0 or less turned the drain off: refused (`imgserve serve` checks it before starting)."""
    return seconds_from_env("IMGSERVE_SHUTDOWN_TIMEOUT_S", 90)


RAY_STOP_GRACE_S = 1.0  # the raylet and the GCS: SIGTERM, then SIGKILL after this (as ray.shutdown does)
RAY_STOP_TIMEOUT_S = 10.0  # then agents and workers left: SIGTERM, then SIGKILL after this
TOKEN_FILE = "ray_auth_token"  # the Ray token `imgserve serve` generates, in its Ray folder


@dataclass
class SupervisorState:
    """What the driver hands over through `execv`: written to a JSON file in Ray's temp folder."""

    gcs_address: str
    logs_dir: str
    log_offsets: dict[str, dict[str, object]] = field(default_factory=dict)  # WorkerLogFollower.snapshot()
    token_file: str = ""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> "SupervisorState":
        return cls(**json.loads(path.read_text()))


# SIGHUP too (the terminal closing, `kill -HUP`): its default action ends the process without stopping Ray.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def exec_supervisor(state: SupervisorState, state_path: Path, stop: SignalFlag) -> None:
    """Replace this process with the supervisor; returns only if `stop` was set first. Output is flushed first
    (execv drops buffers). The STOP_SIGNALS are blocked from the last look at `stop` to the supervisor's handlers:
    a blocked signal stays pending across execv and reaches them, so a Ctrl-C during the hand-over is not lost."""
    state.write(state_path)
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if stop.is_set():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        state_path.unlink(missing_ok=True)
        return
    try:
        os.execv(sys.executable, [sys.executable, "-m", "serving.ray_supervisor", "supervise", str(state_path)])
    finally:  # execv failed
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def hand_over_to_supervisor(
    follower: WorkerLogFollower, logs_done: threading.Event, temp_dir: Path, stop: SignalFlag
) -> None:
    """Replace this process (Ray's driver, ~120 MB) with the supervisor (~15 MB), which keeps Ray's processes as its
    children, prints the workers' output on from where `follower` stopped, and stops Serve and Ray on
    SIGINT/SIGTERM/SIGHUP. Returns only if a stop was asked for meanwhile (the caller then stops as before)."""
    import ray

    logs_done.set()
    follower.join(timeout=5)
    token = temp_dir / TOKEN_FILE
    state = SupervisorState(
        gcs_address=ray.get_runtime_context().gcs_address,
        logs_dir=str(follower.directory),
        log_offsets=follower.snapshot(),
        token_file=str(token) if token.exists() else "",
    )
    exec_supervisor(state, temp_dir / "supervisor.json", stop)


def ray_died(ray_pids: frozenset[int] | None = None) -> str | None:
    """Reap exited children: which of Ray's (`ray_pids`, the GCS and raylet this process inherited; None: any
    child) ended, else None. Other children are reaped and let go: as PID 1 of a container, orphans of the whole
    tree become this process's children, and one of them ending is no reason to stop the server."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return "every Ray process"
        if pid == 0:
            return None
        if ray_pids is None or pid in ray_pids:
            return f"Ray process {pid} (status {status})"


def shutdown_serve_in_new_driver(gcs_address: str, timeout_s: float | None = None) -> bool:
    """`serve.shutdown()` from a fresh driver; False when it failed or timed out (Ray is stopped regardless)."""
    timeout_s = serve_shutdown_timeout_s() if timeout_s is None else timeout_s
    command = [sys.executable, "-m", "serving.ray_supervisor", "shutdown-serve", gcs_address]
    try:
        return subprocess.run(command, timeout=timeout_s, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        print(f"imgserve: Serve did not shut down within {timeout_s:.0f}s; stopping Ray", flush=True)
        return False


def stop_ray_processes(grace_s: float = RAY_STOP_GRACE_S, timeout_s: float = RAY_STOP_TIMEOUT_S) -> int:
    """Stop the Ray this process started, as `ray.shutdown()` does: its children, the raylet first and then the
    GCS, each SIGTERM then SIGKILL after `grace_s`; then any process left under them (agents, workers: they end
    with the raylet) SIGTERM, and SIGKILL after `timeout_s`. The number of processes that had to be killed."""
    me = psutil.Process()
    tree = me.children(recursive=True)
    killed = 0
    for child in sorted(me.children(), key=lambda p: 0 if "raylet" in _name(p) else 1):
        try:
            child.terminate()
            child.wait(timeout=grace_s)
        except psutil.TimeoutExpired:
            child.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=0)
    for process in alive:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=timeout_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return killed + len(alive)


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:  # gone already
        return ""


def supervise(state_path: Path) -> int:
    state = SupervisorState.read(state_path)
    stop = SignalFlag()
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop.request)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by exec_supervisor; a pending one lands now
    logs_done = threading.Event()
    follower = WorkerLogFollower(Path(state.logs_dir), logs_done)
    follower.resume(state.log_offsets)
    follower.start()
    status = 0
    ray_pids = frozenset(child.pid for child in psutil.Process().children())  # the GCS and raylet, from the driver
    try:
        while not stop.is_set():
            died = ray_died(ray_pids)
            if died is not None:
                print(f"imgserve: {died} exited: stopping", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.5)
    finally:
        print("imgserve: shutting down", flush=True)
        started = time.monotonic()
        try:
            if status == 0 and shutdown_serve_in_new_driver(state.gcs_address):
                print(f"imgserve: Serve stopped in {time.monotonic() - started:.1f}s", flush=True)
        finally:
            started = time.monotonic()
            killed = stop_ray_processes()
            print(f"imgserve: Ray stopped in {time.monotonic() - started:.1f}s ({killed} killed)", flush=True)
            logs_done.set()
            follower.join(timeout=2)
            if state.token_file:
                Path(state.token_file).unlink(missing_ok=True)  # the generated Ray token: gone with Ray
            state_path.unlink(missing_ok=True)
            clean_stop = status == 0 and not follower.is_alive() and not psutil.Process().children(recursive=True)
            clean_up_ray_folder(state_path.parent, clean_stop)
    return status


def clean_up_ray_folder(
    folder: Path, clean_stop: bool, own_ray: bool = True, token: Path | None = None, wait_s: float = RAY_STOP_TIMEOUT_S
) -> bool:
    """The server's Ray folder once its Ray was stopped (here, or by `ray.shutdown()` in a driver that kept Ray:
    `IMGSERVE_LEAN_RAY=0`, a stop before the hand-over). The generated Ray `token` is removed in any case (gone with
    Ray). The folder is removed after a stop that was asked for, or at any stop when no Ray was started in it
    (`own_ray` False: a server joining a cluster with RAY_ADDRESS, whose logs stay in the cluster's own folder), once
    no process names it (Ray's last processes are given `wait_s` to exit). Kept, and named, after Ray ended on its
    own (its logs say why: marked kept for its logs, which the sweep at later starts honours for a while) or while
    something of Ray's still runs in it (the next start's sweep removes it once nothing does). Whether it is gone."""
    if token is not None:
        token.unlink(missing_ok=True)
    if clean_stop or not own_ray:
        _, running = psutil.wait_procs(ray_folder_users(folder), timeout=wait_s)
        if not running and remove_ray_temp_dir(folder):
            return True
    if folder.exists():
        if not clean_stop and own_ray:
            mark_kept_for_logs(folder)
        print(f"imgserve: Ray's logs are kept in {folder}", file=sys.stderr, flush=True)
        return False
    return True


@contextmanager
def new_ray_folder(own_ray: bool, base: Path | None = None) -> Iterator[Path]:
    """Make the server's Ray folder (/tmp/imgserve-ray-XXXX: the Prometheus multiprocess folder, the generated Ray
    token, the session folder of a Ray started here) for the start in the with-block, which ends once Ray runs and
    the server's stop (`clean_up_ray_folder` in the driver or the supervisor) takes the folder over. A start that
    raises in the block (`ray.init` failing: a RAY_ADDRESS that cannot be reached, a port in use; a step before it)
    stops whatever Ray it started (`ray.shutdown()`, nothing when none) and removes the folder, unless a Ray of our
    own (`own_ray`) made its session folder there: the GCS or raylet that did not come up says why in its logs, so
    the folder is kept and named, as after a Ray that ended on its own. With RAY_ADDRESS no Ray runs in the folder
    (removed), and a Ctrl-C during the start is a stop asked for (removed). Made in `base` (RAY_FOLDER_BASE, /tmp),
    after sweeping there the folders of servers no longer running; its lock (`hold_ray_folder`) stays held until
    this process ends (across the hand-over to the supervisor), or until a start that fails here has cleaned up."""
    base = RAY_FOLDER_BASE if base is None else base
    sweep_ray_folders(base)
    folder = Path(tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX, dir=base))
    lock_fd = hold_ray_folder(folder)
    try:
        yield folder
    except BaseException as exc:
        try:
            if "ray" in sys.modules:  # imported: ray.init may have started Ray's processes before it raised
                sys.modules["ray"].shutdown()
        finally:
            ray_wrote_logs = own_ray and any(folder.glob("session_*"))
            clean_stop = isinstance(exc, KeyboardInterrupt) or not ray_wrote_logs
            try:
                clean_up_ray_folder(folder, clean_stop, own_ray=own_ray, token=folder / TOKEN_FILE)
            finally:
                if lock_fd is not None:
                    os.close(lock_fd)  # no server runs from it: a later start may sweep what was kept
        raise


def shutdown_serve_main(gcs_address: str) -> int:
    import ray

    from serving.serve_control import shutdown_serve

    ray.init(address=gcs_address, namespace="serve", logging_level=logging.WARNING, log_to_driver=False)
    shutdown_serve()
    ray.shutdown()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "supervise":
        return supervise(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "shutdown-serve":
        return shutdown_serve_main(argv[1])
    print("usage: python -m serving.ray_supervisor supervise STATE_FILE | shutdown-serve GCS_ADDRESS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
