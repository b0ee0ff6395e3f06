"""A model's config.yaml against its ONNX graph, read with `onnx` alone (no session): what each placement checks
before it builds a model's stage, so a config that contradicts its graph makes that model unavailable with the
differences named, and never a deployment that fails (the graph placement deployed `model-<name>` for it, whose
replica failed three times and took the whole application down; the local placement's own failure is caught as
the stage is built, serving.placement)."""

from dataclasses import dataclass
from typing import Any

from serving.config.model_entry import ModelEntry


@dataclass(frozen=True)
class _Tensor:
    """What `check_graph` reads of an ONNX Runtime NodeArg: name, shape (ints, axis names, None), type."""

    name: str
    shape: list[Any]
    type: str


def _tensors(values: Any, exclude: frozenset[str] = frozenset()) -> list[_Tensor]:
    from onnx import TensorProto

    tensors = []
    for value in values:
        if value.name in exclude:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
        element = TensorProto.DataType.Name(tensor_type.elem_type).lower()
        tensors.append(_Tensor(value.name, dims if tensor_type.HasField("shape") else [], f"tensor({element})"))
    return tensors


def graph_problems(entry: ModelEntry) -> str | None:
    """Why `entry`'s ONNX graph cannot serve its config (the differences, as its backend's load would name them),
    or None (it fits, or there is no ONNX graph to read here: the backend's load decides)."""
    from serving.backends.onnxruntime_backend import check_graph

    path = entry.artifacts.onnx
    if path is None or entry.config.weights.format != "onnx":
        return None
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a graph onnx cannot read: the backend's load says why
        return None
    initializers = frozenset(i.name for i in graph.initializer)  # old exports list their weights as inputs
    try:
        check_graph(entry.config, _tensors(graph.input, initializers), _tensors(graph.output))
    except ValueError as exc:
        return f"its backend failed to load: {exc}"
    return None
