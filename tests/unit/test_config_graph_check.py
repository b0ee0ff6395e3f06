"""A model whose config.yaml disagrees with its ONNX graph is refused at load with the difference spelled out (it
used to load, answer ready, and fail every request with a 500 or answer empty predictions)."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from serving.backends import BackendUnavailableError, load_backend
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.config.model_config import load_model_config
from serving.repository import ModelArtifacts, ModelEntry
from tests.unit.tiny_models import SIZE, tiny_local_service, write_tiny_repository

pytestmark = pytest.mark.unit


def _edit_input(**values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["input"].update(values)
        if values.get("dtype") == "UINT8":  # a UINT8 input takes the pixels as they are
            for key in ("scale", "mean", "std"):
                config["preprocessing"].pop(key, None)
        if "size" in values:
            config["preprocessing"]["resize"]["size"] = values["size"]
            config["preprocessing"]["crop"] = values["size"]

    return edit


def _edit_output(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["outputs"][0].update(values)


MISMATCHES = {
    "size": (
        _edit_input(size=[48, 48]),
        "config input 'input' [N,3,48,48] FP32 NCHW does not match graph input 'input' [N,3,32,32] tensor(float)",
    ),  # fmt: skip
    "dtype": (_edit_input(dtype="UINT8"), "[N,3,32,32] UINT8 NCHW does not match graph input 'input' [N,3,32,32]"),
    "layout": (_edit_input(layout="NHWC"), "[N,32,32,3] FP32 NHWC does not match graph input 'input' [N,3,32,32]"),
    "input name": (_edit_input(name="images"), "input 'images' is not a graph input (the graph takes 'input'"),
    "output name": (_edit_output(name="nope"), "output 'nope' is not a graph output (the graph's: 'logits')"),
}


def _entry(root: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> ModelEntry:
    folder = write_tiny_repository(root) / "tiny"
    if edit is not None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        edit(config)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    config = load_model_config(folder / "config.yaml")
    return ModelEntry(config, folder, artifacts=ModelArtifacts(onnx=folder / "model.onnx"))


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_a_config_that_contradicts_its_graph_is_refused_at_load(tmp_path: Path, case: str) -> None:
    edit, difference = MISMATCHES[case]
    with pytest.raises(BackendUnavailableError) as info:
        load_backend(_entry(tmp_path, edit), {"onnxruntime": {"intra_op_threads": 1}})
    assert "onnxruntime: failed to load (config.yaml does not match the ONNX graph: " in str(info.value)
    assert difference in str(info.value)


def test_the_matching_config_loads_and_runs(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(intra_op_threads=1)
    backend.load(_entry(tmp_path))
    outputs = backend.infer(np.zeros((3, 3, SIZE, SIZE), np.float32))
    assert outputs["logits"].shape == (3, 5)


def _fixed_batch_model(folder: Path, batch: int) -> None:
    """The tiny classifier with its batch axis fixed at `batch` instead of named."""
    model = onnx.load(str(folder / "model.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def test_a_batch_axis_fixed_at_one_runs_one_image_per_call(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    _fixed_batch_model(entry.folder, 1)
    backend = OnnxRuntimeBackend(intra_op_threads=1, cpu_run_batch=8)
    backend.load(entry)
    assert backend.infer(np.zeros((4, 3, SIZE, SIZE), np.float32))["logits"].shape == (4, 5)


def test_a_batch_axis_fixed_above_one_is_refused(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    _fixed_batch_model(entry.folder, 4)
    with pytest.raises(ValueError, match="batch axis fixed at 4: export it with a dynamic batch axis"):
        OnnxRuntimeBackend(intra_op_threads=1).load(entry)


def test_a_second_graph_input_is_named(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "bias"], ["logits"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (entry.folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ValueError) as info:
        OnnxRuntimeBackend(intra_op_threads=1).load(entry)
    assert "graph input 'bias' is not fed (only 'input' is)" in str(info.value)
    assert "config output 'logits' [N,5] does not match the graph's [N,3,32,32]" in str(info.value)


def test_model_control_reports_the_mismatch_and_keeps_serving(tmp_path: Path) -> None:
    """The load API's error carries the difference; the version served before stays served."""
    from serving.model_control import ModelLoadError, load_model

    service, settings = tiny_local_service(tmp_path)
    path = settings.model_repository / "quality_mos" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["outputs"][1]["name"] = "mos"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ModelLoadError) as info:
        asyncio.run(load_model(service, "quality_mos"))
    assert "output 'mos' is not a graph output (the graph's: 'probs', 'score')" in str(info.value)
    assert service.repository.get("quality_mos").config.outputs[1].name == "score"


@pytest.mark.parametrize("concurrent, cpus, threads", [(1, 2, 2), (2, 2, 1), (2, 16, 8), (3, 2, 1)])
def test_a_model_running_batches_at_once_shares_the_cpus_among_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrent: int, cpus: int, threads: int
) -> None:
    """Without IMGSERVE_ORT_THREADS, each ONNX Runtime run gets the usable CPUs / `max_concurrent_batches` threads
    (at least one): two runs at once on two cores do not each start two threads. A given count is kept."""
    from serving import cpus as cpu_count

    monkeypatch.delenv("IMGSERVE_ORT_THREADS", raising=False)
    monkeypatch.setattr(cpu_count, "usable_cpus", lambda: cpus)
    entry = _entry(tmp_path, lambda config: config["batching"].update(max_concurrent_batches=concurrent))
    backend = OnnxRuntimeBackend()
    backend.load(entry)
    assert backend.intra_op_threads == threads and f"intra_op_threads={threads}" in backend.info().detail
    given = OnnxRuntimeBackend(intra_op_threads=3)
    given.load(entry)
    assert given.intra_op_threads == 3


def test_a_model_stage_runs_as_many_batches_at_once_as_its_config_says(tmp_path: Path) -> None:
    from serving.stages.model import ModelStage

    entry = _entry(tmp_path, lambda config: config["batching"].update(max_concurrent_batches=2))
    stage = ModelStage(entry, {"onnxruntime": {"intra_op_threads": 1}})
    try:
        assert stage._queue.max_concurrent_batches == 2
        stage.reconfigure({"batching": {"max_concurrent_batches": 1}})  # Ray Serve user_config
        assert stage._queue.max_concurrent_batches == 1 and stage.batching.max_concurrent_batches == 1
    finally:
        stage.retire()
