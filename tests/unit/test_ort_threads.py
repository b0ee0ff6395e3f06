"""ONNX Runtime's intra-op threads per session: IMGSERVE_ORT_THREADS is checked (it used to pass -4 through and
fail on "abc" with a bare int() error), and the default is the CPUs this process may use (affinity and cgroup
quota), not every core of the node."""

import pytest

import serving.backends.onnxruntime_backend as ort_backend
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend, default_intra_op_threads, usable_cpus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw", ["-4", "abc", "1.5"])
def test_a_bad_thread_count_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("IMGSERVE_ORT_THREADS", raw)
    with pytest.raises(ValueError, match=rf"IMGSERVE_ORT_THREADS='{raw}': expected a whole number of threads, 0 or"):
        OnnxRuntimeBackend()


def test_a_negative_thread_count_given_directly_is_refused() -> None:
    with pytest.raises(ValueError, match="intra_op_threads must be 0 or more"):
        OnnxRuntimeBackend(intra_op_threads=-2)


@pytest.mark.parametrize("raw, threads", [(" 3 ", 3), ("1", 1)])
def test_a_thread_count_is_taken_as_given(monkeypatch: pytest.MonkeyPatch, raw: str, threads: int) -> None:
    monkeypatch.setenv("IMGSERVE_ORT_THREADS", raw)
    assert default_intra_op_threads() == threads


@pytest.mark.parametrize("raw", ["", "0"])
def test_the_default_is_the_usable_cpus(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("IMGSERVE_ORT_THREADS", raw)
    monkeypatch.setattr(ort_backend, "usable_cpus", lambda: 3)
    assert default_intra_op_threads() == 3


def _cgroup(monkeypatch: pytest.MonkeyPatch, files: dict[str, str], cpus: int) -> None:
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path].strip()

    monkeypatch.setattr(ort_backend, "_read", read)
    monkeypatch.setattr(ort_backend.os, "sched_getaffinity", lambda pid: set(range(cpus)))


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"/sys/fs/cgroup/cpu.max": "200000 100000\n"}, 2),  # a 2-CPU container on a 64-core node
        ({"/sys/fs/cgroup/cpu.max": "150000 100000"}, 2),  # 1.5 CPUs: rounded up
        ({"/sys/fs/cgroup/cpu.max": "max 100000"}, 64),  # no quota
        ({"/sys/fs/cgroup/cpu.max": "20000000 100000"}, 64),  # a quota above the affinity mask
        ({ort_backend.CGROUP_V1_QUOTA: "400000", ort_backend.CGROUP_V1_PERIOD: "100000"}, 4),  # cgroup v1
        ({ort_backend.CGROUP_V1_QUOTA: "-1", ort_backend.CGROUP_V1_PERIOD: "100000"}, 64),
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
