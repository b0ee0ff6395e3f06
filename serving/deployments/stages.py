"""The graph placement's stage deployments: thin Ray Serve wrappers around the plain stages (`serving.stages`).

Every method takes a list (the images one Ingress replica sent in one actor call) and returns a list of the same
length; an image that failed (to decode, typically an `ImageInputError`) keeps its exception in its slot, so one bad
image fails only its own request. The decode result travels from the Decode replica to the model and quality
replicas by reference, not through the Ingress.
"""

import asyncio
from typing import Any

from ray import serve

from pipelines.decode import DecodedImage
from pipelines.quality import QualityMetrics
from serving.config.model_entry import ModelEntry
from serving.stages.concurrency import gather_or_raise, stage_thread
from serving.stages.decode import DecodeStage
from serving.stages.metadata import MetadataStage
from serving.stages.model import ModelStage
from serving.stages.pipeline import ModelResult
from serving.stages.quality import QualityStage
from serving.stages.settings import StageSettings

Decoded = DecodedImage | Exception


async def each(calls: list[Any]) -> list[Any]:
    """Run concurrently; a failure stays in its image's slot (a bad file fails its own request, never the call)."""
    return await gather_or_raise(calls, keep=(Exception,))


async def _skip(error: Exception) -> Exception:
    return error


class DecodeServer:
    def __init__(self, settings: StageSettings):
        self.stage = DecodeStage(settings)

    async def decode_many(self, items: list[tuple[bytes, tuple[str, ...], bool]]) -> list[Decoded]:
        """(bytes, models, working image?) per image -> `DecodedImage`, or the image's input error."""
        return await each([stage_thread(self.stage.decode, *item) for item in items])


class ModelServer:
    def __init__(self, entry: ModelEntry, backend_options: dict[str, dict[str, Any]] | None = None):
        self.stage = ModelStage(entry, backend_options)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.stage.reconfigure(user_config)

    async def _one(self, decoded: DecodedImage) -> ModelResult:
        result = await self.stage.infer(decoded.tensors[self.stage.entry.name])
        return ModelResult(result.outputs, {"decode": decoded.decode_ms, **result.stage_ms})

    async def infer_decoded(self, decoded: list[Decoded | None]) -> list[ModelResult | Exception | None]:
        """This model's outputs for every decoded image that has a tensor for it (None for the others)."""
        name = self.stage.entry.name
        slots = [i for i, d in enumerate(decoded) if isinstance(d, Exception) or (d and name in d.tensors)]
        calls = [_skip(d) if isinstance(d, Exception) else self._one(d) for d in (decoded[i] for i in slots)]
        out: list[ModelResult | Exception | None] = [None] * len(decoded)
        for index, result in zip(slots, await each(calls), strict=True):
            out[index] = result
        return out

    async def infer_tensors(self, tensors: list[Any]) -> list[ModelResult | BaseException]:
        """OIP tensor rows, each joining the dynamic batch; a bad row fails only its own request."""
        return list(await asyncio.gather(*(self.stage.infer(t) for t in tensors), return_exceptions=True))

    def info(self) -> dict[str, Any]:
        return self.stage.info()


class QualityServer:
    def __init__(self) -> None:
        self.stage = QualityStage()

    async def metrics_many(self, decoded: list[Decoded | None]) -> list[QualityMetrics | Exception | None]:
        """Metrics of every decoded image that carries a working image (None for the others)."""
        calls = []
        for item in decoded:
            if isinstance(item, DecodedImage) and item.working is not None:
                calls.append(stage_thread(self.stage.metrics, item))
            else:
                calls.append(_skip(item) if isinstance(item, Exception) else _none())
        return await each(calls)


async def _none() -> None:
    return None


class MetadataServer:
    def __init__(self, settings: StageSettings):
        self.stage = MetadataStage(settings.limits)

    async def extract_many(self, images: list[bytes]) -> list[dict[str, Any] | Exception]:
        return await each([stage_thread(self.stage.extract, data) for data in images])


# The classes stay importable under their own names so Ray pickles them by reference, not by value.
DecodeDeployment = serve.deployment(name="Decoder", max_ongoing_requests=16)(DecodeServer)
ModelDeployment = serve.deployment(name="Model", max_ongoing_requests=64)(ModelServer)
QualityDeployment = serve.deployment(name="Quality", max_ongoing_requests=8)(QualityServer)
MetadataDeployment = serve.deployment(name="Metadata", max_ongoing_requests=8)(MetadataServer)
