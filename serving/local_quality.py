"""The quality verdict in this process, for tools that run without a server (`imgserve enhance DIR --auto`).

The same steps as the served quality stage: `decode_image` with the learned model's preprocessing and the working
image, `compute_metrics`, the learned model (`quality_mos`, when its weights are servable here) through the
ONNX Runtime backend, then `quality_verdict`. Without the model the verdict is the classical one, as a server
without it answers.
"""

import threading

from pipelines.decode import decode_image
from pipelines.limits import DecodeLimits
from pipelines.quality import QualityReport, compute_metrics, learned_quality, quality_verdict
from pipelines.quality.thresholds import Thresholds, load_thresholds
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.config.model_entry import ModelEntry
from serving.repository import scan_for_one
from serving.service import QUALITY_MODEL


class LocalQuality:
    def __init__(self, limits: DecodeLimits, thresholds: Thresholds | None = None, threads: int = 1):
        self.limits = limits
        self.thresholds = thresholds or load_thresholds()
        self.model: tuple[ModelEntry, OnnxRuntimeBackend] | None = None
        entry = scan_for_one(QUALITY_MODEL)
        if entry.available:
            backend = OnnxRuntimeBackend(intra_op_threads=threads)
            backend.load(entry)
            self.model = (entry, backend)
        self._lock = threading.Lock()  # one inference at a time: the session is sized for one thread

    @property
    def uses_model(self) -> bool:
        return self.model is not None

    def verdict(self, data: bytes) -> QualityReport:
        specs = {QUALITY_MODEL: self.model[0].config.preprocess_spec()} if self.model else {}
        decoded = decode_image(data, specs, self.limits, self.thresholds.working_max_side)
        learned = None
        if self.model is not None:
            entry, backend = self.model
            with self._lock:
                out = backend.infer(decoded.tensors[QUALITY_MODEL][None])
            outputs = {name: values[0] for name, values in out.items()}
            learned = learned_quality(outputs, entry.labels, f"{QUALITY_MODEL}:{entry.config.version}")
        metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)  # type: ignore[arg-type]
        return quality_verdict(metrics, self.thresholds, learned)
