"""Which Ray folders (/tmp/imgserve-ray-XXXX) are still in use, and the sweep of the others at each start.

A clean stop removes the server's folder (serving.ray_supervisor `clean_up_ray_folder`); a server killed outright
(SIGKILL, the OOM killer, a machine crash) leaves it behind, and so does a start or a Ray that failed, on purpose,
for its logs. `sweep_ray_folders` runs at each start of `imgserve serve`, before it makes its own folder, and
removes the folders of servers that no longer run:

- In use: the process that made the folder holds an exclusive `flock` on its `server.lock` for as long as the
  server runs. The lock's descriptor is inheritable, so the `os.execv` hand-over to the supervisor (same PID) keeps
  it; the lock file appears already locked (made under another name, then renamed), so no sweep sees it unlocked
  while its server starts. Ray's own processes never hold it (Ray starts them with its descriptors closed), but a
  killed owner's GCS and raylet die with it (Ray's fate sharing: PR_SET_PDEATHSIG) and its agents and workers a few
  seconds later, when they see their raylet gone: until then they name the folder in their command lines, and a
  folder any process names, works in (cwd) or has a file open in is in use as well.
- Kept for its logs (`mark_kept_for_logs`: a start that failed after Ray wrote its session there, a Ray that ended on
  its own): the KEEP_LOGS_NEWEST (5) newest such folders stay for KEEP_LOGS_MAX_AGE_S (7 days); older ones, and any
  beyond the five newest, are removed.
- Made by an older imgserve (no `server.lock`): removed once older than LEGACY_MIN_AGE_S (1 day, by the folder's
  mtime) and not in use by the test above.
- Otherwise (its server was killed, or its stop could not remove it while Ray's last process ran): removed.

Only directories in `base` named RAY_TEMP_PREFIX* and owned by this user are considered; symlinks are never followed
nor removed. A folder that cannot be removed is logged and left: the start never fails because of the sweep.
"""

import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fcntl import LOCK_EX, LOCK_NB, flock
from pathlib import Path

import psutil

from serving.local_ray import RAY_TEMP_PREFIX, remove_ray_temp_dir

logger = logging.getLogger("imgserve.server")

RAY_FOLDER_BASE = Path("/tmp")  # not $TMPDIR: Ray's socket paths in the folder must stay short (AF_UNIX limit)
LOCK_FILE = "server.lock"  # flock'ed by the server that made the folder while it runs
KEPT_FOR_LOGS_FILE = "kept_for_logs"  # written when a stop or a failed start keeps the folder for its logs
KEEP_LOGS_NEWEST = 5
KEEP_LOGS_MAX_AGE_S = 7 * 24 * 3600.0
LEGACY_MIN_AGE_S = 24 * 3600.0


def hold_ray_folder(folder: Path) -> int | None:
    """Take the lock that says `folder`'s server runs; the descriptor, to keep open for the server's whole life (it
    survives `os.execv`; closed, or the process gone, the folder is free to sweep). None, logged, when the lock
    cannot be taken: the folder is then treated as an older imgserve's (kept while in use, and for a day)."""
    pending = folder / f".{LOCK_FILE}.{os.getpid()}"
    try:
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        logger.warning("could not make the lock file of %s: %s", folder, error)
        return None
    try:
        flock(fd, LOCK_EX | LOCK_NB)
        os.set_inheritable(fd, True)
        os.rename(pending, folder / LOCK_FILE)  # visible only once locked
    except OSError as error:
        os.close(fd)
        pending.unlink(missing_ok=True)
        logger.warning("could not lock %s: %s", folder, error)
        return None
    return fd


def mark_kept_for_logs(folder: Path) -> None:
    """Record that `folder` is kept for its logs: the sweep then keeps it as its policy says (module docstring)."""
    try:
        (folder / KEPT_FOR_LOGS_FILE).write_text(f"kept for Ray's logs at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    except OSError as error:
        logger.warning("could not mark %s as kept for its logs: %s", folder, error)


def ray_folder_users(folder: Path) -> list[psutil.Process]:
    """The processes, other than this one, whose command line names `folder`: Ray starts its GCS, raylet, agents and
    workers with paths in its session folder (--temp-dir, --session-dir, --log_dir), so while one runs, a Ray still
    uses the folder. (The supervisor's own command line names its state file there.)"""
    path = str(folder)
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if process.pid != os.getpid()
        and any(arg.endswith(path) or f"{path}/" in arg for arg in process.info["cmdline"] or ())
    ]


