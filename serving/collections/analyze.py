"""Collection analysis on Ray Data: read and decode in tasks, models in an actor pool, records streamed to the store.

    list_sources (driver) -> from_items -> map_batches(prepare_batch)            CPU tasks: read, metadata, decode,
                                                                                quality metrics (the server's stages);
                                                                                --convert only: convert the file's
                                                                                bytes, write the output
                          -> map_batches(ModelRunner, concurrency=(1, N))       actors: the batched models, then the
                                                                                verdict and top-k (the server's code);
                                                                                --enhance: enhance (+ convert) after
                                                                                the verdict, write the output
                          -> iter_batches (driver) -> CollectionStore.add      each image recorded once, with its
                                                                                output's entry (sizes, ratio, steps)

The stages are the server's own (`DecodeStage`, `MetadataStage`, `QualityStage`, the model backends and
`analysis_from_outputs`), so a collection's records equal what `/v1/analyze` answers. Images already recorded in the
collection are not listed again (but those `--refresh` found changed since, `serving.collections.refresh`, which
replace their rows): an interrupted run is resumed by running the same command. `address` joins an existing Ray
cluster (`ray start --head` + workers); the files must then be readable from every node (a shared folder, or
`s3://` / `gs://`), and a local `--out` folder writable from every node.

Image operations (`serving.collections.operations`, batch jobs' options and code): a conversion alone runs in
`prepare_batch`, from the bytes it read anyway. Enhancement runs in `ModelRunner`, after the verdict: auto mode reads
the input's quality tags, and its "do no harm" rule scores the output with the quality stage and model the actor
already holds (a CPU stage after it would load the quality model again in every worker). Only the file's compressed
bytes travel from one stage to the other (re-decoded there, as `ImageOperations` does), never decoded pixels; Ray
Data fuses the two stages into the actors on one machine anyway. Outputs are written where they are made; only
their JSON entry reaches the driver.
"""

import dataclasses
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.collections.record import failed_record, record_from_document
from pipelines.errors import ImageInputError
from pipelines.quality import QualityReport
from serving.backends import load_backend
from serving.collections.operations import OutputPlan, make_output
from serving.collections.ray_session import init_ray, prepare_local_ray
from serving.collections.run_stats import RunStats
from serving.collections.sources import SourceItem, read_items
from serving.collections.store import CollectionStore, RecordedImage
from serving.config.app_args import AppArgs
from serving.errors import ServiceError, classify_error
from serving.jobs.errors import ItemInputError
from serving.jobs.serialize import analysis_document, to_jsonable
from serving.placement import compose
from serving.requests import ImageOptions
from serving.service import QUALITY_MODEL, analysis_from_outputs, class_scores, stage_plan
from serving.stages.decode import DecodeStage
from serving.stages.metadata import MetadataStage
from serving.stages.model import split_batch
from serving.stages.pipeline import ModelResult, StageOutputs, StagePlan
from serving.stages.quality import QualityStage
from serving.stages.settings import StageSettings

logger = logging.getLogger("imgserve.collections")
STAGES = ("classification", "quality", "metadata")
CLASS_PROBS = 16  # the classifier's highest probabilities kept per image: the feature space of outliers
# Images per task and per model call. 8 keeps ONNX Runtime's activation arena small (an actor plateaus at ~0.5 GB
# with batches of 8 and ~1.5 GB with 32, on mobilenet_v2 + quality_mos) at the same throughput on CPU.
READ_BATCH = 8
MODEL_BATCH = 8


@dataclass(frozen=True)
class AnalysisSetup:
    """What the Ray Data stages are built from (pickled to the workers): the server's stage settings, restricted to
    the models the plan runs."""

    stages: StageSettings
    plan: StagePlan
    selected: tuple[str, ...]
    classifier: str
    max_bytes: int
    anonymize: bool = False  # drop GPS and personal fields from the stored metadata (and the outputs')
    outputs: OutputPlan | None = None  # --convert / --enhance: what to write where

    @property
    def classifier_entry(self) -> Any:
        return self.stages.models[self.classifier]


