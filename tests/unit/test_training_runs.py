"""Training jobs run end to end against a real job store (SQLite), real dataset listing, split, fit and
registration; the backbone's features come from a fake pipeline (an image's mean colour), so a job takes a second.

What a run must get right around its edges: a job cancelled while it waits for the model lock registers nothing; a
long fit keeps its claim (heartbeats), so another replica does not run the job a second time; a cancel during the fit
stops the fit; replicas registering versions of one model at once each get their own version number."""

import asyncio
import errno
import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

import serving.jobs.outage as outage
import serving.jobs.workers as workers
import serving.training.registry as registry
import serving.training.softmax as softmax
from serving.config.model_config import load_model_config
from serving.config.model_entry import ModelEntry
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import JobStateError
from serving.security.principal import Principal
from serving.training import store as training_store
from serving.training.service import TrainingRequest, TrainingService
from serving.training.store import TrainingJob, TrainingStore
from tests.unit.tiny_models import write_tiny_repository

pytestmark = pytest.mark.unit
OWNER = Principal(key_id="k1", tenant="acme", role="admin")


def _jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(out, "JPEG")
    return out.getvalue()


class ColourPipeline:
    """The backbone stand-in: an image's embedding is its mean colour plus a little noise seeded by its bytes."""

    async def run(self, data: bytes, plan: Any) -> Any:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        colour = np.asarray(image, np.float32).mean(axis=(0, 1)) / 255
        noise = np.random.default_rng(int(hashlib.sha256(data).hexdigest()[:8], 16)).normal(scale=0.05, size=5)
        vector = np.concatenate([colour, noise]).astype(np.float32)
        return SimpleNamespace(models={plan.models[0]: SimpleNamespace(outputs={"embedding": vector})})


class World:
    """A TrainingService over the tiny repository, a dataset folder `data/<a|b>/<i>.jpg` and a SQLite job store."""

    def __init__(self, root: Path):
        models = write_tiny_repository(root)
        base = ModelEntry(load_model_config(models / "tiny" / "config.yaml"), models / "tiny")
        update = {"task": "embedding", "name": "mobilenet_v2_embedding"}
        backbone = ModelEntry(base.config.model_copy(update=update), models / "tiny")
        self.trained = root / "trained"
        self.trained.mkdir()
        settings = SimpleNamespace(trained_models=self.trained, cache_dir=root / "cache", max_image_bytes=10**7)
        repository = SimpleNamespace(
            settings=settings, entries={"tiny": base}, versions={}, refresh_versions=lambda name: None
        )
        self.service = SimpleNamespace(
            repository=repository,
            served_entry=lambda name: backbone,
            pipeline=ColourPipeline(),
            model_lock=asyncio.Lock(),
        )
        engine = create_store_engine(f"sqlite:///{root / 'jobs.sqlite3'}")
        migrate(engine)

        async def ready() -> None:
            return None

        jobs = SimpleNamespace(
            ready=ready,
            engine=engine,
            settings=SimpleNamespace(read_root=lambda tenant: root, remote_access=lambda tenant: None),
            gate=None,  # auth off: nothing charged
            objects=lambda: None,
        )
        self.training = TrainingService(self.service, jobs)  # type: ignore[arg-type]
        self.store = TrainingStore(engine)
        self.dataset = root / "data"
        for c, label in enumerate(("a", "b")):
            (self.dataset / label).mkdir(parents=True)
            for i in range(6):
                (self.dataset / label / f"{i}.jpg").write_bytes(_jpeg((200 * c, 40 + 10 * i, 100)))

    async def submit(self, model: str = "parcels") -> TrainingJob:
        return await self.training.submit(TrainingRequest(model=model, dataset=f"file://{self.dataset}"), OWNER)

    async def until(self, job_id: str, ready: Callable[[TrainingJob], bool], timeout_s: float = 30.0) -> TrainingJob:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = await asyncio.to_thread(self.store.get, job_id)
            if ready(job):
                return job
            await asyncio.sleep(0.02)
        raise TimeoutError(f"job {job_id}: {job.status} {job.progress}")

    async def finished(self, timeout_s: float = 30.0) -> None:
        await asyncio.wait_for(asyncio.gather(*self.training._tasks), timeout_s)

    def on_disk(self, model: str = "parcels") -> list[str]:
        folder = self.trained / model
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _fit_done(job: TrainingJob) -> bool:
    progress = job.progress or {}
    return progress.get("phase") == "training" and progress.get("done") == progress.get("total", 0) > 0


