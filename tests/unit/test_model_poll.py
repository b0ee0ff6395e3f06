"""What the poll loop reads from a model folder (serving.model_poll.folder_state): which changes reload a model,
which only change its list of versions, and which leave it alone."""

import asyncio
import os
import shutil
from pathlib import Path

from serving.model_control import unload_model
from serving.model_poll import ModelPoller
from serving.model_versions import CanarySplit, FolderState, VersionPolicy, folder_state, write_policy
from tests.unit.tiny_models import tiny_local_service, versioned_copy


def _version(root: Path, version: str, head: bytes = b"head") -> None:
    folder = root / version
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {root.name}\nversion: '{version}'\n")
    (folder / "head.npz").write_bytes(head)


def test_a_versioned_folder_names_what_it_serves_and_the_files_that_serving_reads(tmp_path: Path) -> None:
    root = tmp_path / "parcels"
    _version(root, "1")
    _version(root, "2")
    state = folder_state(root)
    assert state is not None and state.served == ("2",) and state.versions == ("1", "2")  # policy latest
    assert {Path(path).parent.name for path, _, _ in state.files} == {"2"}
    assert folder_state(root) == state  # reading again changes nothing

    write_policy(root, VersionPolicy(policy="specific", versions=["1"]))  # a promotion (or rollback)
    promoted = folder_state(root)
    assert promoted is not None and promoted.served == ("1",) and not promoted.same_serving(state)

    write_policy(root, VersionPolicy(policy="specific", versions=["1"], canary=CanarySplit(version="2", percent=5)))
    canary = folder_state(root)
    assert canary is not None and canary.served == ("1", "2") and canary.canary_percent == 5
    assert not canary.same_serving(promoted)


def test_a_new_unserved_version_changes_only_the_listing(tmp_path: Path) -> None:
    root = tmp_path / "parcels"
    _version(root, "1")
    write_policy(root, VersionPolicy(policy="specific", versions=["1"]))
    before = folder_state(root)
    _version(root, "2")  # a training job registered it without promoting it
    after = folder_state(root)
    assert before is not None and after is not None and after != before
    assert after.versions == ("1", "2") and after.same_serving(before)


def test_a_served_file_rewritten_in_place_reloads(tmp_path: Path) -> None:
    root = tmp_path / "parcels"
    _version(root, "1")
    before = folder_state(root)
    head = root / "1" / "head.npz"
    head.write_bytes(b"other weights")
    os.utime(head, ns=(1, 1))
    after = folder_state(root)
    assert isinstance(after, FolderState) and not after.same_serving(before)


def test_no_model_an_invalid_policy_and_a_policy_that_serves_none(tmp_path: Path) -> None:
    assert folder_state(tmp_path / "missing") is None
    assert folder_state(tmp_path) is None  # a folder without a config or version folders
    root = tmp_path / "parcels"
    _version(root, "1")
    (root / "versions.yaml").write_text("policy: sometimes\n")
    invalid = folder_state(root)
    assert invalid is not None and "versions.yaml" in invalid.error and invalid.served == ()
    write_policy(root, VersionPolicy(policy="specific", versions=[]))
    none = folder_state(root)
    assert none is not None and none.served == () and not none.error and none.versions == ("1",)


def test_the_poll_loop_follows_a_folder_that_another_replica_changes(tmp_path: Path) -> None:
    """A replica's poller over the local placement's real service (tiny ONNX models): a new trained model is loaded,
    a promotion followed, an unload through this replica kept until the folder changes, a policy that cannot load
    tried once, a removed folder unloaded."""
    service, settings = tiny_local_service(tmp_path)
    poller = ModelPoller(service, settings, interval_s=3600)  # polled by hand below

    async def scenario() -> None:
        await poller.start()
        assert await poller.poll_once() == []  # nothing changed since the replica was built
        root = settings.trained_models / "parcels"
        for version in ("1", "2"):
            versioned_copy(settings.model_repository / "tiny", root, version)
        write_policy(root, VersionPolicy(policy="specific", versions=["1"]))
        assert await poller.poll_once() == ["parcels"]  # another replica trained it
        assert service.served_entry("parcels").version == "1" and await poller.poll_once() == []
        write_policy(root, VersionPolicy(policy="specific", versions=["2"]))  # ... and promoted version 2
        assert await poller.poll_once() == ["parcels"] and service.served_entry("parcels").version == "2"
        await unload_model(service, "parcels")  # through this replica: it lasts
        assert await poller.poll_once() == [] and "parcels" not in service.repository.entries
        write_policy(root, VersionPolicy(policy="specific", versions=["1"]))  # the folder changed: followed
        assert await poller.poll_once() == ["parcels"] and service.served_entry("parcels").version == "1"
        (root / "versions.yaml").write_text("policy: sometimes\n")  # cannot load: tried once, version 1 stays
        assert await poller.poll_once() == [] and service.served_entry("parcels").version == "1"
        shutil.rmtree(root)
        assert await poller.poll_once() == ["parcels"] and "parcels" not in service.repository.entries
        assert service.served_entry("tiny").name == "tiny"  # the default model is never unloaded by a poll

    asyncio.run(scenario())
