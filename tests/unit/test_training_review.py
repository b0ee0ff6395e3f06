"""Training jobs at their edges, found in review: a job of another tenant queued before a model's first version is
registered, a version number whose folder was removed, the served version promoted during a job's fit, a corrupt
archive in a dataset, far too many categories, a server stopped while a job registered, the served version compared
on its own training images, server paths in why images were left out, a job store outage as a job ends. Real job
store (SQLite), dataset listing, split, fit and registration; features from the fake pipeline of
`test_training_runs`."""

import asyncio
import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from serving.errors import BadRequestError
from serving.model_versions import VersionPolicy, read_policy, write_policy
from serving.security.principal import Principal
from serving.trained_head import ClassifierHead
from serving.training.dataset import LabelledImage, check_classes, labelled_images
from serving.training.registry import HEAD_FILE
from serving.training.service import TrainingRequest, TrainingService
from serving.training.store import TrainingStore
from tests.unit.test_training_runs import OWNER, World, _fit_done, _jpeg, _register_one

pytestmark = pytest.mark.unit
GLOBEX = Principal(key_id="k2", tenant="globex", role="admin")
TRAINED_ON_FILE = "trained_on.txt"  # a version's training images (sha256, one a line): serving.training.registry


def test_a_job_of_another_tenant_queued_before_the_first_version_cannot_replace_the_model(tmp_path: Path) -> None:
    """Were: ownership was checked at submit only, from the versions recorded then; a second tenant's job submitted
    while the first tenant's first job ran passed it, and registered (and with `always` served) a version of the
    first tenant's model."""
    world = World(tmp_path)

    async def scenario() -> None:
        await world.service.model_lock.acquire()  # neither job registers before both are submitted
        first = await world.submit()
        request = TrainingRequest(model="parcels", dataset=f"file://{world.dataset}", promote="always")
        second = await world.training.submit(request, GLOBEX)
        world.service.model_lock.release()
        await world.finished()
        done = await asyncio.to_thread(world.store.get, first.id)
        refused = await asyncio.to_thread(world.store.get, second.id)
        assert done.status == "completed" and done.result is not None and done.result["version"] == "1"
        assert refused.status == "failed" and "another tenant" in (refused.error or "")
        assert world.on_disk() == ["1", "versions.yaml"] and read_policy(world.trained / "parcels").versions == ["1"]
        assert [row["tenant"] for row in world.store.versions("parcels")] == ["acme"]

    asyncio.run(scenario())


def test_a_version_number_whose_folder_was_removed_is_not_given_again(tmp_path: Path) -> None:
    """Were: the number came from the folders only; after the model's folder was removed (the documented way to take
    it out of service) the next job registered and served version 1 again, then failed (internal error) on the
    database's unique (model, version) row: a served version with a failed job and no owner recorded."""
    world = World(tmp_path)
    assert asyncio.run(_register_one(world)) == "1"
    shutil.rmtree(world.trained / "parcels")
    assert asyncio.run(_register_one(world)) == "2"
    assert world.on_disk() == ["2", "versions.yaml"]
    assert [row["version"] for row in world.store.versions("parcels")] == ["1", "2"]


def _worse(folder: Path) -> None:
    """Make the version in `folder` answer the other category for every image (accuracy 0 on two categories)."""
    head = ClassifierHead.load(folder / HEAD_FILE)
    ClassifierHead(head.mean, head.scale, -head.weights, -head.bias, head.labels).save(folder / HEAD_FILE)


def test_a_version_promoted_during_the_fit_is_what_the_new_version_must_beat(tmp_path: Path) -> None:
    """Were: `if_better` compared the new version with the version served when the fit ended; an operator's
    promotion of a better version while the job waited for the model lock was then replaced by a version that does
    not beat it, and the result named the promoted version with the other version's accuracy."""
    world = World(tmp_path)
    assert asyncio.run(_register_one(world)) == "1"
    never = TrainingRequest(model="parcels", dataset=f"file://{world.dataset}", promote="never")

    async def scenario() -> None:
        second = await world.training.submit(never, OWNER)
        await world.finished()
        assert (await asyncio.to_thread(world.store.get, second.id)).result["version"] == "2"  # type: ignore[index]
        _worse(world.trained / "parcels" / "1")  # served: the new job will beat it
        await world.service.model_lock.acquire()  # an operator's promotion of version 2 holds the lock
        job = await world.submit()
        await world.until(job.id, _fit_done)
        await asyncio.sleep(0.2)  # waiting for the lock, its decision against version 1 taken
        write_policy(world.trained / "parcels", VersionPolicy(policy="specific", versions=["2"]))
        world.service.model_lock.release()
        await world.finished()
        result = (await asyncio.to_thread(world.store.get, job.id)).result
        assert result is not None and result["version"] == "3" and result["previous_version"] == "2"
        assert result["validation"]["accuracy"] == result["previous_version_accuracy"] == 1.0
        assert result["promoted"] is False and read_policy(world.trained / "parcels").versions == ["2"]

    asyncio.run(scenario())


