"""The poll loop acts on what a model folder says when it holds the model lock, not on what it read before waiting
for it: a promotion made through the API meanwhile is not undone."""

import asyncio
from pathlib import Path

import pytest

import serving.model_poll as model_poll
from serving.model_control import load_model, load_unlocked
from serving.model_poll import ModelPoller
from serving.model_versions import VersionPolicy, write_policy
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit


def test_a_promotion_made_while_the_poll_waited_for_the_lock_stays_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder was edited to serve no version; the poll read that, then waited for the lock an API promotion of
    version 2 held. It then unloaded the model the promotion had just loaded, and recorded the folder as it was by
    then (serving 2): the model stayed unloaded though its folder serves version 2, until the folder changed again."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "polled"
    for version in ("1", "2"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    write_policy(root, VersionPolicy(policy="specific", versions=["1"]))
    reads: list[int] = []
    read_states = model_poll.read_states

    def counted_read(*args: object) -> object:
        reads.append(1)
        return read_states(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(model_poll, "read_states", counted_read)

    async def scenario() -> list[str]:
        assert await load_model(service, "polled") == "1"
        poller = ModelPoller(service, settings, 3600.0)
        write_policy(root, VersionPolicy(policy="specific", versions=[]))  # an operator: serve none
        async with service.model_lock:  # an API promotion holds the lock
            polling = asyncio.ensure_future(poller.poll_once())
            while not reads:
                await asyncio.sleep(0.01)
            for _ in range(10):  # the poll has read "serves none" and now waits for the lock
                await asyncio.sleep(0.01)
            write_policy(root, VersionPolicy(policy="specific", versions=["2"]))
            assert await load_unlocked(service, "polled") == "2"
        return await polling

    asyncio.run(scenario())
    assert service.served_entry("polled").version == "2"
