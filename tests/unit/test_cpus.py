"""The CPUs this process may use (serving.cpus): the affinity mask, bounded by the cgroup CPU quota rounded up."""

import pytest

import serving.cpus as cpu_count
from serving.cpus import usable_cpus

pytestmark = pytest.mark.unit


def _cgroup(monkeypatch: pytest.MonkeyPatch, files: dict[str, str], cpus: int) -> None:
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path].strip()

    monkeypatch.setattr(cpu_count, "_read", read)
    monkeypatch.setattr(cpu_count.os, "sched_getaffinity", lambda pid: set(range(cpus)))


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"/sys/fs/cgroup/cpu.max": "200000 100000\n"}, 2),  # a 2-CPU container on a 64-core node
        ({"/sys/fs/cgroup/cpu.max": "150000 100000"}, 2),  # 1.5 CPUs: rounded up
        ({"/sys/fs/cgroup/cpu.max": "max 100000"}, 64),  # no quota
        ({"/sys/fs/cgroup/cpu.max": "20000000 100000"}, 64),  # a quota above the affinity mask
        ({cpu_count.CGROUP_V1_QUOTA: "400000", cpu_count.CGROUP_V1_PERIOD: "100000"}, 4),  # cgroup v1
        ({cpu_count.CGROUP_V1_QUOTA: "-1", cpu_count.CGROUP_V1_PERIOD: "100000"}, 64),
        ({"/sys/fs/cgroup/cpu.max": "50000 100000"}, 1),  # half a CPU: one thread
        ({}, 64),  # no cgroup files (not Linux, or not mounted)
    ],
)
def test_usable_cpus_follow_the_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: int
) -> None:
    _cgroup(monkeypatch, files, cpus=64)
    assert usable_cpus() == expected


def test_usable_cpus_follow_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    _cgroup(monkeypatch, {}, cpus=6)
    assert usable_cpus() == 6
