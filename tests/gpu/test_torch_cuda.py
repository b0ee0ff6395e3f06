"""PyTorch backend on CUDA with fp16, against its own fp32 CPU answer (tiny TorchScript model)."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from serving.backends.torch_backend import TorchBackend  # noqa: E402
from serving.config.model_config import ModelConfig  # noqa: E402
from serving.repository import ModelArtifacts, ModelEntry  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _entry(tmp_path: Path) -> ModelEntry:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()
    path = tmp_path / "tiny.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(path))
    config = ModelConfig.model_validate(
        {
            "name": "tiny",
            "task": "classification",
            "input": {"name": "input", "layout": "NCHW", "dtype": "FP32", "size": [32, 32]},
            "preprocessing": {"resize": {"policy": "exact", "size": [32, 32]}},
            "outputs": [{"name": "logits", "shape": [5], "kind": "logits"}],
            "backends": ["torch"],
            "weights": {"file": "tiny.pt", "format": "torchscript", "sha256": "0" * 64},
        }
    )
    return ModelEntry(config, tmp_path, artifacts=ModelArtifacts(torchscript=path))


def test_torch_cuda_fp16_matches_cpu(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    batch = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    cpu = TorchBackend(device="cpu")
    cpu.load(entry)
    gpu = TorchBackend()
    gpu.load(entry)
    assert gpu.info().device.startswith("cuda") and gpu.info().precision == "fp16"
    np.testing.assert_allclose(gpu.infer(batch)["logits"], cpu.infer(batch)["logits"], atol=2e-2)
