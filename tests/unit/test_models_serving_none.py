"""Trained models whose version policy serves none (model review): a new one (a training job's first version with
promote never, or if_better on another replica) was never listed by the other replicas' pollers, so promoting it
there was a 404; and one none of whose versions could be read (a folder being copied) was listed with no versions,
which made `/v1/models` and the repository index answer 500 for every caller."""

import asyncio
import tempfile
from pathlib import Path

import httpx
import pytest

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.model_poll import ModelPoller
from serving.model_versions import VersionPolicy, write_policy
from serving.placement import build_service, compose
from tests.unit.tiny_models import tiny_local_service, tiny_settings, versioned_copy

pytestmark = pytest.mark.unit


async def _answers(app: object, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return [await http.request(method, path) for method, path in calls]


def test_another_replicas_new_unserved_model_is_listed_and_can_be_promoted_here() -> None:
    service, settings = tiny_local_service(Path(tempfile.mkdtemp()))  # this replica, started before the model

    async def scenario() -> list[httpx.Response]:
        poller = ModelPoller(service, settings, 3600)
        await poller.start()
        try:
            root = settings.trained_models / "parcels"  # what the other replica's training job left
            versioned_copy(settings.model_repository / "tiny", root, "1")
            write_policy(root, VersionPolicy(policy="specific", versions=[]))
            await poller.poll_once()
            app = create_http_app(service, settings=settings)
            return await _answers(app, [("GET", "/v1/models"), ("POST", "/v1/models/parcels/versions/1/promote")])
        finally:
            await poller.stop()

    listed, promoted = asyncio.run(scenario())
    assert "parcels" in [model["name"] for model in listed.json()["models"]]  # not listed before
    assert promoted.status_code == 200, promoted.text  # 404 unknown model before


def test_a_model_none_of_whose_versions_can_be_read_is_left_out_of_the_listing() -> None:
    settings = tiny_settings(Path(tempfile.mkdtemp()))
    root = settings.trained_models / "parcels"
    versioned_copy(settings.model_repository / "tiny", root, "1")
    write_policy(root, VersionPolicy(policy="specific", versions=[]))
    (root / "1" / "config.yaml").write_text("name: parcels\nversion: '1'\ninput: [")  # half copied
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    app = create_http_app(service, settings=settings)
    calls = [("GET", "/v1/models"), ("POST", "/v2/repository/index"), ("POST", "/v1/models/parcels/versions/1/promote")]
    models, index, promote = asyncio.run(_answers(app, calls))
    assert models.status_code == 200 and index.status_code == 200, (models.text, index.text)  # 500 and 500 before
    assert promote.status_code == 404, promote.text  # 500 before
