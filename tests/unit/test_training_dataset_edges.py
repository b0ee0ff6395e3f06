"""Training jobs at edges a review found: the same image in two category folders, an unreadable `versions.yaml`, a
tenant erased while its job registers a version, a one-archive dataset renamed. Real job store (SQLite), dataset
listing, split, fit and registration; features from the fake pipeline of `test_training_runs`."""

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import serving.training.service as training_service
from serving.cli_training import training_summary
from serving.errors import classify_error
from serving.jobs.tenant_erasure import erase_tenant
from serving.security.audit import AuditEntry
from serving.training.dataset import LabelledImage, labelled_images, split
from serving.training.registry import served_version
from serving.training.store import TrainingStore
from tests.unit.test_training_runs import World, _register_one

pytestmark = pytest.mark.unit


# ---- 1. the same image labelled in two categories ---------------------------------------------------------------
def test_an_image_in_two_categories_is_left_out_of_the_fit_and_reported(tmp_path: Path) -> None:
    """Were: `a/0.jpg` copied into `b/` trained both labels as the right answer for the same image, silently."""
    world = World(tmp_path)
    copied = (world.dataset / "a" / "0.jpg").read_bytes()
    (world.dataset / "b" / "also_a.jpg").write_bytes(copied)
    (world.dataset / "a" / "1 (1).jpg").write_bytes((world.dataset / "a" / "1.jpg").read_bytes())  # no contradiction

    async def scenario() -> dict[str, Any]:
        job = await world.submit()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "completed" and final.result is not None, final.error
        return final.result

    result = asyncio.run(scenario())
    skipped = result["images"]["skipped"]
    assert sorted(skipped) == ["a/0.jpg", "b/also_a.jpg"]
    assert "'b/also_a.jpg' in 'b'" in skipped["a/0.jpg"] and "two categories" in skipped["a/0.jpg"]
    assert "'a/0.jpg' in 'a'" in skipped["b/also_a.jpg"]
    counted = result["images"]["train"] + result["images"]["validation"]
    assert counted + result["images"]["validation_copies_of_training"] == 14 - 2  # 14 listed, 2 left out
    summary = training_summary(result, "if_better")
    assert "2 images left out" in summary and "b/also_a.jpg" in summary


def test_images_in_two_categories_are_found_by_their_bytes_and_name_the_other_copies() -> None:
    from serving.training.dataset import labelled_in_two_categories

    images = [
        LabelledImage("cats/1.jpg", "cats", "/d/cats/1.jpg"),
        LabelledImage("dogs/1.jpg", "dogs", "/d/dogs/1.jpg"),
        LabelledImage("dogs/2.jpg", "dogs", "/d/dogs/2.jpg"),
        LabelledImage("dogs/3.jpg", "dogs", "/d/dogs/3.jpg"),  # unreadable: no digest
    ]
    digests = {"cats/1.jpg": "x" * 64, "dogs/1.jpg": "x" * 64, "dogs/2.jpg": "y" * 64}
    reasons = labelled_in_two_categories(images, digests)
    assert sorted(reasons) == ["cats/1.jpg", "dogs/1.jpg"]
    assert "'dogs'" in reasons["cats/1.jpg"] and "dogs/1.jpg" in reasons["cats/1.jpg"]
    assert labelled_in_two_categories(images[1:], digests) == {}


# ---- 2. an unreadable versions.yaml ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "wrong"),
    [
        ("count: 1\npolicy: [latest\n", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 3"),
        ("- 1\n- 2\n", "the file: Input should be a valid dictionary"),
        ("policy: sometimes\n", "policy: Input should be 'latest' or 'specific'"),
        ("policy: specific\nversions: 3\nextra: 1\n", "versions: Input should be a valid list; extra: Extra inputs"),
        (b"policy: \xff\n", "not UTF-8"),
    ],
)
def test_an_unreadable_versions_yaml_refuses_the_job_naming_the_file_and_the_repair(
    tmp_path: Path, content: str | bytes, wrong: str
) -> None:
    """Were: the job failed 'internal error (ValueError), see the server log', a 500-class error; then a 202 and a
    job that failed once it ran, where docs/TRAINING.md promised a 409."""
    from serving.training.registry import VersionPolicyError

    world = World(tmp_path)
    asyncio.run(_register_one(world))
    policy = world.trained / "parcels" / "versions.yaml"
    policy.write_bytes(content if isinstance(content, bytes) else content.encode())

    async def scenario() -> str:
        with pytest.raises(VersionPolicyError) as refused:
            await world.submit()
        assert classify_error(refused.value).http_status == 409
        return str(refused.value)

    error = asyncio.run(scenario())
    assert not error.startswith("internal error") and str(tmp_path) not in error
    assert "parcels/versions.yaml" in error and wrong in error
    assert "imgserve models promote parcels" in error and "delete" in error  # how to repair it
    assert world.on_disk() == ["1", "versions.yaml"]  # failed before anything was registered


