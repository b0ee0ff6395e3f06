"""CPU seconds and peak RSS of a server's whole process tree (Ray's daemons and workers included).

RSS summed over processes counts a shared page once per process that maps it: each of imgserve's Ray processes
maps the same ~50 MB of library code (libraylet, grpc, numpy), which the sum counts five or six times. At every new
peak of that sum the monitor also reads the tree's PSS (proportional set size, Linux `smaps_rollup`: a shared page
split between the processes that map it), so a report can give the memory the tree really holds at that moment
beside the RSS sum. Only at a new peak: reading PSS walks every page table, too slow for every sample.
"""

import contextlib
import re
import threading
import time
from typing import Any

RAY_TEMP_RE = re.compile(r"/tmp/imgserve-ray-[A-Za-z0-9_]+")


class TreeMonitor:
    """CPU seconds and summed RSS of a server's processes, sampled in a background thread.

    Members: the root process and all its descendants, plus any process whose command line names the server's
    Ray temp dir (/tmp/imgserve-ray-*, discovered from the descendants' command lines), so Ray workers count even
    if they are re-parented. CPU is cumulative per pid (the last value seen), so processes that exit still count.
    """

    def __init__(self, root_pid: int, interval: float = 0.5, rescan_every: int = 4) -> None:
        import psutil

        self._psutil = psutil
        self.root_pid = root_pid
        self.interval = interval
        self.rescan_every = rescan_every
        self.markers: set[str] = set()
        self.procs: dict[int, Any] = {}
        self.cpu: dict[int, float] = {}
        self.seen: set[int] = set()
        self._lock = threading.Lock()
        self._peak_rss = 0.0
        self._peak_parts: dict[str, float] = {}  # process label -> MB, at the moment of the peak
        self.last_peak_parts: dict[str, float] = {}  # the same for the span `mark` closed
        self._peak_pss: float | None = None  # summed PSS MB at the moment of the RSS peak (None: not readable)
        self.last_peak_pss: float | None = None  # the same for the span `mark` closed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.thread_cpu_s = 0.0

    def _scan(self) -> None:
        psutil = self._psutil
        found: dict[int, Any] = {}
        try:
            root = psutil.Process(self.root_pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
        for proc in list(found.values()):
            with contextlib.suppress(psutil.Error):
                self.markers.update(RAY_TEMP_RE.findall(" ".join(proc.cmdline())))
        if self.markers:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info.get("cmdline") or [])
                if proc.pid not in found and any(marker in cmdline for marker in self.markers):
                    found[proc.pid] = proc
        with self._lock:
            for pid, proc in found.items():
                if pid not in self.procs:
                    self.procs[pid] = proc
            self.seen.update(found)

    def sample(self) -> None:
        psutil = self._psutil
        parts: dict[str, float] = {}
        with self._lock:
            for pid, proc in list(self.procs.items()):
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        self.cpu[pid] = times.user + times.system
                        label = _label(proc)
                        parts[label] = parts.get(label, 0.0) + proc.memory_info().rss / 2**20
                except psutil.Error:
                    self.procs.pop(pid, None)
            total = sum(parts.values())
            if total > self._peak_rss:
                self._peak_rss, self._peak_parts = total, parts
                self._peak_pss = tree_pss_mb(self.procs)

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            started = time.thread_time()
            if count % self.rescan_every == 0:
                self._scan()
            self.sample()
            count += 1
            self.thread_cpu_s += time.thread_time() - started
            self._stop.wait(self.interval)

    def start(self) -> "TreeMonitor":
        self._scan()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def mark(self) -> tuple[float, float, float]:
        """(cumulative CPU s of the tree, peak RSS MB since the previous mark, monitor thread CPU s); resets peak."""
        self._scan()
        self.sample()
        with self._lock:
            total = sum(self.cpu.values())
            peak_rss, self._peak_rss = self._peak_rss, 0.0
            self.last_peak_parts, self._peak_parts = self._peak_parts, {}
            self.last_peak_pss, self._peak_pss = self._peak_pss, None
        return total, peak_rss, self.thread_cpu_s

    def pids(self) -> set[int]:
        with self._lock:
            return set(self.seen)


def tree_pss_mb(procs: dict[int, Any]) -> float | None:
    """Summed PSS of `procs` (pid -> psutil process) in MB; None if any process's PSS could not be read (gone, no
    access, or a platform whose psutil has no PSS)."""
    import psutil

    total = 0.0
    for proc in list(procs.values()):
        try:
            pss = getattr(proc.memory_full_info(), "pss", None)  # Linux: /proc/PID/smaps_rollup
        except psutil.Error:
            return None
        if pss is None:
            return None
        total += pss / 2**20
    return total


def _label(proc: Any) -> str:
    """What a process is, for the per-process peak: Ray's process title (`ray::ServeReplica:imgserve:Ingress`,
    `ray::ServeController`, ...) or the executable's name (raylet, gcs_server, python)."""
    try:
        cmdline = proc.cmdline()
    except Exception:  # noqa: BLE001 - a command line we may not read: the name is enough to count it
        cmdline = []
    first = cmdline[0] if cmdline else proc.name()
    if first.startswith("ray::"):
        return first.split(" ")[0]
    return first.rsplit("/", 1)[-1]
