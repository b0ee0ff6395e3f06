"""The decode stage: encoded bytes in, a small model-ready tensor out. Full-size pixels never leave it."""

import asyncio
import dataclasses
import time

import cv2
from ray import serve

from pipelines.analysis_decode import AnalysisImage, decode_for_analysis
from pipelines.decode import DecodedImage, DecoderName, decode_for_model
from pipelines.quality.working_image import WORKING_MAX_SIDE
from serving.config.settings import ServerSettings
from serving.metrics import STAGE_LATENCY
from serving.repository import ModelRepository


class Decoder:
    def __init__(self, decoder: DecoderName = "pillow", reduced_decode: bool = True, opencv_threads: int = 1):
        settings = ServerSettings.from_env()
        repo = ModelRepository.scan(settings, check_backends=False)
        self.specs = {name: entry.config.preprocess_spec() for name, entry in repo.entries.items()}
        self.limits = settings.decode_limits()
        self.decoder: DecoderName = decoder
        self.reduced = reduced_decode
        cv2.setNumThreads(opencv_threads)  # replicas share cores: no hidden thread pools

    def _decode(self, data: bytes, model: str) -> DecodedImage:
        start = time.perf_counter()
        decoded = decode_for_model(data, self.specs[model], self.limits, self.decoder, self.reduced)
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("decode", model).observe(elapsed)
        return dataclasses.replace(decoded, decode_ms=elapsed * 1000.0)

    def _decode_analysis(self, data: bytes, models: list[str], working: bool) -> AnalysisImage:
        start = time.perf_counter()
        specs = {name: self.specs[name] for name in models}
        decoded = decode_for_analysis(
            data, specs, self.limits, WORKING_MAX_SIDE if working else None, self.decoder, self.reduced
        )
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("decode", ",".join(models)).observe(elapsed)
        return dataclasses.replace(decoded, decode_ms=elapsed * 1000.0)

    async def decode_analysis(self, data: bytes, models: list[str], working: bool) -> AnalysisImage:
        """One decode for several models and (optionally) the quality stage's working image."""
        return await asyncio.to_thread(self._decode_analysis, data, models, working)

    async def decode(self, data: bytes, model: str) -> DecodedImage:
        """Decode for `model`'s preprocessing; raises `ImageInputError` subclasses on bad input."""
        # Pillow and libjpeg release the GIL while decoding: a worker thread lets two decodes overlap.
        return await asyncio.to_thread(self._decode, data, model)


# The class stays importable under its own name so Ray pickles it by reference, not by value.
DecoderDeployment = serve.deployment(name="Decoder", max_ongoing_requests=16)(Decoder)
