"""Which classifier file the repository serves on CPU: the INT8 build only when configured, built and passed."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from serving.config.model_config import load_model_config
from serving.config.settings import PROJECT_ROOT, ServerSettings
from serving.export import prepare_repository
from serving.quantize import QUANT_VERSION, Int8Report, int8_paths, read_int8_report, served_int8
from tests.paths import MOBILENET_DIR, require

pytestmark = pytest.mark.unit

CONFIG = load_model_config(PROJECT_ROOT / "models" / "mobilenet_v2_imagenet" / "config.yaml")


def _report(passed: bool, version: int = QUANT_VERSION) -> Int8Report:
    return Int8Report(
        model=CONFIG.name, float_top1=0.89, int8_top1=0.89 if passed else 0.80, top1_agreement=0.96, images=1000,
        check_folder="imagenet-samples", calibration_folder="biq2021-train/images", calibration_images=300,
        float_images_per_s=160.0, int8_images_per_s=320.0, min_top1_ratio=0.99, passed=passed,
        onnxruntime="test", quant_version=version,
    )  # fmt: skip


def _built(tmp_path: Path, report: Int8Report | None, onnx: bool = True) -> ServerSettings:
    settings = ServerSettings(cache_dir=tmp_path)
    model, report_path = int8_paths(CONFIG, settings)
    model.parent.mkdir(parents=True, exist_ok=True)
    if onnx:
        model.write_bytes(b"not read by this test")
    if report is not None:
        report_path.write_text(json.dumps(asdict(report)))
    return settings


def test_the_default_classifier_configures_an_int8_variant_checked_on_other_photos() -> None:
    assert CONFIG.int8 is not None and CONFIG.int8.serve and CONFIG.int8.min_top1_ratio == 0.99
    assert CONFIG.int8.calibration.folder.split("/")[0] != CONFIG.int8.accuracy.folder.split("/")[0]


def test_served_only_when_built_and_passed(tmp_path: Path) -> None:
    assert (
        served_int8(CONFIG, _built(tmp_path / "passed", _report(True)))
        == int8_paths(CONFIG, ServerSettings(cache_dir=tmp_path / "passed"))[0]
    )
    assert served_int8(CONFIG, _built(tmp_path / "failed", _report(False))) is None
    assert served_int8(CONFIG, _built(tmp_path / "never", None)) is None
    assert served_int8(CONFIG, _built(tmp_path / "no-file", _report(True), onnx=False)) is None
    old = _built(tmp_path / "old", _report(True, version=QUANT_VERSION - 1))
    assert read_int8_report(CONFIG, old) is None and served_int8(CONFIG, old) is None  # an older recipe: rebuilt


def test_serve_false_is_the_one_line_back_to_float(tmp_path: Path) -> None:
    assert CONFIG.int8 is not None
    settings = _built(tmp_path, _report(True))
    float_config = CONFIG.model_copy(update={"int8": CONFIG.int8.model_copy(update={"serve": False})})
    assert served_int8(float_config, settings) is None
    assert served_int8(CONFIG.model_copy(update={"int8": None}), settings) is None


def test_an_unreadable_report_is_no_report(tmp_path: Path) -> None:
    settings = _built(tmp_path, None)
    int8_paths(CONFIG, settings)[1].write_text("{not json")
    assert read_int8_report(CONFIG, settings) is None and served_int8(CONFIG, settings) is None


def test_without_calibration_photos_prepare_skips_and_float_is_served(tmp_path: Path) -> None:
    require(MOBILENET_DIR)
    settings = ServerSettings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "no-photos")
    results = {r.model: r for r in prepare_repository(settings)}
    skipped = results[f"{CONFIG.name} (int8)"]
    assert skipped.status == "skipped" and "float is served" in skipped.detail and "no-photos" in skipped.detail
    assert served_int8(CONFIG, settings) is None


def _three_convs(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, c, 3, 3)).astype(np.float32), f"w{i}") for i, c in
               enumerate((3, 4, 4))]  # fmt: skip
    nodes = [helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"x{i + 1}"], pads=[1, 1, 1, 1]) for i in range(3)]
    graph = helper.make_graph(
        nodes,
        "three",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("x3", TensorProto.FLOAT, [1, 4, 8, 8])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_first_convs_get_uint8_weights_in_the_quantised_graph(tmp_path: Path) -> None:
    """`uint8_weight_convs`: the first N Conv nodes' weights are quantised to uint8 (no 16-bit saturation on CPUs
    without VNNI), the others to int8, in the file ONNX Runtime writes."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from serving.quantize import cpu_has_vnni, uint8_weight_overrides

    source, target = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _three_convs(source)
    overrides = uint8_weight_overrides(source, 2)
    assert list(overrides) == ["w0", "w1"] and uint8_weight_overrides(source, 0) == {}

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.left = [{"x0": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    quantize_static(
        str(source), str(target), Batches(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, per_channel=True, extra_options={"TensorQuantOverrides": overrides},
    )  # fmt: skip
    graph = onnx.load(str(target)).graph
    kinds = {i.name: i.data_type for i in graph.initializer if i.name.startswith("w") and i.name.endswith("quantized")}
    assert kinds == {"w0_quantized": onnx.TensorProto.UINT8, "w1_quantized": onnx.TensorProto.UINT8,
                     "w2_quantized": onnx.TensorProto.INT8}, kinds  # fmt: skip
    assert cpu_has_vnni() in (True, False, None)


def test_the_output_head_stays_float_so_probabilities_are_not_rounded_to_1_255(tmp_path: Path) -> None:
    """Quantised, ORT's QDQ Softmax wrote probabilities in steps of 1/255 (every class under 0.2 % read 0.0);
    `output_head_nodes` (the last conv and what follows it) are left out of quantisation."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from serving.quantize import output_head_nodes

    rng = np.random.default_rng(0)
    source, target = tmp_path / "f.onnx", tmp_path / "q.onnx"
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["h"], name="body", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["h"], ["pooled"], name="pool"),
        helper.make_node("Conv", ["pooled", "w1"], ["logits4d"], name="logits"),
        helper.make_node("Reshape", ["logits4d", "shape"], ["logits"], name="flatten"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    initializers = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=(50, 8, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array([-1, 50], np.int64), "shape"),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 50])], initializers,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    assert output_head_nodes(source) == ["softmax", "flatten", "logits"]
    inputs = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = list(inputs)

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    def probabilities(exclude: list[str]) -> np.ndarray:
        quantize_static(
            str(source), str(target), Batches(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude,
        )  # fmt: skip
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        return session.run(None, inputs[0])[0][0]

    def on_a_1_255_grid(p: np.ndarray) -> bool:
        return bool(np.allclose(p * 255, np.round(p * 255), atol=1e-3))

    assert on_a_1_255_grid(probabilities([]))  # what the served model did before
    kept = probabilities(output_head_nodes(source))
    assert not on_a_1_255_grid(kept) and np.all(kept > 0)
    assert [n.op_type for n in onnx.load(str(target)).graph.node][-3:] == ["Conv", "Reshape", "Softmax"]
