"""The single-machine Ray under `imgserve serve`, without the Ray processes one machine never uses.

`ray.init` on one machine starts, beside the GCS, the raylet and its two agents (which the raylet needs):

- the autoscaler monitor (~85 MB): it scales *nodes* from a cluster config; there is none here (Serve's replica
  autoscaling lives in the Serve controller and is unaffected);
- the dashboard head (~120 MB): with `include_dashboard=False` it loads only the usage-stats module;
- the log monitor (~80 MB): it ships workers' stdout/stderr to the driver; `WorkerLogFollower` below does that
  job in a thread of the driver instead;
- prestarted idle workers (~80 MB each) for tasks this server never submits: actors start their own.

In this process and every Ray worker (the worker setup hook), `block_unused_modules` makes pandas and pyarrow
unimportable: Ray Serve imports pandas in each of its processes only to register a DataFrame encoder (for
deployments that return DataFrames; imgserve's return none), and Ray's serializer imports pyarrow on the first
remote call only to register Ray Data's Arrow serializers (no Ray Data runs in the server; `imgserve collection
analyze` starts its own Ray). About 75 + 27 MB per process: the controller, every replica, this one.

With Serve kept out of the `imgserve serve` process (serving.serve_control), the idle server goes from 1.56 to
0.87 GB (BENCHMARKS.md "Memory (issue #19)"). Once the application runs, `imgserve serve` also replaces itself
(Ray's driver, ~120 MB) with `serving.ray_supervisor` (~15 MB), which keeps Ray's processes as its children.
`IMGSERVE_LEAN_RAY=0` keeps Ray's defaults (for a `ray status` that reads the autoscaler's view, for instance). A
server joining an existing cluster (`RAY_ADDRESS`) changes nothing there.
"""

import logging
import math
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipelines.switches import env_switch

logger = logging.getLogger("imgserve.server")

LEAN_ENV = "IMGSERVE_LEAN_RAY"
# ray.init(_system_config=...): no pool of idle workers waiting for tasks when the driver connects.
LEAN_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}
WORKER_LOG = re.compile(r"^worker-[0-9a-f]+-[0-9a-f]+-(?P<pid>\d+)\.(?P<stream>out|err)$")
# Marker lines Ray writes into a worker's log files (ray_constants.LOG_PREFIX_*): metadata, not output.
ACTOR_NAME = ":actor_name:"
TASK_NAME = ":task_name:"
MARKERS = (":job_id:", ":event_summary:", ":info_message:")
MAX_READ = 1 << 20
# The folder `imgserve serve` makes for a Ray of its own (serving.ray_supervisor new_ray_folder, in /tmp): Ray's
# session (logs, sockets), the generated Ray token, the supervisor's state file and the server's lock; the folders
# of servers no longer running are swept at each start (serving.ray_folders).
RAY_TEMP_PREFIX = "imgserve-ray-"


def remove_ray_temp_dir(folder: Path) -> bool:
    """Remove the server's Ray folder `folder` once its Ray has stopped (never while Ray runs: its sockets and logs
    are in use). A folder not named as the server names it is left alone. Whether it is gone."""
    if not folder.name.startswith(RAY_TEMP_PREFIX):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def seconds_from_env(name: str, default: float) -> float:
    """The seconds > 0 in environment variable `name` (`default` when unset); ValueError naming the variable for
    anything else (`imgserve serve` checks its timeouts before starting Ray)."""
    text = os.environ.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={text!r}: expected seconds > 0")
    return value


def lean_ray_enabled(env: dict[str, str] | None = None) -> bool:
    """IMGSERVE_LEAN_RAY: on by default (`pipelines.switches.env_switch`'s words; ValueError naming it for anything
    else: `imgserve serve` refuses to start, where `maybe` was taken as on)."""
    return env_switch(LEAN_ENV, True, env)


EVENT_LOOP_ENV = "IMGSERVE_EVENT_LOOP"


def event_loop_choice(env: dict[str, str] | None = None) -> str:
    """`IMGSERVE_EVENT_LOOP`: "uvloop" (default) or "asyncio"; ValueError for anything else (`imgserve serve`
    refuses to start with it rather than failing in every Ray worker's setup hook)."""
    choice = (os.environ if env is None else env).get(EVENT_LOOP_ENV, "uvloop").strip().lower()
    if choice not in ("uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV} must be uvloop or asyncio, not {choice!r}")
    return choice


def install_event_loop_policy(env: dict[str, str] | None = None) -> str:
    """Make the event loops this process creates from now on uvloop's (`IMGSERVE_EVENT_LOOP=uvloop`, the default)
    or asyncio's own (`asyncio`); returns which. Called in every Ray worker of `imgserve serve`'s local Ray (the
    setup hook), before Ray Serve creates a replica's loop: the Ingress replica's HTTP and gRPC listeners, routes
    and batch queues all run on that one loop, and uvloop's costs less per request (HTTP web mix at 32 clients,
    alternating A/B: 239-244 against 225-226 img/s, BENCHMARKS.md)."""
    choice = event_loop_choice(env)
    import asyncio

    if choice == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)
    return choice


