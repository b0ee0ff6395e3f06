"""Triton-style model configuration, one answer for HTTP (`GET /v2/models/{m}/config`) and gRPC (`ModelConfig`)."""

from typing import Any

from serving.config.model_config import BatchingConfig
from serving.oip.inference import model_metadata
from serving.service import IMAGE_MODEL_NAME, InferenceService


def config_data_type(datatype: str) -> str:
    """A model configuration's data type for an OIP datatype: Triton names BYTES `TYPE_STRING` there."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _config_tensors(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metadata tensors as a configuration's inputs/outputs: Triton's data type, dims without the batch axis."""
    return [{"name": t["name"], "data_type": config_data_type(t["datatype"]), "dims": t["shape"][1:]} for t in tensors]


async def model_config(service: InferenceService, model: str, version: str | None = None) -> dict[str, Any]:
    """Name, platform, max_batch_size, inputs, outputs and dynamic batching of `model` (at `version`: the loaded
    one when empty), as Triton's JSON writes them. Unknown models and versions are `UnknownModelError` (404 /
    NOT_FOUND), a known model this application does not serve `ModelUnavailableError`."""
    service.check_loaded(model, version)
    meta = await model_metadata(service, model, version)
    # the image-level model is version 1 whatever version its classifier serves
    entry = service.served_entry(None) if model == IMAGE_MODEL_NAME else service.served_entry(model, version or "")
    # the stage's own batching (config.yaml with the serve config's overrides), as /v1/models reports it
    batching = BatchingConfig.model_validate((await service.backend_info(entry.key))["batching"])
    return {
        "name": meta["name"],
        "platform": meta["platform"],
        "max_batch_size": batching.max_batch_size,
        "input": _config_tensors(meta["inputs"]),
        "output": _config_tensors(meta["outputs"]),
        "dynamic_batching": {
            "preferred_batch_size": batching.preferred_batch_sizes,
            "max_queue_delay_microseconds": int(batching.batch_wait_timeout_ms * 1000),
        },
    }