def _fitting(job: TrainingJob) -> bool:
    return (job.progress or {}).get("phase") == "training"


def slow_choose_l2(seconds: float, seen_stop: list[bool]) -> Callable[..., float]:
    """A stand-in for the L2 search that takes `seconds` unless its `should_stop` says to stop."""

    def choose(x: np.ndarray, y: np.ndarray, k: int, should_stop: Callable[[], bool] = lambda: False) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if should_stop():
                seen_stop.append(True)
                raise softmax.FitStoppedError("stopped")
            time.sleep(0.02)
        return 0.01

    return choose


def test_a_job_cancelled_while_it_waits_for_the_model_lock_registers_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        await world.service.model_lock.acquire()  # an operator's model load or promotion holds it
        job = await world.submit()
        await world.until(job.id, _fit_done)
        await asyncio.sleep(0.2)  # past its last check before the lock
        assert (await world.training.cancel(job.id, OWNER)).status == "cancelled"
        world.service.model_lock.release()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "cancelled" and final.result is None
        assert world.on_disk() == [] and world.store.versions("parcels") == []  # no version, no policy, no row

    asyncio.run(scenario())


def test_a_registering_job_can_no_longer_be_cancelled_and_a_stale_runner_records_nothing(tmp_path: Path) -> None:
    store = World(tmp_path).store
    job = store.create("acme", None, "parcels", {})
    claim = store.claim(job.id)
    assert claim is not None and store.heartbeat(job.id, claim)
    assert store.begin_registration(job.id, claim)
    with pytest.raises(JobStateError, match="registering its version: too late to cancel"):
        store.cancel(job.id, "acme")
    assert store.finish(job.id, "completed", {"version": "1"}, claim=claim)
    assert store.get(job.id).status == "completed"

    cancelled = store.create("acme", None, "parcels", {})
    claim = store.claim(cancelled.id)
    assert claim is not None and store.cancel(cancelled.id, "acme").status == "cancelled"
    assert not store.heartbeat(cancelled.id, claim) and not store.begin_registration(cancelled.id, claim)


