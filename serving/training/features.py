"""Training features: each image's embedding from the served backbone, through the same decode and batched model
stage as a request, cached per image content so a retrain (new labels, another split) computes nothing again."""

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from serving.config.model_entry import ModelEntry
from serving.errors import BadRequestError, ModelUnavailableError, classify_error, internal_detail
from serving.jobs.errors import ItemInputError
from serving.npy_lock import NPY_READ
from serving.service import InferenceService
from serving.stages.pipeline import StagePlan, held_stages
from serving.trained_head import EMBEDDING, HEAD_GRAPH_VERSION
from serving.training.dataset import LabelledImage

logger = logging.getLogger("imgserve.training")
READ_CHUNK = 32  # images read from the source at a time


class FeatureCache:
    """`<cache dir>/features/<backbone key>/<sha256[:2]>/<sha256>.npy`: one embedding per distinct image content.

    The key names the backbone's weights, its graph version and its preprocessing: a change to any of them is a new
    folder, never a stale feature."""

    def __init__(self, cache_dir: Path, backbone: ModelEntry):
        config = backbone.config
        recipe = json.dumps([config.weights.sha256, config.preprocessing.model_dump(), HEAD_GRAPH_VERSION])
        key = f"{backbone.name}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
        self.root = cache_dir / "features" / key

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self._path(digest)
        try:
            with NPY_READ:
                return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, digest: str, features: np.ndarray) -> None:
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{id(features)}.tmp")
        with tmp.open("wb") as handle:
            np.save(handle, features.astype(np.float32), allow_pickle=False)
        tmp.replace(path)


def embedding_backbone(service: InferenceService, name: str) -> ModelEntry:
    """The served embedding model `name` to train on: 404 for an unknown model; 400 for a model of another task,
    told before whether this server can run it (a classifier whose weights are missing is the client's mistake,
    not a 503); 503 for an embedding model that is not available here."""
    try:
        entry = service.served_entry(name)
    except ModelUnavailableError:
        entry = service.loaded_entry(name)  # known here, not servable: a classifier is still the client's mistake
        if entry.config.task == "embedding":
            raise
    if entry.config.task != "embedding":
        raise BadRequestError(
            f"backbone '{name}' is not an embedding model (its task is {entry.config.task}): name a model whose task"
            " is embedding (GET /v1/models lists each model's task)"
        )
    return entry


def read_error(exc: Exception) -> str:
    """Why an image could not be read, as the job's result tells the client: an OSError's reason without its path
    (a server path: the object store, a resolved link), anything else as it reads (a corrupt archive member, the
    size limit, a purged job input)."""
    if isinstance(exc, ItemInputError):
        return exc.message
    if isinstance(exc, OSError):
        logger.info("training image unreadable: %s", exc)
        return exc.strerror or type(exc).__name__
    return str(exc)


def model_error(exc: Exception) -> str:
    """Why an image could not be run through the backbone, as the job's result tells the client: the error's own
    message (not an image, too large, overloaded) after its kind, as a batch item's error reads (`unsupported_format:
    ...`, not the Python class name); an internal error's text (paths, Ray addresses) only in the log."""
    info = classify_error(exc)
    if info.kind == "internal":
        logger.warning("training image failed: %s", internal_detail(exc))
        return "internal: internal error, see the server log"
    return f"{info.kind}: {info.message}"


class FeatureResult:
    """Embeddings of the images that could be read and decoded, and why the others could not."""

    def __init__(self) -> None:
        self.features: dict[str, np.ndarray] = {}  # image name -> embedding
        self.errors: dict[str, str] = {}  # image name -> reason
        self.computed = 0  # embeddings computed now (the rest came from the cache)
        self.digests: dict[str, str] = {}  # image name -> sha256 of its bytes (copies under two names share one)


async def embed_images(
    service: InferenceService,
    backbone: ModelEntry,
    images: Sequence[LabelledImage],
    cache: FeatureCache,
    read: Callable[[list[LabelledImage]], list[bytes | Exception]],
    concurrency: int = 16,
    progress: Callable[[int], Awaitable[None]] | None = None,
    cancelled: Callable[[], Awaitable[bool]] | None = None,
) -> FeatureResult:
    """Every image's embedding: from the cache, else decoded and run through `backbone`'s model stage (batched with
    whatever else the server is doing); `read` fetches a chunk's bytes (or each image's error). An unreadable or
    undecodable image is recorded in `errors`, not fatal."""
    result = FeatureResult()
    plan = StagePlan(models=(backbone.name,))
    # `backbone`'s own stage for the whole run: a version promoted meanwhile ran the rest of the images, its features
    # cached under this version's key (a version swapped since the job took `backbone` is a 503 to retry)
    pipeline = held_stages(service.pipeline, [backbone])
    gate = asyncio.Semaphore(concurrency)

    async def one(image: LabelledImage, data: bytes | Exception) -> None:
        if isinstance(data, Exception):
            result.errors[image.name] = f"unreadable: {read_error(data)}"
            return
        digest = hashlib.sha256(data).hexdigest()
        result.digests[image.name] = digest
        cached = await asyncio.to_thread(cache.get, digest)
        if cached is not None:
            result.features[image.name] = cached
            return
        async with gate:
            try:
                outputs = await pipeline.run(data, plan)
            except Exception as exc:  # noqa: BLE001 - the image's own failure (not an image, too large, ...)
                result.errors[image.name] = model_error(exc)
                return
        embedding = np.asarray(outputs.models[backbone.name].outputs[EMBEDDING], np.float32)
        await asyncio.to_thread(cache.put, digest, embedding)
        result.features[image.name] = embedding
        result.computed += 1

    done = 0
    for start in range(0, len(images), READ_CHUNK):
        if cancelled is not None and await cancelled():
            break
        chunk = images[start : start + READ_CHUNK]
        contents = await asyncio.to_thread(read, list(chunk))
        await asyncio.gather(*(one(image, data) for image, data in zip(chunk, contents, strict=True)))
        done += len(chunk)
        if progress is not None:
            await progress(done)
    return result
