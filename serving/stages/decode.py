"""The decode stage: encoded bytes in, exactly what the planned consumers need out (`pipelines.decode`)."""

import cv2

from pipelines.decode import DecodedImage, decode_image
from pipelines.preprocess import PreprocessSpec
from pipelines.quality.thresholds import default_thresholds
from serving.metrics import STAGE_LATENCY, decode_model_label
from serving.stages.settings import StageSettings


class DecodeStage:
    def __init__(self, settings: StageSettings, opencv_threads: int = 1):
        self.specs: dict[str, PreprocessSpec] = {n: e.config.preprocess_spec() for n, e in settings.models.items()}
        self.limits = settings.limits
        self.working_max_side = (settings.thresholds or default_thresholds()).working_max_side
        self.decoder = settings.decoder
        self.reduced = settings.reduced_decode
        cv2.setNumThreads(opencv_threads)  # stages share cores: no hidden thread pools

    def decode(
        self, data: bytes, models: tuple[str, ...], working: bool, specs: dict[str, PreprocessSpec] | None = None
    ) -> DecodedImage:
        """One decode for `models` (a tensor each) and, when `working`, the quality stage's working image. `specs`:
        the models' preprocessing as the caller's model stages have it (a version swapped in meanwhile may have
        another input size); by default the stage's current ones."""
        decoded = decode_image(
            data,
            specs if specs is not None else {name: self.specs[name] for name in models},
            self.limits,
            self.working_max_side if working else None,
            self.decoder,
            self.reduced,
        )
        STAGE_LATENCY.labels("decode", decode_model_label(models)).observe(decoded.decode_ms / 1000.0)
        return decoded
