"""Triton's statistics extension over HTTP and gRPC: which model versions a request names, and their figures
(`serving.model_statistics`)."""

import asyncio
from typing import Any

from serving.model_statistics import model_statistics
from serving.model_status import repository_index
from serving.oip.inference import IMAGE_MODEL_VERSION
from serving.service import IMAGE_MODEL_NAME, InferenceService


async def statistics(service: InferenceService, name: str = "", version: str = "") -> dict[str, Any]:
    """`{"model_stats": [...]}` for every loaded model version (no name), a model's loaded versions (its served
    one and a canary's), or one version; 404 (`UnknownModelError`) for a model or version that is not loaded."""
    if name:
        service.check_loaded(name, version or None)
    if name == IMAGE_MODEL_NAME:
        versions = [(IMAGE_MODEL_NAME, IMAGE_MODEL_VERSION)]
    else:
        ready = [(row["name"], row["version"]) for row in await repository_index(service, ready_only=True)]
        if not name:
            versions = sorted([(IMAGE_MODEL_NAME, IMAGE_MODEL_VERSION), *ready])
        else:
            versions = [(n, v) for n, v in ready if n == name and version in ("", v)]
            # loaded but not servable here (not deployed in this application): its zeros, as Triton answers
            versions = versions or [(name, service.loaded_entry(name, version or None).version)]
    return {"model_stats": await asyncio.to_thread(model_statistics, versions)}