def analysis_setup(
    selected: Sequence[str],
    model: str | None = None,
    ort_threads: int = 1,
    anonymize: bool = False,
    outputs: OutputPlan | None = None,
) -> AnalysisSetup:
    unknown = sorted(set(selected) - set(STAGES))
    if unknown or not selected:
        raise ValueError(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    args = AppArgs(
        default_model=model or AppArgs().default_model,
        ort_threads=ort_threads,
        quality="quality" in selected,
        metadata="metadata" in selected,
        batch_jobs=False,
    )
    config = compose(args)
    served = tuple(config.stages.models)
    fields = tuple(f for f in STAGES if f in selected)
    plan = stage_plan(fields, config.default_model, served)
    stages = dataclasses.replace(config.stages, models={n: config.stages.models[n] for n in plan.models})
    max_bytes = config.settings.decode_limits().max_bytes
    return AnalysisSetup(stages, plan, fields, config.default_model, max_bytes, anonymize, outputs)


_CPU_STAGES: dict[tuple[Any, ...], tuple[DecodeStage, MetadataStage | None, QualityStage | None]] = {}


def _cpu_stages(setup: AnalysisSetup) -> tuple[DecodeStage, MetadataStage | None, QualityStage | None]:
    """The CPU stages, made once per worker process (tasks of one run reuse the process)."""
    key = (setup.classifier, setup.plan, setup.selected)
    if key not in _CPU_STAGES:
        _CPU_STAGES[key] = (
            DecodeStage(setup.stages),
            MetadataStage(setup.stages.limits) if setup.plan.metadata else None,
            QualityStage() if setup.plan.quality else None,
        )
    return _CPU_STAGES[key]


def _input_shapes(setup: AnalysisSetup) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {
        name: (tuple(entry.config.input.shape), np.dtype(entry.config.input.numpy_dtype))
        for name, entry in setup.stages.models.items()
    }


def _error_text(exc: BaseException) -> str:
    """An image's error as its record keeps it: the service's kind and message for bad images; for a file that
    could not be read, what the OS or fsspec said (the paths are the caller's own)."""
    if isinstance(exc, (ServiceError, ImageInputError)):
        info = classify_error(exc)
        return f"{info.kind}: {info.message}"
    if isinstance(exc, ItemInputError):  # an output that could not be written (write_output)
        return f"{exc.kind}: {exc.message}"
    if isinstance(exc, (OSError, ValueError)):
        return f"unreadable: {type(exc).__name__}: {exc}"
    logger.exception("collection analysis: unexpected error", exc_info=exc)
    return f"internal: {type(exc).__name__}"


def _output(
    setup: AnalysisSetup,
    data: bytes,
    name: str,
    assess: Callable[[bytes], QualityReport] | None = None,
    before: QualityReport | None = None,
) -> str:
    """The image's output made and written: its entry as JSON, `{"error": ...}` when the operation failed (the
    image's analysis stands)."""
    assert setup.outputs is not None
    try:
        entry = make_output(setup.outputs, data, name, setup.stages.limits, setup.anonymize, assess, before)
    except Exception as exc:  # noqa: BLE001 - one image's failed output is that image's output error
        entry = {"error": _error_text(exc)}
    return json.dumps(entry)


def prepare_batch(batch: dict[str, np.ndarray], setup: AnalysisSetup) -> dict[str, np.ndarray]:
    """Ray Data task: read each file, extract metadata, decode once for the models and the quality metrics; with
    --convert alone, convert and write it; for --enhance, pass its bytes on."""
    decode, metadata_stage, quality_stage = _cpu_stages(setup)
    rows = [{"location": str(loc), "member": str(m)} for loc, m in zip(batch["location"], batch["member"], strict=True)]
    datas = read_items(rows, setup.max_bytes)
    shapes = _input_shapes(setup)
    count = len(rows)
    tensors = {name: np.zeros((count, *shape), dtype) for name, (shape, dtype) in shapes.items()}
    errors, metadata, metrics, decode_ms = [""] * count, [""] * count, [b""] * count, np.zeros(count)
    outputs, carried = [""] * count, [b""] * count
    for i, data in enumerate(datas):
        try:
            if isinstance(data, Exception):
                raise data
            if metadata_stage is not None:
                metadata[i] = json.dumps(to_jsonable(metadata_stage.extract(data)))
            if setup.plan.needs_decode:
                decoded = decode.decode(data, setup.plan.models, setup.plan.quality)
                decode_ms[i] = decoded.decode_ms
                for name in setup.plan.models:
                    tensors[name][i] = decoded.tensors[name]
                if quality_stage is not None:
                    metrics[i] = pickle.dumps(quality_stage.metrics(decoded))
        except Exception as exc:  # noqa: BLE001 - one bad file is that image's error
            errors[i] = _error_text(exc)
        if setup.outputs is not None and not errors[i] and isinstance(data, bytes):
            if setup.outputs.enhancing:
                carried[i] = data
            else:
                outputs[i] = _output(setup, data, str(batch["name"][i]))
    out = {
        "name": batch["name"],
        "error": np.array(errors, dtype=object),
        "metadata": np.array(metadata, dtype=object),
        "metrics": np.array(metrics, dtype=object),
        "decode_ms": decode_ms,
        "output": np.array(outputs, dtype=object),
    }
    if setup.outputs is not None and setup.outputs.enhancing:
        out["data"] = np.array(carried, dtype=object)
    out.update({f"tensor:{name}": value for name, value in tensors.items()})
    return out


class ModelRunner:
    """Ray Data actor: the plan's models, loaded once per actor, run on whole batches; then each image's verdict,
    top-k and record, exactly as the server builds them; with --enhance, each image's enhanced output."""

    def __init__(self, setup: AnalysisSetup):
        self.setup = setup
        self.backends = {
            name: load_backend(entry, setup.stages.backend_options) for name, entry in setup.stages.models.items()
        }
        self.repository_entries = setup.stages.models

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["name"])
        ok = [i for i in range(count) if not batch["error"][i]]
        per_item: list[dict[str, ModelResult]] = [{} for _ in range(count)]
        for name, backend in self.backends.items():
            if not ok:
                break
            started = time.perf_counter()
            outputs = backend.infer(np.ascontiguousarray(batch[f"tensor:{name}"][ok]))
            model_ms = (time.perf_counter() - started) * 1000.0 / len(ok)
            for i, row in zip(ok, split_batch(outputs, len(ok)), strict=True):
                per_item[i][name] = ModelResult(row, {"model": round(model_ms, 3)})
        documents, errors, probs = [""] * count, list(batch["error"]), [""] * count
        written = list(batch["output"])
        enhancing = self.setup.outputs is not None and self.setup.outputs.enhancing
        for i in ok:
            try:
                document, class_probs, quality = self._document(batch, i, per_item[i])
                documents[i], probs[i] = json.dumps(document), json.dumps(class_probs)
            except Exception as exc:  # noqa: BLE001
                errors[i] = _error_text(exc)
                continue
            if enhancing:
                assess = self.quality_of if self.setup.plan.quality else None
                written[i] = _output(self.setup, bytes(batch["data"][i]), str(batch["name"][i]), assess, quality)
        return {
            "name": batch["name"],
            "error": np.array(errors, dtype=object),
            "document": np.array(documents, dtype=object),
            "class_probs": np.array(probs, dtype=object),
            "output": np.array(written, dtype=object),
        }

    def quality_of(self, data: bytes) -> QualityReport:
        """The verdict of one more image (an enhanced output) by the same stages and model as the analysed ones'."""
        decode, _, quality_stage = _cpu_stages(self.setup)
        assert quality_stage is not None
        models = tuple(name for name in self.backends if name == QUALITY_MODEL)
        decoded = decode.decode(data, models, True)
        results = {
            name: ModelResult(split_batch(self.backends[name].infer(decoded.tensors[name][None]), 1)[0])
            for name in models
        }
        outputs = StageOutputs(results, quality_stage.metrics(decoded), None, decoded.decode_ms)
        analysis = analysis_from_outputs(
            outputs, _Entries(self.setup.stages.models), self.setup.stages.thresholds, ("quality",), None,
            ImageOptions(), time.perf_counter(),
        )  # fmt: skip
        assert analysis.quality is not None
        return analysis.quality

    def _document(
        self, batch: dict[str, np.ndarray], i: int, models: dict[str, ModelResult]
    ) -> tuple[dict, list, QualityReport | None]:
        setup = self.setup
        metadata = json.loads(batch["metadata"][i]) if batch["metadata"][i] else None
        metrics = pickle.loads(batch["metrics"][i]) if batch["metrics"][i] else None  # noqa: S301 - our own task's
        outputs = StageOutputs(models, metrics, metadata, float(batch["decode_ms"][i]))
        entry = setup.classifier_entry if setup.classifier in setup.stages.models else None
        analysis = analysis_from_outputs(
            outputs, _Entries(setup.stages.models), setup.stages.thresholds, setup.selected, entry,
            ImageOptions(anonymize=setup.anonymize), time.perf_counter(),
        )  # fmt: skip
        class_probs: list[list[float]] = []
        if entry is not None and setup.classifier in models:
            scores = class_scores(entry, outputs)
            top = np.argsort(scores)[::-1][:CLASS_PROBS]
            class_probs = [[int(k), round(float(scores[k]), 5)] for k in top]
        return analysis_document(analysis), class_probs, analysis.quality