def test_a_long_fit_keeps_its_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen from another host, a runner is dead once its heartbeat is RUNNER_STALE_S old; a fit lasting longer must
    not let another replica take the job over (two versions for one job)."""
    world = World(tmp_path)
    monkeypatch.setattr(training_store, "RUNNER_STALE_S", 0.8)
    monkeypatch.setattr(workers, "HOST", "replica-b-host")  # this process's runner row now names "another host"
    monkeypatch.setattr(softmax, "choose_l2", slow_choose_l2(2.5, []))

    async def scenario() -> None:
        job = await world.submit()
        await world.until(job.id, _fitting)
        await asyncio.sleep(1.6)  # twice the stale limit into the fit
        replica_b = workers.WorkerIdentity(host="replica-b-host", pid=1, process_started_at=1.0)
        assert not await asyncio.to_thread(world.store.start, job.id, replica_b)
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "completed" and final.result is not None and final.result["version"] == "1"
        assert world.on_disk() == ["1", "versions.yaml"] and len(world.store.versions("parcels")) == 1

    asyncio.run(scenario())


def test_a_cancel_during_the_fit_stops_it_and_frees_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    monkeypatch.setattr(training_store, "RUNNER_STALE_S", 0.8)  # heartbeats (and stop checks) every 0.2 s
    seen_stop: list[bool] = []
    monkeypatch.setattr(softmax, "choose_l2", slow_choose_l2(20.0, seen_stop))

    async def scenario() -> None:
        job = await world.submit()
        await world.until(job.id, _fitting)
        await world.training.cancel(job.id, OWNER)
        cancelled_at = time.monotonic()
        monkeypatch.setattr(softmax, "choose_l2", lambda x, y, k, should_stop=None: 0.01)
        second = await world.submit("other")
        await world.until(second.id, lambda j: j.status != "queued", timeout_s=10)
        assert time.monotonic() - cancelled_at < 3.0  # not the 20 s the cancelled fit had left
        await world.finished()
        assert seen_stop == [True]
        assert (await asyncio.to_thread(world.store.get, job.id)).status == "cancelled" and world.on_disk() == []
        assert (await asyncio.to_thread(world.store.get, second.id)).status == "completed"

    asyncio.run(scenario())


def test_the_fit_stops_within_a_step_of_its_stop_check() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 2
    checks: list[int] = []

    def stop_after_five() -> bool:
        checks.append(1)
        return len(checks) > 5

    with pytest.raises(softmax.FitStoppedError):
        softmax.train_head(x, y, ["a", "b"], stop_after_five)
    assert len(checks) == 6


def test_a_version_number_taken_meanwhile_by_another_replica_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas share the trained-models volume: the number read before the rename may be taken by then."""
    world = World(tmp_path)
    asyncio.run(_register_one(world))  # version 1, by "the other replica"
    first = (world.trained / "parcels" / "1" / "config.yaml").read_bytes()
    stale = iter(["1"])  # what this replica read before the other's rename
    real = registry.next_version
    monkeypatch.setattr(registry, "next_version", lambda root: next(stale, None) or real(root))
    version = asyncio.run(_register_one(world))
    assert version == "2" and (world.trained / "parcels" / "1" / "config.yaml").read_bytes() == first
    assert load_model_config(world.trained / "parcels" / "2" / "config.yaml").version == "2"
    assert '"version": "2"' in (world.trained / "parcels" / "2" / "metrics.json").read_text()
    assert not [p for p in (world.trained / "parcels").iterdir() if p.name.startswith(".staging")]


async def _register_one(world: World) -> str:
    job = await world.submit()
    await world.finished()
    final = await asyncio.to_thread(world.store.get, job.id)
    assert final.status == "completed" and final.result is not None, final.error
    return str(final.result["version"])


def test_a_failed_registration_leaves_no_staging_folder_and_no_server_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)

    def broken_disk(path: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(registry.ClassifierHead, "save", lambda self, path: broken_disk(path))

    async def scenario() -> None:
        job = await world.submit()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "failed" and final.error is not None
        assert str(tmp_path) not in final.error and "OSError" in final.error
        assert [p.name for p in (world.trained / "parcels").iterdir() if p.name.startswith(".staging")] == []

    asyncio.run(scenario())


def test_a_claim_whose_answer_was_lost_is_retried_and_the_job_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store went away as a job was claimed: the claim was not retried (the job stayed queued in a live
    server until a restart), and a retry of a claim whose commit went through found the job running under this live
    process and gave up (running for ever). The claim is retried and its own lost claim retaken."""
    import sqlalchemy as sa

    world = World(tmp_path)
    real_claim = world.store.claim
    calls: list[str] = []

    def lost_answer(job_id: str, *args: Any) -> float | None:
        calls.append(job_id)
        if len(calls) == 1:  # committed, then the connection dropped before the answer
            real_claim(job_id, *args)
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return real_claim(job_id, *args)

    monkeypatch.setattr(TrainingStore, "claim", lambda self, job_id, *args: lost_answer(job_id, *args))
    monkeypatch.setattr(outage, "FIRST_DELAY_S", 0.01)

    async def scenario() -> None:
        job = await world.submit()
        await world.finished()
        final = await asyncio.to_thread(world.store.get, job.id)
        assert final.status == "completed", (final.status, final.error)
        assert len(calls) == 2 and world.on_disk() == ["1", "versions.yaml"]

    asyncio.run(scenario())