def _tgz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for i in range(8):
            data = _jpeg((10 * i, 20, 30)) + bytes(range(256)) * 64  # incompressible enough to cut mid-stream
            info = tarfile.TarInfo(f"c/{i}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip_without_directory() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("c/0.jpg", _jpeg((1, 2, 3)))
    return out.getvalue()[:40]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("more.zip", b"PK\x03\x04 this is no zip"),
        ("more.zip", "zip"),
        ("more.tgz", b"\x1f\x8b\x08 this is no gzip stream"),
        ("more.tgz", "tgz"),
        ("more.tar.xz", b"\xfd7zXZ\x00 garbage"),
        ("more.tar.bz2", b"BZh9 garbage"),
    ],
)
def test_a_dataset_holding_a_corrupt_archive_is_a_400_not_a_500(tmp_path: Path, name: str, data: bytes | str) -> None:
    """Were: listing a dataset caught OSError and SourceError only; a corrupt or truncated archive in it raised
    BadZipFile / ReadError / EOFError, an internal error (500) at submit."""
    content = _zip_without_directory() if data == "zip" else _tgz()[:1500] if data == "tgz" else data
    assert isinstance(content, bytes)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / label / f"{i}.jpg").write_bytes(_jpeg((100, 50 * i, 0)))
    (tmp_path / "data" / "a" / name).write_bytes(content)
    with pytest.raises(BadRequestError, match="dataset '.*data' holds an archive that cannot be read"):
        labelled_images(f"file://{tmp_path}/data", tmp_path)


def test_a_dataset_with_too_many_categories_is_refused_before_it_is_trained() -> None:
    """Were: any number of categories was accepted; the fit holds several images x categories arrays of float64, so
    a collection labelled with 100,000 categories (labels may name 1,000,000 images) exhausted the memory."""

    def images(categories: int) -> list[LabelledImage]:
        return [LabelledImage(f"c{c}/{i}.jpg", f"c{c}", f"/d/c{c}/{i}.jpg") for c in range(categories) for i in (0, 1)]

    assert len(check_classes(images(1000))) == 1000
    with pytest.raises(BadRequestError, match="at most 1000 categories, found 1001"):
        check_classes(images(1001))


class ServerStopped(BaseException):
    """The process stopping where it is (not an error the job could record)."""


def _stop(*args: object, **kwargs: object) -> None:
    raise ServerStopped