class _Entries:
    """The part of `ModelRepository` that `analysis_from_outputs` reads (`get`), over the setup's entries."""

    def __init__(self, entries: dict[str, Any]):
        self.entries = entries

    def get(self, name: str) -> Any:
        return self.entries[name]


def record_of(row: dict[str, Any], item: SourceItem) -> RecordedImage:
    """The image's record; its output's entry (if one was made) is its document's `output`, as a job result's. A
    row that cannot be made a record (it should not happen) is that image's failure, not the batch's."""
    name, location = str(row["name"]), item.stored_location
    try:
        output = json.loads(row["output"]) if row.get("output") else None
        if row["error"]:
            failed = {"output": output} if output else None  # written before the analysis failed
            return RecordedImage(failed_record(name, str(row["error"])), failed, location, item.member)
        document = json.loads(row["document"])
        if output:
            document["output"] = output
        probs = tuple((int(k), float(p)) for k, p in json.loads(row["class_probs"] or "[]"))
        return RecordedImage(record_from_document(name, document, probs), document, location, item.member)
    except Exception as exc:  # noqa: BLE001 - one image's record
        return RecordedImage(failed_record(name, _error_text(exc)), None, location, item.member)


def run_analysis(
    items: Sequence[SourceItem],
    setup: AnalysisSetup,
    store: CollectionStore,
    collection_id: str,
    address: str | None = None,
    model_actors: tuple[int, int] = (1, 2),
    on_progress: Callable[[RunStats], None] = lambda stats: None,
    changed: Collection[str] = frozenset(),
) -> RunStats:
    """Analyse the items not yet in the collection, and those `changed` since their analysis (--refresh: each
    replaces its row), on Ray Data and record each as it arrives."""
    if address is None and "ray" not in sys.modules:
        prepare_local_ray()
    import ray

    done = store.done_names(collection_id)
    todo = [item for item in items if item.name not in done or item.name in changed]
    stats = RunStats(listed=len(items), skipped=len(items) - len(todo))
    by_name = {item.name: item for item in todo}
    read_since = time.time()  # every file is read after it: a later --refresh compares change times with it
    started = time.perf_counter()
    if todo:
        if not ray.is_initialized():
            init_ray(address)
        for batch in _stream(todo, setup, model_actors):
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            images = [record_of(row, by_name[str(row["name"])]) for row in rows]
            _, recorded = store.add_each(collection_id, images, changed, read_since)  # unstorable: a failed record
            stats.count(recorded)
            stats.seconds = time.perf_counter() - started
            on_progress(stats)
    store.finish(collection_id)
    stats.seconds = time.perf_counter() - started
    return stats


