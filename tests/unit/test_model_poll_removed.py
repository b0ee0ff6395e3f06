"""A trained model whose folder is removed leaves the listing at the next poll, as in Triton's poll mode: it stopped
being served but `/v1/models` still listed it UNAVAILABLE, citing a versions.yaml that no longer existed, until
the replica restarted. Over the local placement's real service (tiny ONNX models), polled by hand."""

import asyncio
import shutil
from pathlib import Path

import pytest

from serving.model_control import unload_model
from serving.model_poll import ModelPoller
from serving.model_status import model_statuses
from serving.model_versions import VersionPolicy, write_policy
from serving.service import InferenceService
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit


async def listed(service: InferenceService) -> set[str]:
    """The names `/v1/models` lists."""
    return {status.name for status in await model_statuses(service)}


@pytest.mark.parametrize("unloaded", ["never", "before its folder went", "after its folder went"])
def test_a_removed_model_folder_leaves_the_listing_at_the_next_poll(tmp_path: Path, unloaded: str) -> None:
    """Unloaded through this replica or not (an unload records the folder's state, None once it is gone)."""
    service, settings = tiny_local_service(tmp_path)
    poller = ModelPoller(service, settings, interval_s=3600)

    async def scenario() -> None:
        await poller.start()
        root = settings.trained_models / "parcels"
        for version in ("1", "2", "3"):
            versioned_copy(settings.model_repository / "tiny", root, version)
        write_policy(root, VersionPolicy(policy="specific", versions=["3"]))  # 1 and 2 listed, not served
        assert await poller.poll_once() == ["parcels"] and "parcels" in await listed(service)
        if unloaded == "before its folder went":
            await unload_model(service, "parcels")
            assert "parcels" in await listed(service)
        shutil.rmtree(root)
        if unloaded == "after its folder went":
            await unload_model(service, "parcels")
        assert await poller.poll_once() == ["parcels"]
        assert "parcels" not in service.repository.entries and "parcels" not in await listed(service)
        assert "parcels" not in service.repository.versions and "parcels" not in service.model_states
        assert await poller.poll_once() == []  # gone: nothing more to do
        assert {"tiny"} <= await listed(service)  # the other models stay
        versioned_copy(settings.model_repository / "tiny", root, "1")  # a model of that name made again
        assert await poller.poll_once() == ["parcels"] and service.served_entry("parcels").version == "1"

    asyncio.run(scenario())