@pytest.mark.parametrize("where", ["loading the new version", "after recording it"])
def test_a_job_rerun_after_its_server_stopped_while_registering_finishes_that_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Were: a server that stopped after the version's folder was renamed into place (while it loaded the version,
    or before the job was recorded completed) ran the job again at its next start, which registered a second copy
    of the version (and the first had no owner row when the stop came before it was recorded)."""
    world = World(tmp_path)
    real_record = TrainingStore.record_version

    def record_then_stop(self: TrainingStore, *args: Any, **kwargs: Any) -> None:
        real_record(self, *args, **kwargs)
        raise ServerStopped

    if where == "after recording it":
        monkeypatch.setattr(TrainingStore, "record_version", record_then_stop)
    else:
        monkeypatch.setattr(TrainingService, "_promote", _stop)

    async def scenario() -> None:
        job = await world.submit()
        outcomes = await asyncio.gather(*world.training._tasks, return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [ServerStopped]
        assert world.on_disk() == ["1", "versions.yaml"]
        monkeypatch.undo()  # the next start: this process, as if new, finds the job running under a dead runner
        with world.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE training_jobs SET runner_pid = 4000000, runner_started_at = 1.0 WHERE id = :id"),
                {"id": job.id},
            )
        await world.training.resume()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "completed" and final.result is not None, final.error
        assert final.result["version"] == "1" and final.result["promoted"] is True
        assert world.on_disk() == ["1", "versions.yaml"] and read_policy(world.trained / "parcels").versions == ["1"]
        assert [(row["version"], row["training_job"]) for row in world.store.versions("parcels")] == [("1", job.id)]

    asyncio.run(scenario())


def test_the_served_version_is_compared_only_on_held_out_images_it_did_not_train_on(tmp_path: Path) -> None:
    from serving.training.compare import NOT_COMPARED, Comparison, compare_with_served

    always_a = ClassifierHead(np.zeros(2), np.ones(2), np.zeros((2, 2)), np.array([1.0, 0.0]), ("a", "b"))
    always_a.save(tmp_path / HEAD_FILE)
    (tmp_path / TRAINED_ON_FILE).write_text("seen-1\nseen-2\n")
    perfect = ClassifierHead(np.zeros(2), np.ones(2), np.eye(2) * 5, np.zeros(2), ("a", "b"))
    xv, yv = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), np.array([0, 0, 1, 1])
    digests = ["seen-1", "seen-2", "new-1", "new-2"]  # the served version trained on the two "a" images
    assert compare_with_served(tmp_path, perfect, xv, yv, ["a", "b"], digests) == Comparison(0.0, 1.0, 2)
    assert compare_with_served(tmp_path, perfect, xv[:2], yv[:2], ["a", "b"], digests[:2]) == NOT_COMPARED
    (tmp_path / TRAINED_ON_FILE).unlink()  # a version registered before they were recorded: every image counts
    assert compare_with_served(tmp_path, perfect, xv, yv, ["a", "b"], digests) == Comparison(0.5, 1.0, 4)


def test_a_retrain_on_a_grown_split_compares_without_the_served_version_s_training_images(tmp_path: Path) -> None:
    """Were: the served version was scored on every validation image of the new job, though a larger validation
    part (a dataset that grew, another `validation_fraction`) holds images it trained on: its accuracy was inflated
    and `if_better` kept it."""
    world = World(tmp_path)
    for i in range(6, 10):  # b: 10 images; a: 6
        (world.dataset / "b" / f"{i}.jpg").write_bytes(_jpeg((200, 40 + 10 * i, 100)))
    assert asyncio.run(_register_one(world)) == "1"  # validation: 1 of a, 2 of b; it trained on the rest
    v1 = world.trained / "parcels" / "1"
    head = ClassifierHead.load(v1 / HEAD_FILE)
    ClassifierHead(head.mean, head.scale, 0 * head.weights, np.array([0.0, 1.0]), head.labels).save(v1 / HEAD_FILE)
    request = TrainingRequest(
        model="parcels", dataset=f"file://{world.dataset}", validation_fraction=0.5, promote="never"
    )

    async def scenario() -> dict[str, Any]:
        job = await world.training.submit(request, OWNER)
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.result is not None, final.error
        return final.result

    result = asyncio.run(scenario())
    assert result["images"]["validation"] == 8  # 3 of a, 5 of b: 5 of them version 1's training images
    # version 1 (always "b") on the 3 it held out too: 2 of 3, not 5 of 8
    assert result["previous_version_accuracy"] == 0.6667 and result["images_compared"] == 3
    assert len((v1 / TRAINED_ON_FILE).read_text().split()) == 13  # what version 1 trained on: 5 of a, 8 of b


def test_why_an_image_was_left_out_names_no_server_path_or_address(tmp_path: Path) -> None:
    """Were: `images.skipped` in a job's result (and a refused job's error) carried each exception's text: an
    OSError's server path (the object store, a resolved link), an internal error's paths and Ray addresses, which
    `classify_error` keeps out of every other answer."""
    from pipelines.errors import InvalidImageError
    from serving.training.features import FeatureCache, embed_images

    class Pipeline:
        async def run(self, data: bytes, plan: Any) -> Any:
            if data == b"not an image":
                raise InvalidImageError("cannot identify image file")
            raise RuntimeError("session /opt/imgserve/cache/onnx/x.onnx on 10.0.0.7:6379 failed")

    backbone = World(tmp_path).service.served_entry("mobilenet_v2_embedding")
    images = [LabelledImage(name, name[0], f"/d/{name}") for name in ("a/0.jpg", "a/1.jpg", "b/0.jpg")]

    def read(chunk: list[LabelledImage]) -> list[bytes | Exception]:
        return [PermissionError(13, "Permission denied", "/srv/imgserve/objects/ab/ab12"), b"not an image", b"x"]

    service = SimpleNamespace(pipeline=Pipeline())
    cache = FeatureCache(tmp_path / "cache", backbone)
    result = asyncio.run(embed_images(service, backbone, images, cache, read))  # type: ignore[arg-type]
    assert result.errors == {
        "a/0.jpg": "unreadable: Permission denied",
        "a/1.jpg": "invalid_image: cannot identify image file",
        "b/0.jpg": "internal: internal error, see the server log",
    }


def test_a_job_store_outage_as_a_job_ends_delays_its_outcome_and_does_not_leave_it_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were: a failed write of a job's outcome (the store down for a moment) ended the runner's task and left the job
    running under this live process, which no replica takes over, and too late to cancel once it registered."""
    import serving.jobs.outage as outage

    world = World(tmp_path)
    monkeypatch.setattr(outage, "FIRST_DELAY_S", 0.01)  # the retries' first wait
    real_finish, real_record = TrainingStore.finish, TrainingStore.record_version
    failures: list[str] = []

    def down_twice(real: Any) -> Any:
        def call(self: TrainingStore, *args: Any, **kwargs: Any) -> Any:
            if len([f for f in failures if f == real.__name__]) < 2:
                failures.append(real.__name__)
                raise sa.exc.OperationalError("UPDATE training_jobs", {}, Exception("server closed the connection"))
            return real(self, *args, **kwargs)

        return call

    monkeypatch.setattr(TrainingStore, "finish", down_twice(real_finish))
    monkeypatch.setattr(TrainingStore, "record_version", down_twice(real_record))
    assert asyncio.run(_register_one(world)) == "1"
    assert sorted(failures) == ["finish", "finish", "record_version", "record_version"]
    assert [row["version"] for row in world.store.versions("parcels")] == ["1"]
