"""GPU backends on the real default model: skipped cleanly without CUDA (and without TensorRT)."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from pipelines.preprocess import reference_preprocess
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.backends.tensorrt_backend import TensorRTBackend
from serving.config.settings import ServerSettings
from serving.repository import ModelEntry, ModelRepository
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, require

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


requires_cuda = pytest.mark.skipif(not _cuda(), reason="no CUDA device on this machine")


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    require(MOBILENET_DIR)
    return ModelRepository.scan(ServerSettings.from_env()).get("mobilenet_v2_imagenet")


@pytest.fixture(scope="module")
def batch(entry: ModelEntry) -> np.ndarray:
    files = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:32]
    spec = entry.config.preprocess_spec()
    return np.stack([reference_preprocess(Image.open(f), spec) for f in files])


@pytest.fixture(scope="module")
def cpu_probs(entry: ModelEntry, batch: np.ndarray) -> np.ndarray:
    backend = OnnxRuntimeBackend(use_cuda=False)
    backend.load(entry)
    return backend.infer(batch)["probs"]


@requires_cuda
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")
def test_tensorrt_fp16_engine_agrees_with_cpu(entry: ModelEntry, batch: np.ndarray, cpu_probs: np.ndarray) -> None:
    backend = TensorRTBackend()
    assert TensorRTBackend.unavailable_reason(entry) is None
    backend.load(entry)
    probs = backend.infer(batch)["probs"]
    assert probs.shape == cpu_probs.shape
    agreement = float((probs.argmax(1) == cpu_probs.argmax(1)).mean())
    assert agreement >= 0.95, f"fp16 TensorRT top-1 agrees with fp32 CPU on only {agreement:.0%}"
    assert backend.info().precision == "fp16"
    backend.close()


@requires_cuda
def test_onnxruntime_cuda_provider(entry: ModelEntry, batch: np.ndarray, cpu_probs: np.ndarray) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here is the CPU build")
    backend = OnnxRuntimeBackend(use_cuda=True)
    backend.load(entry)
    assert backend.info().device == "cuda:0"
    np.testing.assert_allclose(backend.infer(batch)["probs"], cpu_probs, atol=1e-3)
