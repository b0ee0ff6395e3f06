"""ONNX Runtime's intra-op threads per session: IMGSERVE_ORT_THREADS is checked (it used to pass -4 through and
fail on "abc" with a bare int() error), and the default is the CPUs this process may use (affinity and cgroup
quota), not every core of the node."""

import pytest

from serving import cpus
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend, default_intra_op_threads

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
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    assert default_intra_op_threads() == 3