UNUSED_MODULES = ("pandas", "pyarrow")


def block_unused_modules() -> list[str]:
    """Make `import pandas` / `import pyarrow` raise ModuleNotFoundError in this process (both Ray Serve and Ray
    take their no-pandas / no-pyarrow path); a module already imported is left alone. The names blocked."""
    blocked = []
    for name in UNUSED_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment] - the import system's "not importable" marker
            blocked.append(name)
    return blocked


def trim_head_processes() -> list[str]:
    """Stop the head processes listed above in the Ray this process started; the names of those stopped."""
    import ray

    node = ray._private.worker._global_node  # noqa: SLF001 - the node object ray.init started
    if node is None or not node.head:
        return []
    stopped = []
    for name, kill in (
        ("autoscaler monitor", node.kill_monitor),
        ("dashboard head", node.kill_dashboard),
        ("log monitor", node.kill_log_monitor),
    ):
        try:
            kill(check_alive=False)
            stopped.append(name)
        except Exception as error:  # noqa: BLE001 - a process that cannot be stopped only costs memory
            logger.warning("could not stop Ray's %s: %s", name, error)
    return stopped


def logs_dir() -> Path | None:
    import ray

    node = ray._private.worker._global_node  # noqa: SLF001
    return Path(node.get_logs_dir_path()) if node is not None else None


class SignalFlag:
    """Set by a stop-signal handler, read by the main loop. A plain attribute, not a `threading.Event`: a handler
    runs on the main thread between two bytecodes, and one calling `Event.set` while the main thread is inside
    that event's `wait` or `set` (a second Ctrl-C, or `pkill` reaching the process twice) waits for a lock the
    main thread already holds, and the server hangs for good."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, *_: object) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested


@dataclass
class FollowedFile:
    pid: str
    out: TextIO
    offset: int = 0
    name: str = ""
    partial: str = ""


class WorkerLogFollower(threading.Thread):
    """Prints what Ray workers write to stdout/stderr, as Ray's log monitor does: `(ActorName pid=N) line`.

    Ray redirects each worker's stdout and stderr to `logs/worker-<id>-<job>-<pid>.{out,err}`; this thread reads
    what is new in each every `interval` seconds and writes whole lines to this process's stdout or stderr."""

    def __init__(self, directory: Path, stop: threading.Event, interval: float = 0.25) -> None:
        super().__init__(name="imgserve-worker-logs", daemon=True)
        self.directory = directory
        self.stop_event = stop
        self.interval = interval
        self.files: dict[str, FollowedFile] = {}  # by file name

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Where each file was read up to (and the actor named in it): `resume` continues from there in another
        process (serving.ray_supervisor)."""
        return {name: {"offset": f.offset, "name": f.name, "partial": f.partial} for name, f in self.files.items()}

    def resume(self, snapshot: dict[str, dict[str, object]]) -> None:
        for file_name, state in snapshot.items():
            match = WORKER_LOG.match(file_name)
            if match is None:
                continue
            stream = sys.stdout if match["stream"] == "out" else sys.stderr
            self.files[file_name] = FollowedFile(
                pid=match["pid"],
                out=stream,
                offset=int(state.get("offset", 0)),  # type: ignore[call-overload]
                name=str(state.get("name", "")),
                partial=str(state.get("partial", "")),
            )

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.poll()
        self.poll()

    def poll(self) -> None:
        """Read the files that grew since the last poll; one directory scan, no open for a file that did not."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            followed = self.files.get(entry.name)
            if followed is None:
                match = WORKER_LOG.match(entry.name)
                if match is None:
                    continue
                stream = sys.stdout if match["stream"] == "out" else sys.stderr
                followed = self.files[entry.name] = FollowedFile(pid=match["pid"], out=stream)
            try:
                size = entry.stat().st_size
            except OSError:
                continue
            if size != followed.offset:
                self.read_new(Path(entry.path), followed, size)

    def read_new(self, path: Path, followed: FollowedFile, size: int) -> None:
        if size < followed.offset:  # truncated: start over
            followed.offset, followed.partial = 0, ""
        try:
            with path.open("rb") as handle:
                handle.seek(followed.offset)
                data = handle.read(MAX_READ)
        except OSError:
            return
        if not data:
            return
        followed.offset += len(data)
        text = followed.partial + data.decode("utf-8", errors="replace")
        *lines, followed.partial = text.split("\n")
        for line in lines:
            self.emit(followed, line)
        try:
            followed.out.flush()
        except (OSError, ValueError):
            pass

    def emit(self, followed: FollowedFile, line: str) -> None:
        if line.startswith(ACTOR_NAME):
            followed.name = line[len(ACTOR_NAME) :].strip()
            return
        if line.startswith(TASK_NAME):
            followed.name = followed.name or line[len(TASK_NAME) :].strip()
            return
        if line.startswith(MARKERS) or not line.strip():
            return
        prefix = f"({followed.name} pid={followed.pid})" if followed.name else f"(pid={followed.pid})"
        try:
            followed.out.write(f"{prefix} {line}\n")
        except (OSError, ValueError):
            pass