def folder_names_in_use(base: Path) -> set[str]:
    """The names of `base`/RAY_TEMP_PREFIX* folders that any process other than this one names in its command line,
    works in or has a file open in (one pass over the processes; those not readable count by their command line)."""
    pattern = re.compile(re.escape(f"{base}/{RAY_TEMP_PREFIX}") + r"[^/\s'\";:,=]+")
    names: set[str] = set()
    for process in psutil.process_iter(["cmdline", "cwd", "open_files"]):
        if process.pid == os.getpid():
            continue
        info = process.info
        texts = [*(info["cmdline"] or ()), info["cwd"] or "", *(f.path for f in info["open_files"] or ())]
        for text in texts:
            names.update(Path(match).name for match in pattern.findall(text))
    return names


@dataclass
class FoundFolder:
    path: Path
    mtime: float  # the folder's own; for one kept for its logs, when it was marked
    state: str  # "running", "kept_for_logs", "ended" (its server is gone), "legacy" (no lock file)


def folder_state(folder: Path) -> str:
    """Whether `folder`'s server runs (its lock is held), and if not what the folder was left as."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return "legacy"
    except OSError:  # a symlink, not ours: leave it
        return "running"
    try:
        flock(fd, LOCK_EX | LOCK_NB)
    except BlockingIOError:
        return "running"
    finally:
        os.close(fd)
    return "kept_for_logs" if (folder / KEPT_FOR_LOGS_FILE).is_file() else "ended"


def found_folders(base: Path) -> list[FoundFolder]:
    """The RAY_TEMP_PREFIX* directories in `base` that this user owns (not through a symlink), with their state."""
    found = []
    uid = os.getuid()
    with os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(RAY_TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            try:
                stat = entry.stat(follow_symlinks=False)
                if stat.st_uid != uid:
                    continue
                state = folder_state(path)
                mtime = (path / KEPT_FOR_LOGS_FILE).lstat().st_mtime if state == "kept_for_logs" else stat.st_mtime
            except OSError as error:  # gone meanwhile (another start's sweep), unreadable: left alone
                logger.warning("could not check %s: %s", path, error)
                continue
            found.append(FoundFolder(path, mtime, state))
    return found


def folders_to_remove(found: Iterable[FoundFolder], now: float) -> list[FoundFolder]:
    """The policy of the module docstring, before the check that no process uses them."""
    kept_for_logs = sorted((f for f in found if f.state == "kept_for_logs"), key=lambda f: f.mtime, reverse=True)
    expired_logs = [
        f for rank, f in enumerate(kept_for_logs) if rank >= KEEP_LOGS_NEWEST or now - f.mtime > KEEP_LOGS_MAX_AGE_S
    ]
    ended = [f for f in found if f.state == "ended"]
    old_legacy = [f for f in found if f.state == "legacy" and now - f.mtime > LEGACY_MIN_AGE_S]
    return ended + expired_logs + old_legacy


def sweep_ray_folders(base: Path = RAY_FOLDER_BASE, now: float | None = None) -> list[Path]:
    """Remove the Ray folders in `base` of servers that no longer run (module docstring); the folders removed.
    Never raises: what goes wrong is logged."""
    removed: list[Path] = []
    try:
        candidates = folders_to_remove(found_folders(base), time.time() if now is None else now)
        in_use = folder_names_in_use(base) if candidates else set()
        for folder in candidates:
            if folder.path.name in in_use or folder_state(folder.path) == "running":
                continue
            if remove_ray_temp_dir(folder.path):
                removed.append(folder.path)
            else:
                logger.warning("could not remove %s, the Ray folder of a server no longer running", folder.path)
    except Exception as error:  # noqa: BLE001 - a sweep that fails must not stop the start
        logger.warning("could not sweep the Ray folders in %s: %s", base, error)
    if removed:
        print(
            f"imgserve: removed {len(removed)} Ray folder(s) of servers no longer running ({base}/{RAY_TEMP_PREFIX}*)",
            file=sys.stderr,
            flush=True,
        )
    return removed
