"""Quality features from the served classifier: the mean and standard deviation of seven of MobileNetV2's
activation maps (from the first blocks, which see noise, blur and compression, to the last, which sees content),
at the photo's own resolution instead of the classifier's 224x224.

The classifier's ONNX file (../shared/models, third-party; found and verified through the model repository) is
rewritten in memory: the input's height and width
become free (every layer before the final pooling is convolutional) and the chosen activations become the
outputs; nothing is written to disk.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from serving.config.model_entry import ModelEntry
from serving.repository import ModelRepository

CLASSIFIER = "mobilenet_v2_imagenet"
# Indices among the network's 35 Relu6 (Clip) outputs: blocks 1, 2, 4, 7, 11, 15 and the last 1x1 conv.
LAYERS = (1, 4, 8, 14, 22, 30, 34)


def classifier() -> ModelEntry:
    """The served classifier's repository entry: its weights located and verified as the server does."""
    return ModelRepository.scan(check_backends=False).get(CLASSIFIER)


def feature_session(model: Path, threads: int = 1) -> ort.InferenceSession:
    """An ORT session of the classifier that takes any H x W and returns the LAYERS activations."""
    graph_model = onnx.load(str(model))
    shape = graph_model.graph.input[0].type.tensor_type.shape
    for axis, name in ((2, "H"), (3, "W")):
        shape.dim[axis].ClearField("dim_value")
        shape.dim[axis].dim_param = name
    activations = [node.output[0] for node in graph_model.graph.node if node.op_type == "Clip"]
    last = next(i for i, node in enumerate(graph_model.graph.node) if node.output[0] == activations[LAYERS[-1]])
    del graph_model.graph.node[last + 1 :]  # the classifier's pooling and head: fixed to 7x7 maps, not needed
    del graph_model.graph.output[:]
    for index in LAYERS:
        info = onnx.helper.make_tensor_value_info(activations[index], onnx.TensorProto.FLOAT, None)
        graph_model.graph.output.append(info)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the free H x W makes ORT warn about the declared intermediate shapes
    return ort.InferenceSession(graph_model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def photo_tensor(entry: ModelEntry, path: Path, side: int | None) -> np.ndarray:
    """1 x 3 x H x W, normalised as `entry`'s config says; `side`: resized to side x side first (None: as is)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if side:
            rgb = rgb.resize((side, side), Image.Resampling.BILINEAR)
        pixels = np.asarray(rgb, dtype=np.float32)
    p = entry.config.preprocessing
    normalised = (pixels * p.scale - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    return normalised.astype(np.float32).transpose(2, 0, 1)[None]


def pooled(outputs: Iterable[np.ndarray]) -> np.ndarray:
    """Per channel mean and standard deviation of each activation map, concatenated (one image)."""
    parts = []
    for activation in outputs:
        flat = activation[0].reshape(activation.shape[1], -1)
        parts.extend((flat.mean(axis=1), flat.std(axis=1)))
    return np.concatenate(parts).astype(np.float32)


def photo_features(
    entry: ModelEntry, session: ort.InferenceSession, paths: Iterable[Path], side: int | None
) -> Iterator[np.ndarray]:
    for path in paths:
        yield pooled(session.run(None, {entry.config.input.name: photo_tensor(entry, path, side)}))
