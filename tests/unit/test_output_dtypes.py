"""A model's outputs in the types its config declares (and its graph has): an INT64 argmax output was served as FP32
(metadata said INT64, infer answered FP32 `[886.]`), and a config declaring INT64 for a float output loaded READY."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.placement import build_service, compose
from tests.unit.tiny_models import CLASSES, SIZE, _save, classifier_graph, tiny_settings

pytestmark = pytest.mark.unit


def _with_argmax(models: Path, name: str, top_dtype: str) -> None:
    """`tiny` plus an INT64 output `top` (the argmax), declared `top_dtype`."""
    graph = classifier_graph()
    graph.node.append(helper.make_node("ArgMax", ["logits"], ["top"], axis=1, keepdims=1))
    graph.output.append(helper.make_tensor_value_info("top", TensorProto.INT64, ["N", 1]))
    folder = models / name
    shutil.copytree(models / "tiny", folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["name"] = name
    config["weights"]["sha256"] = _save(graph, folder / "model.onnx")
    config["outputs"].append({"name": "top", "shape": [1], "kind": "raw", "dtype": top_dtype})
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_an_int64_output_is_served_as_int64(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path)
    _with_argmax(settings.model_repository, "argmax", "INT64")
    _with_argmax(settings.model_repository, "mislabelled", "FP32")  # the graph's `top` is INT64
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    assert "is FP32, the graph's is tensor(int64)" in (
        service.repository.entries["mislabelled"].unavailable_reason or ""
    )
    pixels = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    body = {
        "inputs": [{"name": "input", "shape": list(pixels.shape), "datatype": "FP32", "data": pixels.ravel().tolist()}]
    }
    with TestClient(create_http_app(service)) as http:
        answer = http.post("/v2/models/argmax/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["top"]["datatype"] == "INT64" and outputs["logits"]["datatype"] == "FP32"
    logits = np.asarray(outputs["logits"]["data"]).reshape(2, len(CLASSES))
    assert outputs["top"]["data"] == logits.argmax(axis=1).tolist()
    assert all(isinstance(value, int) for value in outputs["top"]["data"])


def test_a_float16_output_under_the_default_fp32_is_served_cast(tmp_path: Path) -> None:
    """Outputs keep their declared types since 258aae8; a float16 graph output left at the default FP32 loaded
    before (cast to float32) and must still."""
    settings = tiny_settings(tmp_path)
    models = settings.model_repository
    graph = classifier_graph(output="logits32")
    graph.node.append(helper.make_node("Cast", ["logits32"], ["logits"], to=TensorProto.FLOAT16))
    graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["N", len(CLASSES)]))
    folder = models / "half"
    shutil.copytree(models / "tiny", folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["name"] = "half"
    config["weights"]["sha256"] = _save(graph, folder / "model.onnx")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    service = build_service(compose(AppArgs(placement="local", default_model="half"), settings))
    assert service.repository.entries["half"].available
    stage = service.pipeline.models["half"]  # type: ignore[attr-defined]
    pixels = np.random.default_rng(2).random((1, 3, SIZE, SIZE), dtype=np.float32)
    assert stage.backend.infer(pixels)["logits"].dtype == np.float32


def test_a_bytes_output_cannot_be_logits_or_probabilities() -> None:
    from serving.config.model_config import OutputSpec

    with pytest.raises(ValueError, match="its dtype must be numeric"):
        OutputSpec(name="labels", dtype="BYTES", shape=[1], kind="probabilities")
    assert OutputSpec(name="labels", dtype="BYTES", shape=[1]).kind == "raw"


def test_the_classification_extension_on_a_bytes_output_is_a_400() -> None:
    """It was a 500 `internal` (the strings were cast to float64); Triton refuses it as the client's request."""
    from types import SimpleNamespace

    from serving.errors import InvalidTensorError, classify_error
    from serving.oip.inference import _classification_strings

    words = np.array([[b"dog"], [b"cat"]], dtype=np.object_)
    with pytest.raises(InvalidTensorError) as refused:
        _classification_strings(words, (), 1, SimpleNamespace(name="labels", kind="raw"))
    assert classify_error(refused.value).http_status == 400
