"""A quality model grafted onto the served classifier: pooled activations of its convolutional layers + linear heads.

The classifier's ONNX graph (third-party weights, verified by the repository) is cut after its last convolution; the
mean and standard deviation over the image of the chosen activation maps (`FeatureHead.layers`, indices among the
network's Relu6 outputs) are concatenated into one feature vector per image; the project's own head (a small `.npz`
trained by `python -m tooling.quality_mos.train`, committed) maps it to

- `score`: the predicted mean opinion score, 0 (bad) .. 1 (excellent), clipped;
- `probs`: one probability per defect tag (logistic), in the head's label order.

`feature_graph` (features only) is what training measures; `quality_graph` (features + heads) is what
`imgserve models prepare` writes to the cache directory and the server runs, so both see exactly the same numbers.
"""

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving.npy_lock import NPY_READ

FEATURES = "features"


@dataclass(frozen=True)
class FeatureHead:
    """Linear heads on standardised pooled features: x -> (x - mean) / scale -> weights + bias."""

    layers: tuple[int, ...]
    mean: np.ndarray  # D
    scale: np.ndarray  # D
    score_weights: np.ndarray  # D
    score_bias: float
    tag_weights: np.ndarray  # D x K
    tag_bias: np.ndarray  # K
    labels: tuple[str, ...]  # K tag names

    def save(self, path: Path) -> None:
        np.savez(
            path,
            layers=np.asarray(self.layers, np.int64),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            score_weights=self.score_weights.astype(np.float32),
            score_bias=np.float32(self.score_bias),
            tag_weights=self.tag_weights.astype(np.float32),
            tag_bias=self.tag_bias.astype(np.float32),
            labels=np.asarray(self.labels),
        )

    @classmethod
    def load(cls, path: Path) -> "FeatureHead":
        with NPY_READ, np.load(path, allow_pickle=False) as data:
            return cls(
                layers=tuple(int(i) for i in data["layers"]),
                mean=data["mean"],
                scale=data["scale"],
                score_weights=data["score_weights"],
                score_bias=float(data["score_bias"]),
                tag_weights=data["tag_weights"],
                tag_bias=data["tag_bias"],
                labels=tuple(str(s) for s in data["labels"]),
            )

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score N, probs N x K) in numpy: what the grafted graph computes (used by training to check it)."""
        z = (features - self.mean) / self.scale
        score = np.clip(z @ self.score_weights + self.score_bias, 0.0, 1.0)
        return score, 1.0 / (1.0 + np.exp(-(z @ self.tag_weights + self.tag_bias)))


def _cut_with_pooling(
    base: onnx.ModelProto, layers: tuple[int, ...], side: int | None, with_std: bool = True
) -> onnx.ModelProto:
    """`base` cut after its deepest chosen activation, input side fixed (or free when None), output `features`:
    per chosen map its mean over the image, and its standard deviation unless `with_std` is False."""
    graph_model = onnx.ModelProto()
    graph_model.CopyFrom(base)
    graph = graph_model.graph
    shape = graph.input[0].type.tensor_type.shape
    for axis, name in ((2, "H"), (3, "W")):
        shape.dim[axis].Clear()
        if side is None:
            shape.dim[axis].dim_param = name
        else:
            shape.dim[axis].dim_value = side
    activations = [node.output[0] for node in graph.node if node.op_type == "Clip"]
    deepest = activations[max(layers)]
    last = next(i for i, node in enumerate(graph.node) if node.output[0] == deepest)
    del graph.node[last + 1 :]
    del graph.output[:]
    del graph.value_info[:]  # the declared intermediate shapes belong to the 224x224 input
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    pooled = []
    for index in layers:
        a, tag = activations[index], f"pool{index}"
        graph.node.append(helper.make_node("ReduceMean", [a], [f"{tag}_mean"], axes=[2, 3], keepdims=0))
        if not with_std:
            pooled.append(f"{tag}_mean")
            continue
        graph.node.extend(
            [
                helper.make_node("Mul", [a, a], [f"{tag}_sq"]),
                helper.make_node("ReduceMean", [f"{tag}_sq"], [f"{tag}_m2"], axes=[2, 3], keepdims=0),
                helper.make_node("Mul", [f"{tag}_mean", f"{tag}_mean"], [f"{tag}_mean2"]),
                helper.make_node("Sub", [f"{tag}_m2", f"{tag}_mean2"], [f"{tag}_var"]),
                helper.make_node("Relu", [f"{tag}_var"], [f"{tag}_var0"]),  # rounding can make it -1e-9
                helper.make_node("Sqrt", [f"{tag}_var0"], [f"{tag}_std"]),
            ]
        )
        pooled += [f"{tag}_mean", f"{tag}_std"]
    graph.node.append(helper.make_node("Concat", pooled, [FEATURES], axis=1))
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", None]))
    return graph_model


def feature_graph(
    base: onnx.ModelProto, layers: tuple[int, ...], side: int | None = None, with_std: bool = True
) -> onnx.ModelProto:
    """The classifier cut to its pooled activations: input N x 3 x side x side -> `features` N x D."""
    return _cut_with_pooling(base, layers, side, with_std)


def quality_graph(base: onnx.ModelProto, head: FeatureHead, side: int, score: str, probs: str) -> onnx.ModelProto:
    """Features + heads: input N x 3 x side x side -> `score` N x 1 (0..1) and `probs` N x K (sigmoid)."""
    model = _cut_with_pooling(base, head.layers, side)
    graph = model.graph
    inv = (1.0 / head.scale).astype(np.float32)
    # (x - mean) * inv @ W + b  ==  x @ (inv * W) + (b - (mean * inv) @ W): standardisation folded into the weights
    weights = np.concatenate([head.score_weights[:, None], head.tag_weights], axis=1).astype(np.float32)
    folded = (inv[:, None] * weights).astype(np.float32)
    bias = np.concatenate([[head.score_bias], head.tag_bias]).astype(np.float32)
    bias = (bias - (head.mean * inv).astype(np.float32) @ weights).astype(np.float32)
    k = len(head.labels)
    graph.initializer.extend(
        [
            numpy_helper.from_array(folded, "head_weights"),
            numpy_helper.from_array(bias, "head_bias"),
            numpy_helper.from_array(np.array([0], np.int64), "slice_0"),
            numpy_helper.from_array(np.array([1], np.int64), "slice_1"),
            numpy_helper.from_array(np.array([k + 1], np.int64), "slice_end"),
            numpy_helper.from_array(np.array([1], np.int64), "slice_axis"),
            numpy_helper.from_array(np.array(0.0, np.float32), "clip_low"),
            numpy_helper.from_array(np.array(1.0, np.float32), "clip_high"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gemm", [FEATURES, "head_weights", "head_bias"], ["head_out"]),
            helper.make_node("Slice", ["head_out", "slice_0", "slice_1", "slice_axis"], ["score_raw"]),
            helper.make_node("Clip", ["score_raw", "clip_low", "clip_high"], [score]),
            helper.make_node("Slice", ["head_out", "slice_1", "slice_end", "slice_axis"], ["tag_logits"]),
            helper.make_node("Sigmoid", ["tag_logits"], [probs]),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(score, TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info(probs, TensorProto.FLOAT, ["N", k]),
        ]
    )
    onnx.checker.check_model(model)
    return model


GRAPH_VERSION = 1  # bump when quality_graph changes what it writes: cached exports are keyed by it


def write_quality_graph(base_onnx: Path, head_file: Path, side: int, score: str, probs: str, target: Path) -> Path:
    """Build the grafted model from the verified files and write it atomically to `target`."""
    model = quality_graph(onnx.load(str(base_onnx)), FeatureHead.load(head_file), side, score, probs)
    return save_atomically(model, target)


def save_atomically(model: onnx.ModelProto, target: Path) -> Path:
    """Write `model` to `target` through a private temporary file (concurrent builders never share one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)
    return target
