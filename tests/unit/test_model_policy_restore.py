"""A promotion whose version does not load leaves the version policy as it was, in every placement: promote,
canary and a training job's promotion write `versions.yaml` and then load it; a policy kept after a failed load
names a version that cannot load (every replica's poll tries it, a replica started later leaves the model out).
`serving.model_control.apply_policy_unlocked` is that write-and-load; the graph placement, whose model deployments
change only by redeploying, is refused before the file is touched."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.http.app import create_http_app
from serving.model_control import (
    ModelControlUnsupportedError,
    ModelLoadError,
    apply_policy_unlocked,
    load_model,
)
from serving.model_versions import VersionPolicy
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit
# written by hand (comments, flow style): what write_policy would never produce, so a rewrite shows
HAND_WRITTEN = b"# pinned by ops, ticket 42\npolicy: specific\nversions: ['1']   # the good one\n"


class GraphLikePipeline:
    """The graph placement's pipeline as model control sees it: serves requests, cannot swap models in place."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "swap_models":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Any, Any, Path]:
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "parcels"
    for version in ("1", "2", "3"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    (root / "3" / "model.onnx").write_bytes(b"corrupt")  # version 3 cannot load
    (root / "versions.yaml").write_bytes(HAND_WRITTEN)
    asyncio.run(load_model(service, "parcels"))
    return service, settings, root


def _apply(service: Any, root: Path, policy: VersionPolicy) -> str:
    async def locked() -> str:
        async with service.model_lock:
            return await apply_policy_unlocked(service, "parcels", root, policy)

    return asyncio.run(locked())


def test_a_policy_whose_version_does_not_load_is_put_back_byte_for_byte(world: tuple) -> None:
    service, _, root = world
    with pytest.raises(ModelLoadError, match="version 3"):
        _apply(service, root, VersionPolicy(policy="specific", versions=["3"]))
    assert (root / "versions.yaml").read_bytes() == HAND_WRITTEN
    assert service.served_entry("parcels").version == "1"
    (root / "versions.yaml").unlink()  # no policy file (latest: version 3, which does not load)
    with pytest.raises(ModelLoadError):
        _apply(service, root, VersionPolicy(policy="specific", versions=["3"]))
    assert not (root / "versions.yaml").exists()
    assert _apply(service, root, VersionPolicy(policy="specific", versions=["2"])) == "2"  # a good one is kept
    assert service.served_entry("parcels").version == "2" and "'2'" in (root / "versions.yaml").read_text()


def test_the_graph_placement_refuses_before_touching_the_policy(world: tuple) -> None:
    service, _, root = world
    service.pipeline = GraphLikePipeline(service.pipeline)
    before = (root / "versions.yaml").stat().st_mtime_ns
    for version in ("2", "3"):
        with pytest.raises(ModelControlUnsupportedError):
            _apply(service, root, VersionPolicy(policy="specific", versions=[version]))
    assert (root / "versions.yaml").read_bytes() == HAND_WRITTEN
    assert (root / "versions.yaml").stat().st_mtime_ns == before


def test_promote_and_canary_over_http_keep_the_policy_in_both_placements(world: tuple) -> None:
    service, settings, root = world
    app = create_http_app(service, settings=settings)

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            answers = [(await http.post("/v1/models/parcels/versions/3/promote")).status_code]
            answers.append(
                (await http.post("/v1/models/parcels/canary", json={"version": "3", "percent": 5})).status_code
            )
            service.pipeline = GraphLikePipeline(service.pipeline)
            answers.append((await http.post("/v1/models/parcels/versions/2/promote")).status_code)
            answers.append(
                (await http.post("/v1/models/parcels/canary", json={"version": "2", "percent": 5})).status_code
            )
            return answers

    assert asyncio.run(calls()) == [400, 400, 501, 501]
    assert (root / "versions.yaml").read_bytes() == HAND_WRITTEN


def test_load_and_unload_answer_the_requests_own_errors_alike_in_both_placements(world: tuple) -> None:
    """An unknown model is 404 and the default model's unload 400 in the graph too (it said 501 `unsupported` for
    them, which tells the caller to redeploy for a model that does not exist); a known one there is 501."""
    service, settings, _ = world
    graph = GraphLikePipeline(service.pipeline)

    async def answers() -> list[int]:
        transport = httpx.ASGITransport(app=create_http_app(service, settings=settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            calls = ("nosuch/load", "nosuch/unload", "tiny/unload", "parcels/unload", "parcels/load")
            return [(await http.post(f"/v2/repository/models/{call}")).status_code for call in calls]

    local = asyncio.run(answers())
    service.pipeline = graph
    assert asyncio.run(answers())[:3] == local[:3] == [404, 404, 400]
    assert asyncio.run(answers())[3:] == [501, 501]  # parcels was unloaded by the local round: the load is 501 too
    assert local[3:] == [200, 200]
