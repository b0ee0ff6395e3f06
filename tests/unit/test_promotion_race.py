"""Two replicas finishing training jobs for one model together, each with `promote: always`, end with exactly one
served version: the one registered second (the higher number), which was compared with the first one's.

Were: each replica's model lock is its own (an asyncio lock), so both read version 1 as served, both pinned it, each
registered its own number and each promoted its own: the model ended on whichever wrote its policy last, and either
job could have put back the version the other had just promoted. Registration and promotion now also hold the
trained-models folder's lock (`serving.trained_models_lock`), a real `flock` taken here by two threads, each a
replica with its own event loop and model lock, sharing one trained-models folder and one job database."""

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import serving.training.service as training_service
from serving.model_versions import read_policy
from serving.trained_models_lock import TrainedModelsLock
from serving.training.service import TrainingRequest, TrainingService
from tests.paths import PROJECT_ROOT
from tests.unit.test_training_runs import OWNER, World, _register_one

pytestmark = pytest.mark.unit


def _replica(world: World) -> TrainingService:
    """Another replica: its own model lock and listing, the same trained-models folder and job database."""
    repository = SimpleNamespace(
        **{**vars(world.service.repository), "entries": dict(world.service.repository.entries)}
    )
    service = SimpleNamespace(**{**vars(world.service), "repository": repository, "model_lock": asyncio.Lock()})
    return TrainingService(service, world.training.jobs)  # type: ignore[arg-type]


def _train_on(training: TrainingService, world: World, results: dict[str, Any]) -> None:
    async def run() -> None:
        request = TrainingRequest(model="parcels", dataset=f"file://{world.dataset}", promote="always")
        job = await training.submit(request, OWNER)
        await asyncio.wait_for(asyncio.gather(*training._tasks), 60)
        results[job.id] = (await asyncio.to_thread(world.store.get, job.id)).result

    asyncio.run(run())


def test_two_replicas_promoting_at_once_serve_the_later_registered_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    assert asyncio.run(_register_one(world)) == "1" and read_policy(world.trained / "parcels").versions == ["1"]
    together = threading.Barrier(2, timeout=30)  # both jobs have decided to promote before either registers
    arrived: set[int] = set()
    real_decide, real_register = training_service.decide_promotion, training_service.register_version

    def decide_then_wait(*args: Any) -> bool:
        if threading.get_ident() not in arrived:
            arrived.add(threading.get_ident())
            together.wait()
        return real_decide(*args)

    def slow_register(*args: Any, **kwargs: Any) -> str:
        time.sleep(0.3)  # writing the head: long enough for the other replica to be registering too
        return real_register(*args, **kwargs)

    monkeypatch.setattr(training_service, "decide_promotion", decide_then_wait)
    monkeypatch.setattr(training_service, "register_version", slow_register)
    results: dict[str, Any] = {}
    replicas = [threading.Thread(target=_train_on, args=(t, world, results)) for t in (world.training, _replica(world))]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(90)
    assert len(results) == 2 and all(results.values()), results
    by_version = {result["version"]: result for result in results.values()}
    assert sorted(by_version) == ["2", "3"]  # distinct numbers
    assert all(result["promoted"] for result in results.values())
    assert by_version["2"]["previous_version"] == "1"
    assert by_version["3"]["previous_version"] == "2"  # registered after 2 was promoted, compared with it
    assert read_policy(world.trained / "parcels").versions == ["3"]  # exactly one served: the later registered
    assert sorted(p.name for p in (world.trained / "parcels").iterdir()) == ["1", "2", "3", "versions.yaml"]


def test_the_lock_excludes_another_process_and_is_freed_when_it_exits(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from serving.trained_models_lock import TrainedModelsLock\n"
            "with TrainedModelsLock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.readline()",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = TrainedModelsLock(tmp_path)
        assert not mine.try_acquire()

        async def wait_briefly() -> None:
            async with mine:
                pass

        with pytest.raises(TimeoutError):  # a waiter cancelled while the other holds it holds nothing
            asyncio.run(asyncio.wait_for(wait_briefly(), 0.2))
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        assert mine.try_acquire()  # freed by the holder's exit
        other = TrainedModelsLock(tmp_path)
        assert not other.try_acquire()  # two lock objects of one process exclude each other too
        mine.release()
        assert other.try_acquire()
        other.release()
    finally:
        holder.kill()
