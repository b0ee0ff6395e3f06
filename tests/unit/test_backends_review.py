"""Backend details a CPU machine can check: TensorRT engines are cached per precision."""

from pathlib import Path

import pytest

from serving.backends.tensorrt_backend import engine_cache_path

pytestmark = pytest.mark.unit


def test_tensorrt_engines_of_each_precision_have_their_own_cache_file(tmp_path: Path) -> None:
    """The file name said fp16 whatever the backend's `fp16` option: with `tensorrt: {fp16: false}` a replica
    loaded the FP16 engine an earlier replica had cached (and reported precision fp32), and the other way round."""
    common = (tmp_path, "resnet50", "ab" * 32, "NVIDIA H100 80GB HBM3", "10.3.0", 16)
    fp16 = engine_cache_path(*common, fp16=True)
    fp32 = engine_cache_path(*common, fp16=False)
    assert fp16 != fp32
    assert "fp16" in fp16.name and "fp16" not in fp32.name and "fp32" in fp32.name
    assert fp16.parent == fp32.parent == tmp_path / "tensorrt"
