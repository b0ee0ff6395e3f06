"""The quality stage: classical metrics of the decode stage's working image (`pipelines.quality`)."""

import time

from pipelines.decode import DecodedImage
from pipelines.quality import QualityMetrics, compute_metrics
from serving.access_log import record_stages
from serving.metrics import STAGE_LATENCY


class QualityStage:
    def metrics(self, decoded: DecodedImage) -> QualityMetrics:
        """Sharpness, exposure, noise, colour, ... of one image decoded with a working image."""
        if decoded.working is None:
            raise ValueError("the image was decoded without a working image for the quality stage")
        start = time.perf_counter()
        metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("quality", "").observe(elapsed)
        record_stages({"quality": elapsed * 1000.0})  # the request's access-log line (in its own replica only)
        return metrics
