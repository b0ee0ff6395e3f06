"""The Backend contract on a tiny generated model: ONNX Runtime and TorchScript agree with torch eager."""

import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.decode import decode_image
from serving.backends import BackendUnavailableError, backend_plan, load_backend
from serving.backends.base import Backend
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.backends.tensorrt_backend import TensorRTBackend
from serving.backends.torch_backend import TorchBackend
from serving.config.model_config import ModelConfig
from serving.repository import ModelArtifacts, ModelEntry
from serving.stages.model import split_batch

torch = pytest.importorskip("torch")

# TorchScript is deprecated in torch 2.13 but is what TorchBackend loads; the warning is known, not news.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")]

SIZE = 32
CLASSES = 5


@dataclass(frozen=True)
class TinyModel:
    eager: Any  # torch.nn.Module
    onnx: Path
    torchscript: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """conv 3->4, ReLU, global average pool, linear 4->5; exported to ONNX (dynamic batch) and TorchScript."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, kernel_size=3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, CLASSES),
    ).eval()
    folder = tmp_path_factory.mktemp("tiny")
    example = torch.randn(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter and torch.jit: deprecated, not gone
        torch.onnx.export(
            model,
            (example,),
            str(folder / "tiny.onnx"),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )
        torch.jit.trace(model, example).save(str(folder / "tiny.pt"))
    return TinyModel(model, folder / "tiny.onnx", folder / "tiny.pt")


def entry_for(tiny: TinyModel, backends: list[str], onnx: Path | None = None, torchscript: bool = True) -> ModelEntry:
    digest = hashlib.sha256(tiny.onnx.read_bytes()).hexdigest()
    config = ModelConfig.model_validate(
        {
            "name": "tiny",
            "task": "classification",
            "input": {"name": "input", "layout": "NCHW", "dtype": "FP32", "size": [SIZE, SIZE]},
            "preprocessing": {"resize": {"policy": "exact", "size": [SIZE, SIZE]}, "mean": [128] * 3, "std": [128] * 3},
            "outputs": [{"name": "logits", "shape": [CLASSES], "kind": "logits"}],
            "batching": {"max_batch_size": 8},
            "backends": backends,
            "weights": {"file": "tiny.onnx", "format": "onnx", "sha256": digest},
        }
    )
    artifacts = ModelArtifacts(onnx=onnx or tiny.onnx, torchscript=tiny.torchscript if torchscript else None)
    return ModelEntry(config, tiny.onnx.parent, artifacts=artifacts)


def eager(tiny: TinyModel, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return tiny.eager(torch.from_numpy(batch)).numpy()


def batch_of(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (size, 3, SIZE, SIZE)).astype(np.float32)


BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend, "torch": TorchBackend}
OPTIONS: dict[str, dict[str, Any]] = {"onnxruntime": {"intra_op_threads": 1}, "torch": {"device": "cpu"}}
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch_libtorch"}


@pytest.fixture(params=sorted(BACKENDS), scope="module")
def loaded(request: pytest.FixtureRequest, tiny: TinyModel) -> Iterator[Backend]:
    backend = BACKENDS[request.param](**OPTIONS[request.param])
    backend.load(entry_for(tiny, [request.param]))
    yield backend
    backend.close()


@pytest.mark.parametrize("size", [1, 7])
def test_infer_follows_the_batch_contract(loaded: Backend, tiny: TinyModel, size: int) -> None:
    batch = batch_of(size, seed=size)
    outputs = loaded.infer(batch)
    assert set(outputs) == {"logits"}
    assert outputs["logits"].shape == (size, CLASSES)
    assert outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], eager(tiny, batch), atol=1e-4, rtol=0)


def test_decoded_images_feed_the_backend(loaded: Backend, tiny: TinyModel) -> None:
    spec = entry_for(tiny, ["onnxruntime"]).config.preprocess_spec()
    tensors = []
    for shade in (0, 128, 255):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (shade, 255 - shade, 30)).save(buffer, "PNG")
        tensors.append(decode_image(buffer.getvalue(), spec).tensor)
    batch = np.stack(tensors)
    assert batch.shape == (3, 3, SIZE, SIZE) and batch.dtype == np.float32
    np.testing.assert_allclose(loaded.infer(batch)["logits"], eager(tiny, batch), atol=1e-4, rtol=0)


def test_batched_rows_equal_single_rows(loaded: Backend) -> None:
    batch = batch_of(7, seed=3)
    together = loaded.infer(batch)["logits"]
    alone = np.concatenate([loaded.infer(batch[i : i + 1])["logits"] for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("run_batch", [1, 3, 7, 0])
def test_cpu_runs_a_batch_in_slices_with_the_same_result(tiny: TinyModel, run_batch: int) -> None:
    """ONNX Runtime on the CPU runs a batch in calls of `cpu_run_batch` images (0: one call): same rows, in order."""
    backend = OnnxRuntimeBackend(intra_op_threads=1, use_cuda=False, cpu_run_batch=run_batch)
    backend.load(entry_for(tiny, ["onnxruntime"]))
    session, calls = backend._session, []

    class CountingSession:  # the real session, each call's image count recorded
        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> Any:
            calls.append(len(next(iter(feed.values()))))
            return session.run(names, feed)

    backend._session = CountingSession()
    batch = batch_of(7, seed=5)
    outputs = backend.infer(batch)
    assert calls == ([min(run_batch, 7 - i) for i in range(0, 7, run_batch)] if run_batch else [7])
    assert outputs["logits"].shape == (7, CLASSES) and outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], eager(tiny, batch), atol=1e-4, rtol=0)
    backend._session = session
    assert ("run_batch=" in backend.info().detail) == (run_batch > 0)
    backend.close()


def test_info_reports_runtime(loaded: Backend) -> None:
    info = loaded.info()
    assert info.name == loaded.name
    assert info.device == "cpu"
    assert info.platform == PLATFORMS[loaded.name]
    assert info.precision == "fp32"


def test_backends_agree_with_each_other(tiny: TinyModel) -> None:
    batch = batch_of(4, seed=11)
    results = []
    for name, cls in BACKENDS.items():
        backend = cls(**OPTIONS[name])
        backend.load(entry_for(tiny, [name]))
        results.append(backend.infer(batch)["logits"])
        backend.close()
        with pytest.raises(RuntimeError, match="not loaded"):
            backend.infer(batch)
    np.testing.assert_allclose(results[0], results[1], atol=1e-4, rtol=0)


def test_plan_picks_first_available_and_records_why(tiny: TinyModel) -> None:
    entry = entry_for(tiny, ["tensorrt", "onnxruntime"])
    if TensorRTBackend.unavailable_reason(entry) is None:
        pytest.skip("TensorRT can run here; this test covers CPU machines")
    chosen, reasons = backend_plan(entry)
    assert chosen == "onnxruntime"
    assert len(reasons) == 1 and reasons[0].startswith("tensorrt: ")
    backend = load_backend(entry, OPTIONS)
    assert isinstance(backend, OnnxRuntimeBackend)
    backend.close()


def test_plan_skips_backends_missing_their_artefact(tiny: TinyModel) -> None:
    entry = entry_for(tiny, ["torch", "onnxruntime"], torchscript=False)
    assert backend_plan(entry) == ("onnxruntime", ["torch: torch needs a TorchScript file or a torchvision state dict"])


def test_load_falls_through_when_a_backend_fails_to_load(tiny: TinyModel, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX protobuf")
    backend = load_backend(entry_for(tiny, ["onnxruntime", "torch"], onnx=broken), OPTIONS)
    assert isinstance(backend, TorchBackend)
    backend.close()


def test_no_backend_raises_with_every_reason(tiny: TinyModel, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage")
    entry = entry_for(tiny, ["tensorrt", "onnxruntime"], onnx=broken)
    if TensorRTBackend.unavailable_reason(entry) is None:
        pytest.skip("TensorRT can run here; this test covers CPU machines")
    with pytest.raises(BackendUnavailableError) as info:
        load_backend(entry, OPTIONS)
    message = str(info.value)
    assert message.startswith("model 'tiny': no backend can run it here: tensorrt: ")
    assert "onnxruntime: failed to load" in message


def test_tensorrt_is_unavailable_without_cuda(tiny: TinyModel) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: TensorRT may be usable")
    reason = TensorRTBackend.unavailable_reason(entry_for(tiny, ["tensorrt"]))
    assert reason in ("tensorrt is not installed", "no CUDA device")


def test_split_batch_gives_one_dict_per_item() -> None:
    outputs = {"logits": np.arange(15, dtype=np.float32).reshape(3, 5), "extra": np.zeros((3, 2), np.float32)}
    items = split_batch(outputs, 3)
    assert len(items) == 3
    np.testing.assert_array_equal(items[2]["logits"], [10, 11, 12, 13, 14])
    assert items[1]["extra"].shape == (2,)


def test_split_batch_rejects_wrong_row_count() -> None:
    outputs = {"logits": np.zeros((3, 5), np.float32), "extra": np.zeros((2, 2), np.float32)}
    with pytest.raises(RuntimeError, match="backend returned 2 rows for output 'extra' but the batch had 3"):
        split_batch(outputs, 3)


def test_gpu_build_without_a_usable_gpu_serves_like_the_cpu_build(
    tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime-gpu lists the CUDA provider even where CUDA cannot start (no device, a missing or mismatched
    CUDA/cuDNN) and then runs the session on the CPU: the backend notices, says so, and serves as the CPU build
    does (the INT8 variant, batches in slices), not the float graph in whole batches. The CPU build here does what
    the GPU build does on such a machine: it falls back to CPUExecutionProvider when asked for CUDA."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    int8 = tmp_path / "tiny.int8.onnx"
    int8.write_bytes(tiny.onnx.read_bytes())  # a stand-in: which file is loaded shows in the reported precision
    entry = entry_for(tiny, ["onnxruntime"])
    entry = ModelEntry(entry.config, entry.folder, artifacts=ModelArtifacts(onnx=tiny.onnx, onnx_int8=int8))
    backend = OnnxRuntimeBackend(intra_op_threads=1, cpu_run_batch=3)
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="serving.backends.onnxruntime_backend"):
        warnings.simplefilter("ignore", UserWarning)  # the CPU build's "CUDAExecutionProvider is not available"
        backend.load(entry)
    info = backend.info()
    assert (info.device, info.precision) == ("cpu", "int8")
    assert "providers=CPUExecutionProvider" in info.detail and "run_batch=3" in info.detail
    assert "model tiny: ONNX Runtime's CUDA provider did not start" in caplog.text
    batch = batch_of(7, seed=9)
    np.testing.assert_allclose(backend.infer(batch)["logits"], eager(tiny, batch), atol=1e-4, rtol=0)
    backend.close()
