"""The service layer: one implementation of every operation, called by the HTTP routes, gRPC and batch jobs.

An image request is encoded bytes plus the stages the client wants; `classify` is `analyze` with
{classification}, `extract_metadata` is `analyze` with {metadata}. Each image becomes one `StagePlan` for the
pipeline (whatever its placement), and its `StageOutputs` become one typed `Analysis`.
"""

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.metadata.anonymize import anonymize_metadata
from pipelines.quality import LearnedQuality, QualityReport, Thresholds, learned_quality, quality_verdict
from serving.access_log import record_stages
from serving.admission import REPLICA_LIMIT
from serving.errors import BadRequestError, InvalidTensorError, ModelUnavailableError, RequestTooLargeError
from serving.metrics import MODEL_VERSION_REQUESTS, model_label
from serving.postprocess import Prediction, scores_from_output, top_k
from serving.quality_metrics import record_quality
from serving.refunds import refunded_on_server_error
from serving.repository import ModelEntry, ModelRepository, UnknownModelError
from serving.requests import ImageOptions
from serving.stages.concurrency import gather_all_or_cancel, gather_or_raise
from serving.stages.pipeline import ImagePipeline, ModelResult, StageOutputs, StagePlan, held_stages

IMAGE_MODEL_NAME = "classify"  # OIP model whose input is a BYTES tensor of encoded images
QUALITY_MODEL = "quality_mos"  # the learned quality model (models/quality_mos), when served
ANALYSIS_FIELDS = ("classification", "quality", "anomaly", "metadata")


@dataclass(frozen=True)
class Classification:
    """Top-k for one image."""

    model: str
    predictions: list[Prediction]
    timing_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)  # decode, queue, model
    model_version: str = ""  # the version that answered (a canary split sends some requests to another)


@dataclass(frozen=True)
class Analysis:
    """Everything the selected stages say about one image; a stage that was not asked for is None."""

    classification: Classification | None = None
    quality: QualityReport | None = None
    anomaly: LearnedQuality | None = None
    metadata: dict[str, Any] | None = None  # pipelines.metadata.ImageMetadata.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The stages that ran, as JSON-ready values (what HTTP, gRPC and batch results carry)."""
        out: dict[str, Any] = {}
        if self.classification is not None:
            c = self.classification
            predictions = [{"label": p.label, "index": p.index, "score": p.score} for p in c.predictions]
            out["classification"] = {
                "model": c.model,
                "model_version": c.model_version,
                "predictions": predictions,
                "timing_ms": c.timing_ms,
                "stage_ms": c.stage_ms,
            }
        if self.quality is not None:
            out["quality"] = self.quality.to_dict()
        if self.anomaly is not None:
            out["anomaly"] = self.anomaly.to_dict()
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out


@dataclass(frozen=True)
class HeldModels:
    """What one image request runs on, taken in one step with its routing (`InferenceService._hold`): the classifier
    version that answers, the learned quality model's version, and the stages as they were then. A promotion, reload
    or unload while the request waits changes none of them, so an answer's version, labels and scores are one
    version's."""

    entry: ModelEntry  # the routed classifier version (the default model's when not classifying)
    quality: ModelEntry | None  # the served `quality_mos`, if any
    pipeline: ImagePipeline


