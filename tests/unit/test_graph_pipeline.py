"""The graph placement's Ingress side (`GraphPipeline`) against stand-in stage handles: which calls an image waits
for. Images with the same plan share a queue, its call slots and its calls; an image that needs no metadata is
answered while the Metadata stage is stuck (a replica being replaced: 9-12 s here, during which a `/v1/classify`
waited 9.5 s before); an image that needs it still gets it, and a file that fails to decode says so whatever the
metadata stage answered."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from pipelines.errors import InvalidImageError
from serving.placement.graph import GraphPipeline, GraphStages
from serving.stages.pipeline import ModelResult, StagePlan

pytestmark = pytest.mark.unit

BAD = b"not an image"


class Method:
    """`handle.method.remote(*args)` -> an awaitable, as a `DeploymentHandle` gives a `DeploymentResponse`."""

    def __init__(self, run: Callable[..., Awaitable[Any]], calls: list[Any]):
        self.run, self.calls = run, calls

    def remote(self, *args: Any) -> "asyncio.Task[Any]":
        self.calls.append(args)
        return asyncio.ensure_future(self.run(*args))


class Handle:
    def __init__(self, **methods: Method):
        self.__dict__.update(methods)


def stages(metadata_open: asyncio.Event, calls: dict[str, list[Any]]) -> GraphStages:
    async def decode_many(items: list[tuple[bytes, tuple[str, ...], bool]]) -> list[Any]:
        return [InvalidImageError("cannot decode") if data == BAD else len(data) for data, _, _ in items]

    async def infer_decoded(decoded: "asyncio.Task[list[Any]]") -> list[Any]:
        return [d if isinstance(d, BaseException) else ModelResult({"logits": np.full(3, d)}) for d in await decoded]

    async def extract_many(images: list[bytes]) -> list[dict[str, Any]]:
        await metadata_open.wait()
        return [{"bytes": len(data)} for data in images]

    for name in ("decode", "model", "metadata"):
        calls[name] = []
    return GraphStages(
        decode=Handle(decode_many=Method(decode_many, calls["decode"])),  # type: ignore[arg-type]
        models={"m": Handle(infer_decoded=Method(infer_decoded, calls["model"]))},  # type: ignore[dict-item]
        metadata=Handle(extract_many=Method(extract_many, calls["metadata"])),  # type: ignore[arg-type]
    )


def test_an_image_without_metadata_is_answered_while_the_metadata_stage_is_stuck() -> None:
    async def scenario() -> None:
        metadata_open = asyncio.Event()
        calls: dict[str, list[Any]] = {}
        pipeline = GraphPipeline(stages(metadata_open, calls))
        analyze = asyncio.ensure_future(pipeline.run(b"abcd", StagePlan(models=("m",), metadata=True)))
        await asyncio.sleep(0)  # the analyze image takes the queue's call slot first
        classify = [asyncio.ensure_future(pipeline.run(b"xy" * (n + 1), StagePlan(models=("m",)))) for n in range(3)]
        answers = await asyncio.wait_for(asyncio.gather(*classify), 2)  # with the metadata stage still stuck
        assert [float(a.models["m"].outputs["logits"][0]) for a in answers] == [2, 4, 6]
        assert all(a.metadata is None for a in answers) and not analyze.done()
        metadata_open.set()
        analyzed = await asyncio.wait_for(analyze, 2)
        assert analyzed.metadata == {"bytes": 4} and float(analyzed.models["m"].outputs["logits"][0]) == 4
        assert len(calls["metadata"]) == 1  # only the image that asked for metadata went there
        assert [len(images) for (images,) in calls["decode"]] == [1, 3]  # the three classify images in one call

    asyncio.run(scenario())


def test_a_file_that_fails_to_decode_says_so_even_where_metadata_answered() -> None:
    async def scenario() -> None:
        metadata_open = asyncio.Event()
        metadata_open.set()
        pipeline = GraphPipeline(stages(metadata_open, {}))
        with pytest.raises(InvalidImageError, match="cannot decode"):
            await pipeline.run(BAD, StagePlan(models=("m",), metadata=True))
        described = await pipeline.run(b"abc", StagePlan(metadata=True))  # metadata only: no decode
        assert described.metadata == {"bytes": 3} and described.models == {}

    asyncio.run(scenario())
