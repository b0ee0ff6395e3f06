"""The quality stage: classical metrics on the decode stage's working image, on its own CPU replicas."""

import asyncio
import time

import cv2
from ray import serve

from pipelines.analysis_decode import AnalysisImage
from pipelines.quality import QualityMetrics, compute_metrics
from serving.metrics import STAGE_LATENCY


class QualityAnalyzer:
    def __init__(self, opencv_threads: int = 1):
        cv2.setNumThreads(opencv_threads)  # replicas share cores: no hidden thread pools

    def _metrics(self, item: AnalysisImage) -> QualityMetrics:
        start = time.perf_counter()
        if item.working is None:
            raise ValueError("the decode stage sent no working image for the quality stage")
        metrics = compute_metrics(item.working, (item.width, item.height), item.native_gray)
        STAGE_LATENCY.labels("quality", "").observe(time.perf_counter() - start)
        return metrics

    async def metrics(self, item: AnalysisImage) -> QualityMetrics:
        """Classical metrics (sharpness, exposure, noise, colour, ...) of one decoded image."""
        return await asyncio.to_thread(self._metrics, item)


# The class stays importable under its own name so Ray pickles it by reference, not by value.
QualityDeployment = serve.deployment(name="Quality", max_ongoing_requests=8)(QualityAnalyzer)