class InferenceService:
    def __init__(
        self,
        repository: ModelRepository,
        pipeline: ImagePipeline,
        default_model: str,
        max_images_per_request: int = 256,
        thresholds: Thresholds | None = None,
    ):
        self.repository = repository
        self.pipeline = pipeline
        self.default_model = default_model
        self.max_images_per_request = max_images_per_request
        self.thresholds = thresholds
        self._backend_info: dict[str, dict[str, Any]] = {}
        self._canary_credit: dict[str, float] = {}
        # Model control: one load or unload at a time, and each model folder's state (serving.model_poll.FolderState,
        # or None: no folder) when this replica last loaded, unloaded or tried to load it; the poll loop acts on
        # folders whose state differs.
        self.model_lock = asyncio.Lock()
        self.model_states: dict[str, Any] = {}
        # The replica's SecurityGate (serving.security.gate), set by the ingress: charges images to the caller's
        # daily quota and says whether its tenant forces anonymised metadata. None: no quotas.
        self.gate: Any = None

    # ---- models -------------------------------------------------------------------------------------
    def loaded_entry(self, name: str, version: str | None = None) -> ModelEntry:
        """The loaded version of `name` (its canary version's when `version` names it); 404 (`UnknownModelError`)
        for an unknown or unloaded model, or a version of it that is neither."""
        entry = self.repository.get(name)
        canary = self.repository.canaries.get(entry.name)
        if version and canary is not None and version == canary[0].version:
            return canary[0]
        if version and version != entry.version:
            loaded = entry.version + (f", canary {canary[0].version}" if canary is not None else "")
            raise UnknownModelError(f"model '{entry.name}' version {version} is not loaded (loaded: {loaded})")
        return entry

    def served_entry(self, name: str | None, version: str = "") -> ModelEntry:
        """`loaded_entry` of a model this pipeline runs (the default model when `name` is None); 503 if it is known
        but not servable here."""
        entry = self.loaded_entry(name or self.default_model, version)
        if entry.key not in self.pipeline.model_names:
            reason = entry.unavailable_reason or "not deployed in this application"
            raise ModelUnavailableError(f"model '{entry.name}' is not available: {reason}")
        return entry

    def routed_entry(self, name: str | None, version: str = "") -> ModelEntry:
        """The version that answers this inference request: the one asked for, else the canary version on its
        share of the model's requests (a deterministic interleave: exactly `percent` of every 100/percent requests),
        else the served version. Counted per version (`imgserve_model_version_requests_total`)."""
        entry = self.served_entry(name, version)
        canary = self.repository.canaries.get(entry.name)
        if not version and canary is not None and self._canary_turn(entry.name, canary[1]):
            entry = canary[0]
        MODEL_VERSION_REQUESTS.labels(model_label(entry.name), entry.version).inc()
        return entry

    def _canary_turn(self, name: str, percent: float) -> bool:
        credit = self._canary_credit.get(name, 0.0) + percent
        turn = credit >= 100.0
        self._canary_credit[name] = credit - 100.0 if turn else credit
        return turn

    def check_loaded(self, name: str, version: str | None = None) -> None:
        """404 (`UnknownModelError`) for an unknown or unloaded model, or a version of it other than the loaded one;
        the image-level model `classify` is always there, as version 1."""
        if name != IMAGE_MODEL_NAME:
            self.loaded_entry(name, version)
        elif version not in (None, "", "1"):
            raise UnknownModelError(f"model '{name}' version {version} is not loaded (loaded: 1)")

    def forget_backend_info(self, name: str) -> None:
        """After a model is loaded or unloaded: its backend report is asked for again."""
        self._backend_info.pop(name, None)

    async def backend_info(self, name: str) -> dict[str, Any]:
        """The model stage's backend report (cached: it does not change for a replica set)."""
        if name not in self._backend_info:
            self._backend_info[name] = await self.pipeline.model_info(name)
        return self._backend_info[name]

    async def model_ready(self, name: str) -> bool:
        target = self.default_model if name == IMAGE_MODEL_NAME else self.repository.get(name).name
        if target not in self.pipeline.model_names:
            return False
        try:
            await asyncio.wait_for(self.backend_info(target), timeout=5)
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False
        return True

    async def server_ready(self) -> bool:
        served = [name for name in self.pipeline.model_names if name in self.repository.entries]  # not canary keys
        results = await asyncio.gather(*(self.model_ready(name) for name in served))
        return bool(results) and all(results)

    # ---- images -------------------------------------------------------------------------------------
    @property
    def available_fields(self) -> tuple[str, ...]:
        """Analysis stages this application runs."""
        deployed = {
            "classification": True,
            "quality": self.pipeline.has_quality,
            "anomaly": QUALITY_MODEL in self.pipeline.model_names,
            "metadata": self.pipeline.has_metadata,
        }
        return tuple(f for f in ANALYSIS_FIELDS if deployed[f])

    def analysis_fields(self, fields: list[str] | None) -> tuple[str, ...]:
        """The stages to run: all available when none are named; unknown names are a 400."""
        available = self.available_fields
        names = [name.strip() for item in fields or [] for name in item.split(",") if name.strip()]
        if not names:
            return available
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise BadRequestError(f"unknown analysis fields {unknown}; available: {', '.join(available)}")
        return tuple(f for f in available if f in names)

    def _check_image_count(self, images: list[bytes]) -> None:
        if not images:
            raise BadRequestError(
                "no image in the request (HTTP: a raw image body or multipart field 'image'; gRPC: `images`)"
            )
        if len(images) > self.max_images_per_request:
            raise RequestTooLargeError(
                f"{len(images)} images in one request; the limit is {self.max_images_per_request}"
            )

    def _hold(self, entry: ModelEntry) -> HeldModels:
        """`HeldModels` for a request just routed to `entry`: call it with no await since the routing."""
        quality = self.repository.entries.get(QUALITY_MODEL)
        held = [entry, *([quality] if quality is not None else [])]
        return HeldModels(entry, quality, held_stages(self.pipeline, held))

    @staticmethod
    def _plan(selected: tuple[str, ...], held: HeldModels) -> StagePlan:
        return stage_plan(selected, held.entry.key, held.pipeline.model_names)

    async def analyze(
        self, images: list[bytes], options: ImageOptions | None = None, count_quality: bool = True
    ) -> list[Analysis]:
        """The selected stages per image, run concurrently, in request order. A bad image fails the request
        with its index. `count_quality`: the verdicts go into the quality metrics once answered (a batch job counts
        its item's itself, once its result is recorded: the item can still fail after its analysis)."""
        options = options or ImageOptions()
        selected = self.analysis_fields(options.fields)
        version = options.model_version or ""
        classifying = "classification" in selected  # only requests the model answers take part in a canary split
        entry = self.routed_entry(options.model, version) if classifying else self.served_entry(options.model, version)
        if classifying and entry.config.task != "classification":
            raise BadRequestError(f"model '{entry.name}' is not a classifier (its task is {entry.config.task})")
        self._check_image_count(images)
        held = self._hold(entry)  # before the first await: a model swapped from here on does not answer this request
        if await self.charge(len(images), options.anonymize if "metadata" in selected else None):
            options = options.model_copy(update={"anonymize": True})
        plan = self._plan(selected, held)
        if len(images) > 1:
            REPLICA_LIMIT.waive_queue_budget()
        calls = [self._analyze_one(data, plan, selected, held, options) for data in images]
        async with refunded_on_server_error(self, len(images)):
            analyses: list[Analysis] = await gather_or_raise(calls, note_index=True)
        for analysis in analyses if count_quality else ():  # once answered (a failed request's are sent again)
            if analysis.quality is not None:
                record_quality(analysis.quality, self.thresholds)
        return analyses

    async def _analyze_one(
        self, data: bytes, plan: StagePlan, selected: tuple[str, ...], held: HeldModels, options: ImageOptions
    ) -> Analysis:
        start = time.perf_counter()
        outputs = await held.pipeline.run(data, plan)
        return analysis_from_outputs(
            outputs, self.repository, self.thresholds, selected, held.entry, options, start, held.quality
        )

    async def classify(self, images: list[bytes], options: ImageOptions | None = None) -> list[Classification]:
        """Top-k per image, in request order: `analyze` with the classification stage alone."""
        options = (options or ImageOptions()).model_copy(update={"fields": ["classification"]})
        return [a.classification for a in await self.analyze(images, options)]  # type: ignore[misc]

    async def extract_metadata(self, images: list[bytes], anonymize: bool = False) -> list[dict[str, Any]]:
        """Metadata per image, in request order: `analyze` with the metadata stage alone."""
        if not self.pipeline.has_metadata:
            raise ModelUnavailableError("the metadata stage is not deployed in this application")
        analyses = await self.analyze(images, ImageOptions(fields=["metadata"], anonymize=anonymize))
        return [a.metadata for a in analyses]  # type: ignore[misc]

    async def charge(self, images: int, anonymize: bool | None = None) -> bool:
        """Charge `images` to the caller's quotas (429 past one). Returns whether the results must be anonymised:
        as asked (`anonymize`), or because the caller's tenant forces it; None: nothing in this request to anonymise."""
        if self.gate is None:
            return bool(anonymize)
        await self.gate.charge_images(images)
        if anonymize is None:
            return False
        return anonymize or await self.gate.anonymize_forced()

    async def refund_failed(self, images: int, error: BaseException) -> None:
        """Give back what `charge` counted when the work then failed on the server's side (a 5xx; a client error keeps
        the charge: serving.security.gate `refund_failed`)."""
        if self.gate is not None:
            await self.gate.refund_failed(images, error)

    async def assess_quality(self, data: bytes) -> QualityReport:
        """The quality verdict of one image (classical metrics and, when served, the learned model), not charged
        to the caller's quota nor counted in the quality series: image operations ask it before and after their
        work (the series are what callers' images are like, not the server's own outputs)."""
        if not self.pipeline.has_quality:
            raise ModelUnavailableError("the quality stage is not deployed in this application")
        held = self._hold(self.repository.get(self.default_model))
        analysis = await self._analyze_one(data, self._plan(("quality",), held), ("quality",), held, ImageOptions())
        return analysis.quality  # type: ignore[return-value]

    # ---- tensors (Open Inference Protocol) ----------------------------------------------------------
    async def infer_tensor(self, model: str, batch: np.ndarray, version: str = "") -> dict[str, np.ndarray]:
        """A client-batched tensor for `model` (routed: `routed_entry`)."""
        return await self.infer_on(self.routed_entry(model, version), batch)

    async def infer_on(self, entry: ModelEntry, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A client-batched tensor on one routed version: each row joins its dynamic batches, results re-stacked.
        Route `entry` with no await before this call: a version swapped out in between is a 503 to retry."""
        expected = entry.config.input.shape
        if batch.ndim != len(expected) + 1:
            raise InvalidTensorError(
                f"input for '{entry.name}' must have shape [batch, {', '.join(map(str, expected))}], "
                f"got {list(batch.shape)}"
            )
        if batch.shape[0] == 0:
            raise InvalidTensorError("input has an empty batch")
        if batch.shape[0] > self.max_images_per_request:
            raise RequestTooLargeError(f"batch of {batch.shape[0]}; the limit is {self.max_images_per_request}")
        pipeline = held_stages(self.pipeline, [entry])  # as in `analyze`: the routed version runs every row
        await self.charge(int(batch.shape[0]))
        if batch.shape[0] > 1:
            REPLICA_LIMIT.waive_queue_budget()
        async with refunded_on_server_error(self, int(batch.shape[0])):
            rows: list[ModelResult] = await gather_all_or_cancel(
                [pipeline.infer_tensor(entry.key, np.ascontiguousarray(row)) for row in batch]
            )
        for row in rows:
            record_stages(row.stage_ms)
        return {spec.name: np.stack([row.outputs[spec.name] for row in rows]) for spec in entry.config.outputs}


def stage_plan(selected: tuple[str, ...], classifier: str, served: tuple[str, ...]) -> StagePlan:
    """What the stages must do for the `selected` analysis fields: the classifier, the learned quality model when
    it is served, the quality metrics, the metadata."""
    learned = ("quality" in selected or "anomaly" in selected) and QUALITY_MODEL in served
    models = ([classifier] if "classification" in selected else []) + ([QUALITY_MODEL] if learned else [])
    return StagePlan(tuple(dict.fromkeys(models)), "quality" in selected, "metadata" in selected)


def analysis_from_outputs(
    outputs: StageOutputs,
    repository: ModelRepository,
    thresholds: Thresholds | None,
    selected: tuple[str, ...],
    entry: ModelEntry,
    options: ImageOptions,
    start: float,
    quality_entry: ModelEntry | None = None,
) -> Analysis:
    """One image's `Analysis` from what its stages said: top-k, the learned quality, the verdict, (anonymised)
    metadata. Shared by the service (every placement) and collection analysis on Ray Data. `quality_entry`: the
    `quality_mos` version that ran (default: the repository's)."""
    if outputs.decode_ms is not None:  # the access log's stage_ms whatever ran (the classifier's result adds its own)
        record_stages({"decode": outputs.decode_ms})
    classification = None
    if "classification" in selected:
        classification = _classification(entry, outputs, options, start)
    learned = None
    if QUALITY_MODEL in outputs.models:
        record_stages({f"quality_{k}": ms for k, ms in outputs.models[QUALITY_MODEL].stage_ms.items()})
        quality_entry = quality_entry or repository.get(QUALITY_MODEL)
        learned = learned_quality(
            outputs.models[QUALITY_MODEL].outputs,
            quality_entry.labels,
            f"{QUALITY_MODEL}:{quality_entry.config.version}",
        )
    quality = None
    if outputs.quality is not None:
        quality = quality_verdict(outputs.quality, thresholds, learned)
    metadata = outputs.metadata
    if metadata is not None and options.anonymize:
        metadata = anonymize_metadata(metadata)
    return Analysis(classification, quality, learned if "anomaly" in selected else None, metadata)


def class_scores(entry: ModelEntry, outputs: StageOutputs) -> np.ndarray:
    """The classifier's per-class scores (probabilities) for one image."""
    spec = entry.config.outputs[0]
    return scores_from_output(outputs.models[entry.key].outputs[spec.name], spec)


def _classification(entry: ModelEntry, outputs: StageOutputs, options: ImageOptions, start: float) -> Classification:
    result = outputs.models[entry.key]
    predictions = top_k(class_scores(entry, outputs), entry.labels, options.top_k)
    predictions = [p for p in predictions if p.score >= options.confidence_threshold]
    stage_ms = {name: round(ms, 3) for name, ms in result.stage_ms.items()}
    if outputs.decode_ms is not None:
        stage_ms = {"decode": round(outputs.decode_ms, 3), **stage_ms}
    record_stages(stage_ms)
    elapsed_ms = round((time.perf_counter() - start) * 1000.0, 3)  # microseconds, as stage_ms
    return Classification(entry.name, predictions, elapsed_ms, stage_ms, entry.version)
