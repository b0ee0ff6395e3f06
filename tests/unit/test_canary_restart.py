"""A canary split kept in `versions.yaml` survives a restart: the application built from the folders (what a restart
does, `serving.placement.compose` + `build_service`) serves the canary version beside the served one, in both
placements. A canary version that cannot be served is dropped with a log line and every request goes to the served
version: a configured canary never answers 503 (it did: its share of requests got "model 'parcels@2' not served by
this application" until an explicit load)."""

import asyncio
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serving.config.app_args import AppArgs
from serving.model_versions import CanarySplit, VersionPolicy, write_policy
from serving.placement import build_service, compose
from serving.placement.graph import GraphStages
from serving.requests import ImageOptions
from tests.unit.tiny_models import tiny_settings, versioned_copy

pytestmark = pytest.mark.unit


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def canary_repository(tmp_path: Path, corrupt_canary: bool = False) -> Any:
    """Settings over the tiny models plus a trained `parcels` (versions 1 and 2) whose policy serves version 1 with
    version 2 on 20 % of the requests: the folder a server stopped with a canary leaves behind."""
    settings = tiny_settings(tmp_path)
    root = settings.trained_models / "parcels"
    for version in ("1", "2"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    if corrupt_canary:
        (root / "2" / "model.onnx").write_bytes(b"not the weights the config names")
    write_policy(root, VersionPolicy(policy="specific", versions=["1"], canary=CanarySplit(version="2", percent=20)))
    return settings


def answered_versions(service: Any, requests: int = 20) -> Counter[str]:
    async def classify() -> list[str]:
        options = ImageOptions(model="parcels")
        return [(await service.classify([jpeg()], options))[0].model_version for _ in range(requests)]

    return Counter(asyncio.run(classify()))


def test_a_canary_split_survives_a_restart_in_the_local_placement(tmp_path: Path) -> None:
    settings = canary_repository(tmp_path)
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    assert answered_versions(service) == {"1": 16, "2": 4}  # every 5th request, none refused
    assert service.repository.canaries["parcels"][1] == 20


def test_a_version_that_is_not_loaded_is_refused_naming_the_canary_too(tmp_path: Path) -> None:
    """ "version 3 is not loaded (loaded: 1)" while version 2 answered as the canary (a training review helper)."""
    from serving.repository import UnknownModelError

    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), canary_repository(tmp_path)))
    with pytest.raises(UnknownModelError, match=r"version 3 is not loaded \(loaded: 1, canary 2\)"):
        service.loaded_entry("parcels", "3")
    assert service.loaded_entry("parcels", "2").version == "2"


def test_a_canary_that_cannot_load_at_start_is_dropped_and_the_served_version_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = canary_repository(tmp_path, corrupt_canary=True)
    with caplog.at_level(logging.WARNING, logger="imgserve.placement"):
        config = compose(AppArgs(placement="local", default_model="tiny"), settings)
    assert "parcels" not in config.repository.canaries
    assert any("canary" in r.getMessage() and "parcels" in r.getMessage() for r in caplog.records)
    service = build_service(config)
    assert answered_versions(service) == {"1": 20}


def test_a_canary_stage_that_fails_to_build_is_dropped_in_the_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Weights that pass the scan but that the backend cannot open when the replica builds its stages: the replica
    serves without the canary (as a failed load at runtime leaves what was served) instead of failing to start."""
    import serving.placement as placement

    settings = canary_repository(tmp_path)
    config = compose(AppArgs(placement="local", default_model="tiny"), settings)
    real_stage = placement.ModelStage

    def failing_canary(entry: Any, *args: Any) -> Any:
        if entry.key == "parcels@2":
            raise RuntimeError("the backend cannot open this graph")
        return real_stage(entry, *args)

    monkeypatch.setattr(placement, "ModelStage", failing_canary)
    with caplog.at_level(logging.WARNING, logger="imgserve.placement"):
        service = build_service(config)
    assert "parcels@2" not in service.pipeline.model_names and "parcels" not in service.repository.canaries
    assert any("model parcels version 2 is not served" in r.getMessage() for r in caplog.records)
    assert answered_versions(service) == {"1": 20}


def test_the_graph_placement_deploys_the_canary_version_and_routes_to_a_deployed_stage(tmp_path: Path) -> None:
    """The graph makes one deployment per key of `StageSettings.models` (serving.app.graph_stages): the canary's
    key is there, so the Ingress routes its share to a stage that exists."""
    settings = canary_repository(tmp_path)
    config = compose(AppArgs(placement="graph", default_model="tiny"), settings)
    assert config.stages.models["parcels@2"].version == "2" and config.stages.models["parcels"].version == "1"
    handles = {key: object() for key in config.stages.models}  # stand-ins for the deployments' handles

    async def routes() -> list[str]:  # the graph's batch queues are made inside a running loop, as in a replica
        service = build_service(config, GraphStages(decode=object(), models=handles))  # type: ignore[arg-type]
        keys = [service.routed_entry("parcels").key for _ in range(20)]
        assert set(keys) <= set(service.pipeline.model_names)
        return keys

    assert Counter(asyncio.run(routes())) == {"parcels": 16, "parcels@2": 4}
