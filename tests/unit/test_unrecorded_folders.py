"""Which trained-models folders no row records are the server's tenant's (serving.model_control's
`check_unrecorded_folder`): versions put there by hand (none names the training job that made it). A folder a job
made stays its tenant's without a row: a registration that failed before any version (only the policy file left),
or a version written and not yet recorded. And the rule holds for a job already queued when such a folder appears: it
fails rather than registering into the hand-made model and recording its tenant as the owner. Over
tests.unit.test_training_runs' World (a TrainingService, SQLite store, tiny repository; tenant acme)."""

import asyncio
import errno
import shutil
from pathlib import Path
from typing import Any

import pytest

from serving.model_versions import METRICS_FILE
from serving.training import registry
from tests.unit.test_training_runs import World

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def test_a_failed_first_registration_leaves_the_name_its_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)

    def no_space(self: Any, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    async def scenario() -> None:
        with monkeypatch.context() as patched:
            patched.setattr(registry.ClassifierHead, "save", no_space)
            failed = await world.submit()
            await world.finished()
            assert (await asyncio.to_thread(world.store.get, failed.id)).status == "failed"
        assert world.on_disk() == ["versions.yaml"] and world.store.versions("parcels") == []
        again = await world.submit()  # was 403 "has no recorded owner"
        await world.finished()
        assert (await asyncio.to_thread(world.store.get, again.id)).status == "completed"

    asyncio.run(scenario())


def test_a_queued_job_does_not_take_a_hand_made_folder_that_appeared(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        seed = await world.submit("seed")
        await world.finished()
        assert (await asyncio.to_thread(world.store.get, seed.id)).status == "completed"
        await world.service.model_lock.acquire()  # the next job waits to register
        job = await world.submit("parcels")  # no folder of that name yet: accepted
        shutil.copytree(world.trained / "seed", world.trained / "parcels")  # an operator's model appears
        for metrics in (world.trained / "parcels").glob(f"*/{METRICS_FILE}"):
            metrics.unlink()  # versions no job made here
        world.service.model_lock.release()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "failed" and "has no recorded owner" in (final.error or ""), final.error
        assert world.store.versions("parcels") == [] and world.on_disk("parcels") == world.on_disk("seed")

    asyncio.run(scenario())
