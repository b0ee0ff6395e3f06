"""Quality features from the served classifier: the mean and standard deviation of seven of MobileNetV2's
activation maps (from the first blocks, which see noise, blur and compression, to the last, which sees content),
at the photo's own resolution instead of the classifier's 224x224.

The classifier's ONNX file (../shared/models, third-party) is rewritten in memory: the input's height and width
become free (every layer before the final pooling is convolutional) and the chosen activations become the
outputs; nothing is written to disk.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from serving.config.settings import ServerSettings

# Indices among the network's 35 Relu6 (Clip) outputs: blocks 1, 2, 4, 7, 11, 15 and the last 1x1 conv.
LAYERS = (1, 4, 8, 14, 22, 30, 34)
MEAN, STD = 128.0, 128.0  # the classifier's own input normalisation (models/mobilenet_v2_imagenet/config.yaml)


def classifier_path(settings: ServerSettings | None = None) -> Path:
    settings = settings or ServerSettings.from_env()
    return settings.weights_dir / "mobilenet_v2_imagenet" / "mobilenet_v2_imagenet.onnx"


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


def photo_tensor(path: Path, side: int | None) -> np.ndarray:
    """1 x 3 x H x W, normalised as the classifier expects; `side`: resized to side x side first (None: as is)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if side:
            rgb = rgb.resize((side, side), Image.Resampling.BILINEAR)
        pixels = np.asarray(rgb, dtype=np.float32)
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)[None]


def pooled(outputs: Iterable[np.ndarray]) -> np.ndarray:
    """Per channel mean and standard deviation of each activation map, concatenated (one image)."""
    parts = []
    for activation in outputs:
        flat = activation[0].reshape(activation.shape[1], -1)
        parts.extend((flat.mean(axis=1), flat.std(axis=1)))
    return np.concatenate(parts).astype(np.float32)


def photo_features(session: ort.InferenceSession, paths: Iterable[Path], side: int | None) -> Iterator[np.ndarray]:
    for path in paths:
        yield pooled(session.run(None, {"input": photo_tensor(path, side)}))