def quiet_ray_data_console() -> None:
    """Ray Data's console lines (a notice that progress bars are off, a line per finished execution) only in its
    session log file (`ray-data.log`): the CLI prints its own progress and summary. Errors still reach the console.
    (Ray 2.60's driver also prints one error-level line from its C++ core for every actor pool, "has constructor
    arguments in the object store": Ray's own issues #53727 and #57733, README "Known limitations".)"""
    import ray._private.log

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, ray._private.log.PlainRayHandler):
            handler.setLevel(logging.ERROR)


def _stream(
    todo: Sequence[SourceItem], setup: AnalysisSetup, model_actors: tuple[int, int]
) -> Iterator[dict[str, np.ndarray]]:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own
    context.print_on_execution_start = False
    quiet_ray_data_console()
    dataset = ray.data.from_items([item.to_row() for item in todo], override_num_blocks=max(1, len(todo) // READ_BATCH))
    dataset = dataset.map_batches(
        prepare_batch, fn_kwargs={"setup": setup}, batch_size=READ_BATCH, batch_format="numpy", num_cpus=1
    )
    dataset = dataset.map_batches(
        ModelRunner,
        fn_constructor_kwargs={"setup": setup},
        batch_size=MODEL_BATCH,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=model_actors[0], max_size=model_actors[1]),
        num_cpus=1,
    )
    yield from dataset.iter_batches(batch_size=MODEL_BATCH, batch_format="numpy", prefetch_batches=1)
