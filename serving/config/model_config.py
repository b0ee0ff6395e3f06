"""Schema of `models/<name>/config.yaml`: one model, one folder (the Triton model-repository idea).

Every field carries a description; `batching` is the only block that may change at runtime (Ray Serve
`user_config` -> `reconfigure`), everything else needs a redeploy.
"""

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.preprocess import PreprocessSpec

BackendName = Literal["tensorrt", "torch", "onnxruntime"]
TensorDType = Literal["FP32", "FP16", "UINT8", "INT64", "BYTES"]
# (height, width) in pixels: an image has at least one of each (0 or a negative size fails every request in PIL)
PixelSize = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str = Field(description="Tensor name the model graph expects (e.g. 'input').")
    layout: Literal["NCHW", "NHWC"] = Field(description="Memory layout of the image tensor, batch axis first.")
    dtype: Literal["FP32", "FP16", "UINT8"] = Field(description="Element type, in Open Inference Protocol names.")
    size: PixelSize = Field(description="Spatial size (height, width) of one image.")
    channels: Literal[1, 3] = Field(default=3, description="Colour channels (RGB order when 3).")

    @property
    def numpy_dtype(self) -> np.dtype:
        """The element type as numpy names it."""
        return np.dtype({"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}[self.dtype])

    @property
    def shape(self) -> list[int]:
        """Per-image shape without the batch axis."""
        h, w = self.size
        return [self.channels, h, w] if self.layout == "NCHW" else [h, w, self.channels]


class ResizeSpec(_Strict):
    policy: Literal["shorter_side", "exact", "none"] = Field(
        description="'shorter_side' scales so the shorter side equals size[0] keeping aspect; 'exact' to (h, w)."
    )
    size: PixelSize = Field(description="Target (height, width); shorter_side uses only the first value.")
    interpolation: Literal["bilinear", "bicubic", "nearest", "area"] = Field(
        default="bilinear", description="Resampling filter (Pillow semantics: antialiased when shrinking)."
    )


class PreprocessingConfig(_Strict):
    resize: ResizeSpec = Field(description="Resize applied to the upright (EXIF-oriented) RGB image.")
    crop: PixelSize | None = Field(default=None, description="Centre crop (height, width) after resize.")
    scale: float = Field(default=1.0, gt=0, description="Pixels (0..255) are multiplied by this first.")
    mean: tuple[float, float, float] = Field(default=(0.0, 0.0, 0.0), description="Subtracted per RGB channel.")
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = Field(
        default=(1.0, 1.0, 1.0), description="Divisor per RGB channel (0 would make every value inf or NaN)."
    )


class OutputSpec(_Strict):
    name: str = Field(description="Output tensor name in the model graph.")
    dtype: TensorDType = Field(default="FP32", description="Element type.")
    shape: list[int] = Field(description="Per-image shape without the batch axis.")
    kind: Literal["probabilities", "logits", "raw"] = Field(
        default="raw", description="'probabilities' are used as scores; 'logits' get a softmax for top-k."
    )

    @model_validator(mode="after")
    def _scores_are_numbers(self) -> "OutputSpec":
        """Probabilities and logits are ranked: a BYTES one was a 500 at every classification."""
        if self.kind != "raw" and self.dtype == "BYTES":
            raise ValueError(f"output '{self.name}' is {self.kind}: its dtype must be numeric, not BYTES")
        return self


class BatchingConfig(_Strict):
    """Dynamic batching (`serving.stages.batching.BatchQueue`), runtime-adjustable via the deployment's user_config."""

    max_batch_size: int = Field(default=16, ge=1, le=1024, description="Largest batch handed to the backend.")
    batch_wait_timeout_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="How long the first request of a batch waits for company."
    )
    max_concurrent_batches: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Batches run at once (Triton's instance count, Ray Serve's max_concurrent_batches). On CPU, "
        "ONNX Runtime then gives each run its share of the CPUs (intra-op threads = CPUs / this, at least 1): an INT8 "
        "MobileNetV2 image costs 3.45 CPU-ms on one thread, 3.7-4.3 on two (2-core AMD EPYC).",
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        description="Sizes the backend runs best at; TensorRT builds its optimisation profile around the largest.",
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> "BatchingConfig":
        too_big = [s for s in self.preferred_batch_sizes if s < 1 or s > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} must lie in 1..max_batch_size ({self.max_batch_size})")
        return self


class WeightsSpec(_Strict):
    file: str = Field(description="File name looked up in the weights directory (IMGSERVE_WEIGHTS_DIR).")
    format: Literal["onnx", "torchscript", "torchvision_state_dict", "feature_head", "embedding", "classifier_head"] = (
        Field(
            description="What the file holds; decides which backends can load it directly. 'feature_head': linear "
            "heads on another model's pooled activations (serving.feature_head), grafted into one ONNX graph at build "
            "time. 'embedding': a classifier's ONNX file, served cut to its pooled penultimate layer. "
            "'classifier_head': a softmax layer trained on the `base` model's embedding (serving.trained_head)."
        )
    )
    sha256: str = Field(
        description="Hex sha256 of the file. A prefix of at least 8 digits is accepted where the publisher only "
        "gives one (torchvision names its files with the first 8)."
    )
    source_url: str | None = Field(default=None, description="Public place to download the file from, if any.")
    committed: bool = Field(
        default=False, description="True when the project trained the weights itself and keeps them in the folder."
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.lower()
        if len(value) < 8 or len(value) > 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("sha256 must be 8 to 64 hex digits")
        return value


class ExportConfig(_Strict):
    source: Literal["torchvision", "feature_head", "classifier_head"] = Field(
        description="torchvision: the architecture comes from torchvision; feature_head: the head file is grafted "
        "onto the `base` model's ONNX graph (serving.feature_head)."
    )
    architecture: str = Field(
        default="", description="Constructor name, e.g. 'resnet50' for torchvision.models.resnet50 (torchvision)."
    )
    base: str = Field(default="", description="The repository model whose ONNX graph carries the head (feature_head).")
    opset: int = Field(default=17, description="ONNX opset for the export.")

    @model_validator(mode="after")
    def _source_fields(self) -> "ExportConfig":
        if self.source == "torchvision" and not self.architecture:
            raise ValueError("a torchvision export needs `architecture`")
        if self.source in ("feature_head", "classifier_head") and not self.base:
            raise ValueError(f"a {self.source} export needs `base` (the model whose graph carries the head)")
        return self


class CalibrationData(_Strict):
    folder: str = Field(description="Photos to calibrate activation ranges on, relative to IMGSERVE_DATA_DIR.")
    images: int = Field(default=300, ge=8, le=10_000, description="How many (a fixed, seeded sample of the folder).")


class AccuracyCheck(_Strict):
    folder: str = Field(
        description="Labelled photos, relative to IMGSERVE_DATA_DIR: a file named '<class id>_...' has that class."
    )
    class_ids: str = Field(
        description="File in the model's weights folder listing the class ids, one per line, in output order."
    )
    first_index: int = Field(default=0, ge=0, description="Output index of the file's first class (1 with background).")


class Int8Config(_Strict):
    """Static INT8 quantisation of the float ONNX (QDQ, uint8 activations, int8 per-channel weights, MinMax)."""

    serve: bool = Field(
        default=True,
        description="Serve the INT8 variant on CPU when it is built and passed its check; false serves float.",
    )
    calibration: CalibrationData = Field(description="Photos the activation ranges come from (not the check's).")
    accuracy: AccuracyCheck = Field(description="The photos top-1 is checked on, float against INT8.")
    min_top1_ratio: float = Field(
        default=0.99, gt=0, le=1, description="INT8 top-1 must be at least this share of float's (MLPerf: 0.99)."
    )
    uint8_weight_convs: int = Field(
        default=0,
        ge=0,
        description="The first N Conv nodes in graph order get uint8 weights instead of int8. On x86 without VNNI, "
        "ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits (VPMADDUBSW), which saturates where "
        "inputs are large (a network's stem sees the whole pixel range); uint8 x uint8 kernels do not saturate.",
    )


class ModelConfig(_Strict):
    """One servable model: what it takes, how to feed it, how to batch and run it, where its weights are."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", description="Model name used in URLs and metrics.")
    version: str = Field(default="1", description="Model version string reported in metadata.")
    task: Literal["classification", "quality", "embedding"] = Field(description="What the outputs mean.")
    description: str = Field(default="", description="One line for humans.")
    input: InputSpec = Field(description="The image tensor the model takes.")
    preprocessing: PreprocessingConfig = Field(description="Pixels -> tensor, applied by the decode stage.")
    outputs: list[OutputSpec] = Field(min_length=1, description="Output tensors; the first is the primary one.")
    labels: str | None = Field(default=None, description="Labels file in the model folder, one line per index.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Dynamic batching parameters.")
    backends: list[BackendName] = Field(
        min_length=1, description="Backends in order of preference; the first one available on the replica wins."
    )
    weights: WeightsSpec = Field(description="The weights file and how to verify it.")
    export: ExportConfig | None = Field(default=None, description="Build-time export to ONNX (torchvision models).")
    int8: Int8Config | None = Field(
        default=None,
        description="An INT8 variant built from the float ONNX by `imgserve models prepare` and served on CPU when "
        "it passed its accuracy check (serving.quantize).",
    )

    @model_validator(mode="after")
    def _crop_matches_input(self) -> "ModelConfig":
        resize, crop = self.preprocessing.resize, self.preprocessing.crop
        if crop is None and resize.policy != "exact":
            raise ValueError("preprocessing must fix the input size: give a crop or an 'exact' resize")
        if crop is not None and resize.policy == "shorter_side" and min(crop) > resize.size[0]:
            raise ValueError(f"crop {tuple(crop)} is larger than the shorter side after resize ({resize.size[0]})")
        if crop is not None and resize.policy == "exact" and (crop[0] > resize.size[0] or crop[1] > resize.size[1]):
            raise ValueError(f"crop {tuple(crop)} is larger than the resized image {tuple(resize.size)}")
        produced = crop or resize.size
        if tuple(produced) != tuple(self.input.size):
            raise ValueError(f"preprocessing produces {tuple(produced)} but input.size is {tuple(self.input.size)}")
        return self

    @model_validator(mode="after")
    def _uint8_input_takes_pixels_as_they_are(self) -> "ModelConfig":
        """A UINT8 input gets the pixels themselves (0..255): a `scale`, `mean` or `std` was ignored without a word
        (the model loaded READY and answered as before); normalise inside the graph, or take an FP32 input."""
        p = self.preprocessing
        if self.input.dtype == "UINT8" and (p.scale != 1.0 or any(p.mean) or any(v != 1.0 for v in p.std)):
            raise ValueError(
                "input dtype UINT8 takes the pixels as they are (0..255): leave preprocessing scale, mean and std at "
                "their defaults (1, 0, 1), normalise in the graph, or declare an FP32 input"
            )
        return self

    def preprocess_spec(self) -> PreprocessSpec:
        """The decode stage's view of this model."""
        p = self.preprocessing
        dtype = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8"}[self.input.dtype]
        return PreprocessSpec(
            resize_policy=p.resize.policy,
            resize_size=p.resize.size,
            crop_size=p.crop,
            interpolation=p.resize.interpolation,
            scale=p.scale,
            mean=p.mean,
            std=p.std,
            layout=self.input.layout,
            dtype=dtype,  # type: ignore[arg-type]
        )


def load_model_config(path: Path) -> ModelConfig:
    """Parse and validate one `config.yaml`; errors name the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return ModelConfig.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