def test_a_versions_yaml_broken_after_submission_fails_the_job_when_it_starts(tmp_path: Path) -> None:
    world = World(tmp_path)
    asyncio.run(_register_one(world))

    async def scenario() -> str:
        job = await world.submit()  # accepted: the file is fine; its run is scheduled, not started
        (world.trained / "parcels" / "versions.yaml").write_text("policy: [\n")
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "failed" and final.error is not None
        return final.error

    error = asyncio.run(scenario())
    assert "parcels/versions.yaml" in error and "not valid YAML" in error and str(tmp_path) not in error
    assert world.on_disk() == ["1", "versions.yaml"]


def test_the_policy_error_is_a_config_error_not_an_internal_one(tmp_path: Path) -> None:
    from serving.training.registry import VersionPolicyError

    (tmp_path / "parcels" / "1").mkdir(parents=True)
    (tmp_path / "parcels" / "1" / "config.yaml").write_text("name: parcels\n")
    (tmp_path / "parcels" / "versions.yaml").write_text("policy: [\n")
    with pytest.raises(VersionPolicyError) as caught:
        served_version(tmp_path, "parcels")
    info = classify_error(caught.value)
    assert info.kind == "invalid_version_policy" and info.http_status < 500 and "versions.yaml" in info.message


# ---- 3. a tenant erased while its job registers a version -------------------------------------------------------
@pytest.mark.parametrize("hold", ["after the version folder is written", "before the job begins registering"])
def test_a_tenant_erased_while_its_job_registers_leaves_no_version_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: str
) -> None:
    """Were: erased between the version folder's rename and its row, the version stayed on disk (served, by
    `promote`) and its row was written for a tenant that no longer exists."""
    world = World(tmp_path)
    asyncio.run(_register_one(world))  # the tenant's earlier version: erased too

    def erase() -> None:
        erase_tenant(world.store.engine, None, world.trained, "acme", AuditEntry(action="tenant.erase"))

    if hold == "after the version folder is written":
        real_register = training_service.register_version

        def register_then_erase(*args: Any, **kwargs: Any) -> str:
            version = real_register(*args, **kwargs)
            erase()  # the operator's `imgserve tenants erase acme`, from another process, at this point
            return version

        monkeypatch.setattr(training_service, "register_version", register_then_erase)
    else:
        real_begin = TrainingStore.begin_registration

        def erase_then_begin(self: TrainingStore, *args: Any) -> bool:
            erase()
            return real_begin(self, *args)

        monkeypatch.setattr(TrainingStore, "begin_registration", erase_then_begin)

    async def scenario() -> None:
        await world.submit()
        outcomes = await asyncio.gather(*world.training._tasks, return_exceptions=True)
        assert outcomes == [None]

    asyncio.run(scenario())
    assert world.on_disk() == [] and not (world.trained / "parcels").exists()
    assert world.store.versions("parcels") == [] and world.store.list_jobs("acme") == []


# ---- 4. a one-archive dataset renamed ---------------------------------------------------------------------------
def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, "JPEG")
    return out.getvalue()


def test_renaming_a_one_archive_dataset_keeps_its_validation_split(tmp_path: Path) -> None:
    """Were: the split ranked images by a hash of their name, which for a one-archive dataset starts with the
    archive's file name: `parcels.zip` renamed `parcels-2024.zip` validated on other images."""
    validation: dict[str, list[str]] = {}
    for name in ("parcels.zip", "parcels-2024.zip"):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            for category in ("damaged", "intact"):
                for i in range(20):
                    archive.writestr(f"{category}/{i}.jpg", _jpeg(i))
        images, _ = labelled_images(f"file://{tmp_path}/{name}", tmp_path)
        validation[name] = sorted(str(image.member) for image in split(images, 0.2)[1])
    assert validation["parcels.zip"] == validation["parcels-2024.zip"]


def test_a_folder_dataset_splits_as_before(tmp_path: Path) -> None:
    """The change is for archives only: a folder dataset's names are already relative to it, and its split (what
    its versions were compared on) stays the same."""
    import hashlib

    from serving.training.dataset import SPLIT_SALT

    for category in ("damaged", "intact"):
        (tmp_path / "data" / category).mkdir(parents=True)
        for i in range(20):
            (tmp_path / "data" / category / f"{i}.jpg").write_bytes(_jpeg(i))
    images, _ = labelled_images(f"file://{tmp_path}/data", tmp_path)
    _, validation = split(images, 0.2)
    by_name = {
        label: sorted(
            (i for i in images if i.label == label),
            key=lambda i: hashlib.sha256(f"{SPLIT_SALT}:{i.name}".encode()).hexdigest(),
        )[:4]
        for label in ("damaged", "intact")
    }
    assert sorted(i.name for i in validation) == sorted(i.name for group in by_name.values() for i in group)
