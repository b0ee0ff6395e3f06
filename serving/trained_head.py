"""Models made from the served classifier's penultimate layer: its embedding, and classifiers trained on it.

- **embedding**: the base classifier's ONNX graph cut after its last activation and mean-pooled over the image (what
  its own average-pool feeds the logits layer): input N x 3 x H x W -> `embedding` N x D (D = 1280 for MobileNetV2).
  Training jobs compute their features with it, through the same batched model stage as any served model.
- **classifier head**: a linear softmax layer trained on that embedding by a training job (serving.training), kept
  as a small `.npz` in the model version's folder; the served graph is the cut classifier + the head + softmax:
  input -> `probs` N x K, one probability per category of `labels.txt`.

Both graphs are build outputs written to the cache directory, keyed by the head's sha256 (never committed).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving.feature_head import FEATURES, feature_graph
from serving.npy_lock import NPY_READ

EMBEDDING = "embedding"
HEAD_GRAPH_VERSION = 1  # bump when the graphs below change what they compute: cached builds are keyed by it


def last_activation(base: onnx.ModelProto) -> int:
    """Index (among the Relu6/Clip outputs that `feature_graph` counts) of the classifier's last activation."""
    count = sum(1 for node in base.graph.node if node.op_type == "Clip")
    if count == 0:
        raise ValueError("the base graph has no Clip (Relu6) activation to cut after")
    return count - 1


@dataclass(frozen=True)
class ClassifierHead:
    """Softmax regression on standardised embeddings: probs = softmax(((x - mean) / scale) @ weights + bias)."""

    mean: np.ndarray  # D
    scale: np.ndarray  # D
    weights: np.ndarray  # D x K
    bias: np.ndarray  # K
    labels: tuple[str, ...]  # K category names, output order

    def save(self, path: Path) -> None:
        np.savez(
            path,
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            weights=self.weights.astype(np.float32),
            bias=self.bias.astype(np.float32),
            labels=np.asarray(self.labels),
        )

    @classmethod
    def load(cls, path: Path) -> "ClassifierHead":
        with NPY_READ, np.load(path, allow_pickle=False) as data:
            head = cls(
                mean=data["mean"],
                scale=data["scale"],
                weights=data["weights"],
                bias=data["bias"],
                labels=tuple(str(s) for s in data["labels"]),
            )
        d, k = head.weights.shape
        if head.mean.shape != (d,) or head.scale.shape != (d,) or head.bias.shape != (k,) or len(head.labels) != k:
            raise ValueError(f"{path}: inconsistent head shapes (weights {d}x{k}, {len(head.labels)} labels)")
        return head

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities N x K in numpy: what the served graph computes (training checks the graph against it)."""
        z = self.logits(features)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def embedding_graph(base: onnx.ModelProto, side: int) -> onnx.ModelProto:
    """The classifier cut to its mean-pooled last activation: input N x 3 x side x side -> `embedding` N x D."""
    model = feature_graph(base, (last_activation(base),), side, with_std=False)
    graph = model.graph
    graph.node.append(helper.make_node("Identity", [FEATURES], [EMBEDDING]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["N", None]))
    onnx.checker.check_model(model)
    return model


def classifier_graph(base: onnx.ModelProto, head: ClassifierHead, side: int, probs: str) -> onnx.ModelProto:
    """Embedding + the trained head: input N x 3 x side x side -> `probs` N x K (softmax)."""
    model = feature_graph(base, (last_activation(base),), side, with_std=False)
    graph = model.graph
    inv = (1.0 / head.scale).astype(np.float32)
    # (x - mean) * inv @ W + b  ==  x @ (inv * W) + (b - (mean * inv) @ W): standardisation folded into the weights
    folded = (inv[:, None] * head.weights).astype(np.float32)
    bias = (head.bias - (head.mean * inv) @ head.weights).astype(np.float32)
    graph.initializer.extend(
        [numpy_helper.from_array(folded, "head_weights"), numpy_helper.from_array(bias, "head_bias")]
    )
    graph.node.extend(
        [
            helper.make_node("Gemm", [FEATURES, "head_weights", "head_bias"], ["head_logits"]),
            helper.make_node("Softmax", ["head_logits"], [probs], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(probs, TensorProto.FLOAT, ["N", len(head.labels)]))
    onnx.checker.check_model(model)
    return model
