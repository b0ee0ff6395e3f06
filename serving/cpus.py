"""How many CPUs this process may use: what sizes ONNX Runtime's intra-op threads (serving.backends.onnxruntime_backend)
and the stages' thread pool (serving.stages.concurrency), on a laptop, a VM or a CPU-limited container alike."""

import math
import os

CGROUP_V1_QUOTA, CGROUP_V1_PERIOD = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, a Kubernetes static CPU policy), bounded by the
    cgroup CPU quota rounded up (a container limited to 2 CPUs on a 64-core node: 2, not 64)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs this container's cgroup may use: cgroup v2 `cpu.max` ("200000 100000": 2), else v1's
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`; None without a quota ("max", -1) or a cgroup file."""
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()
    except (OSError, ValueError):
        try:
            quota, period = _read(CGROUP_V1_QUOTA), _read(CGROUP_V1_PERIOD)
        except OSError:
            return None
    try:
        cpus = float(quota) / float(period)
    except (ValueError, ZeroDivisionError):  # "max": no quota
        return None
    return cpus if cpus > 0 else None


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()
