"""What `tooling.quality_net.evaluate_combined` scores: the labelled photos and their distorted copies, the classical
metrics of every copy, quality_net's outputs on the same pixels (as the server's decode stage and ONNX Runtime backend
give them), the blur-samples photos as the server decodes them, and the --cache files that keep all of it."""

import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipelines.decode import decode_image
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize
from pipelines.quality import learned_quality
from pipelines.quality.metrics import compute_metrics
from pipelines.quality.working_image import native_crop, working_image
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.repository import ModelArtifacts, ModelEntry, ModelRepository
from serving.service import QUALITY_MODEL
from tooling.quality.distortions import KINDS, apply_distortion
from tooling.quality.evaluate import DEFAULT_PHOTOS, Sample, load_rgb
from tooling.quality_net.dataset import VALIDATION_EVERY

BLUR_SAMPLES = DEFAULT_PHOTOS.parent / "blur-samples"
Probs = dict[str, float]


# --- the labelled set -------------------------------------------------------------------------------------------


def validation_photos(folder: Path, start: int, stop: int, count: int, seed: int = 0) -> list[Path]:
    """`count` photos drawn with `seed` from quality_net's validation split (sorted index % 10 == 9) in
    [start, stop): in the tuning pool but never trained on, so the model's probabilities there are honest."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    pool = [f for i, f in enumerate(files) if start <= i < stop and i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    picks = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(picks)]


def distorted_variants(rgb: np.ndarray, name: str, seed: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """(kind, level, pixels): clean, then every kind at levels 1-5, drawn exactly as
    `tooling.quality.evaluate.photo_samples` draws them (same generator, same order), so cached metrics
    from either script describe the same pixels."""
    rng = np.random.default_rng([seed, *name.encode()])
    yield "clean", 0, rgb
    for kind in KINDS:
        for level in range(1, 6):
            yield kind, level, apply_distortion(rgb, kind, level, rng)


@dataclass(frozen=True)
class PhotoJob:
    path: Path
    seed: int
    spec: PreprocessSpec
    metrics: bool  # compute metrics (False: they are cached)


def render_photo(job: PhotoJob) -> tuple[list[Sample] | None, np.ndarray]:
    """Metrics of every variant (when asked) and the model's HWC uint8 pixels of every variant."""
    cv2.setNumThreads(1)
    rgb = load_rgb(job.path)
    size = (rgb.shape[1], rgb.shape[0])
    samples: list[Sample] = []
    pixels = []
    for kind, level, degraded in distorted_variants(rgb, job.path.name, job.seed):
        if job.metrics:
            metrics = compute_metrics(working_image(degraded), size, native_crop(degraded))
            samples.append((job.path.name, kind, level, metrics.as_dict()))
        pixels.append(geometry_pil(Image.fromarray(degraded), job.spec))
    return (samples if job.metrics else None), np.stack(pixels)


# --- the model --------------------------------------------------------------------------------------------------


def load_model(weights: Path | None = None, threads: int = 2) -> tuple[ModelEntry, OnnxRuntimeBackend]:
    """quality_net's repository entry (optionally with another ONNX file) and a loaded ONNX Runtime backend."""
    entry = ModelRepository.scan().get(QUALITY_MODEL)
    if weights is not None:
        entry = ModelEntry(entry.config, entry.folder, entry.labels, ModelArtifacts(onnx=weights))
    elif not entry.available:
        raise SystemExit(f"{QUALITY_MODEL} is not servable: {entry.unavailable_reason}")
    backend = OnnxRuntimeBackend(intra_op_threads=threads)
    backend.load(entry)
    return entry, backend


def infer_probs(backend: OnnxRuntimeBackend, entry: ModelEntry, tensor: np.ndarray) -> list[dict]:
    """`learned_quality` per image of an NCHW batch, as dicts: {'probabilities': {label: p}, 'model_quality': q}."""
    out = []
    size = entry.config.batching.max_batch_size
    for b in range(0, len(tensor), size):
        result = backend.infer(tensor[b : b + size])
        for probs, score in zip(result["probs"], result["score"], strict=True):
            out.append(learned_quality({"probs": probs, "score": score}, entry.labels).to_dict())
    return out


# --- blur-samples -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedPhoto:
    """One real photo as the quality and anomaly stages see it."""

    name: str
    decode_scale: int
    values: dict  # QualityMetrics.as_dict()
    anomaly: dict  # learned_quality(...).to_dict()


def served_photos(
    entry: ModelEntry, backend: OnnxRuntimeBackend, paths: Sequence[Path], working_max_side: int = 512
) -> list[ServedPhoto]:
    """Each photo decoded once as the decode stage does (`decode_image`: model tensor + working image, reduced
    JPEG decode allowed), then the quality stage's metrics and the anomaly stage's model outputs."""
    out = []
    spec = entry.config.preprocess_spec()
    for path in paths:
        image = decode_image(path.read_bytes(), {QUALITY_MODEL: spec}, None, working_max_side)
        metrics = compute_metrics(image.working, (image.width, image.height), image.native_gray)
        anomaly = infer_probs(backend, entry, image.tensors[QUALITY_MODEL][None])[0]
        out.append(ServedPhoto(path.name, image.decode_scale, metrics.as_dict(), anomaly))
    return out


# --- data with caching ------------------------------------------------------------------------------------------


def build(
    photos: Sequence[Path],
    seed: int,
    entry: ModelEntry,
    backend: OnnxRuntimeBackend,
    metrics_file: Path | None,
    probs_file: Path | None,
    workers: int,
) -> tuple[list[Sample], list[Probs]]:
    """Samples (metrics) and model probabilities of every photo x variant, read from / written to the caches."""
    samples: list[Sample] | None = None
    outputs: list[Probs] | None = None
    if metrics_file and metrics_file.exists():
        rows = (json.loads(line) for line in metrics_file.read_text().splitlines())
        samples = [(name, kind, int(level), values) for name, kind, level, values in rows]
    if probs_file and probs_file.exists():
        outputs = [json.loads(line)[3] for line in probs_file.read_text().splitlines()]
    if samples is not None and outputs is not None:
        return samples, outputs
    spec = entry.config.preprocess_spec()
    jobs = [PhotoJob(p, seed, spec, samples is None) for p in photos]
    new_samples: list[Sample] = []
    new_outputs: list[Probs] = []
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        for i, (photo_samples, pixels) in enumerate(pool.map(render_photo, jobs)):
            new_samples += photo_samples or []
            new_outputs += [r["probabilities"] for r in infer_probs(backend, entry, normalize(pixels, spec))]
            if (i + 1) % 10 == 0 or i + 1 == len(jobs):
                elapsed = time.perf_counter() - start
                print(f"  {i + 1}/{len(jobs)} photos ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    if samples is None:
        samples = new_samples
        if metrics_file:
            metrics_file.write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    if len(new_outputs) != len(samples):
        raise SystemExit(f"{metrics_file} has {len(samples)} samples, the photos give {len(new_outputs)}: stale cache?")
    if probs_file:
        lines = (json.dumps([n, k, lv, p]) for (n, k, lv, _), p in zip(samples, new_outputs, strict=True))
        probs_file.write_text("\n".join(lines) + "\n")
    return samples, new_outputs
