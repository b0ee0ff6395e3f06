"""Model control as two operators (or an operator and a training job) use it at once, and with a version policy
file that cannot be read: each call loads its own policy and answers for it, and the API can repair the file."""

import asyncio
import shutil
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from serving.http.app import create_http_app
from serving.model_versions import VersionPolicy, read_policy, write_policy
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit


@pytest.fixture
def world(tmp_path: Path) -> tuple[httpx.AsyncClient, object, Path]:
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "parcels"
    for version in ("1", "2", "3"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    (root / "3" / "model.onnx").write_bytes(b"corrupt")  # version 3 cannot load
    (root / "versions.yaml").write_text("policy: specific\nversions: ['1']\n")
    app = create_http_app(service, settings=settings)
    return app, service, root


def test_two_promotions_at_once_each_answer_for_their_own_version(world: tuple) -> None:
    """The policy was written outside the model lock: promoting a broken version 3 and a good version 2 together
    answered 200 for 3 (serving 1), or 400 for 2 blamed on 3, or 500 (the shared temporary file was gone)."""
    app, service, root = world

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            assert (await http.post("/v1/models/parcels/load")).status_code == 200
            for _ in range(4):
                broken, good = await asyncio.gather(
                    http.post("/v1/models/parcels/versions/3/promote"),
                    http.post("/v1/models/parcels/versions/2/promote"),
                )
                assert broken.status_code == 400 and "version 3" in broken.json()["error"], broken.text
                assert good.status_code == 200 and good.json()["version"] == "2", good.text
                assert service.served_entry("parcels").version == "2" and read_policy(root).versions == ["2"]
                assert (await http.post("/v1/models/parcels/versions/1/promote")).json()["version"] == "1"

    asyncio.run(scenario())


def test_an_unreadable_policy_is_replaced_by_a_promotion(world: tuple) -> None:
    """Promote, canary and ending a canary answered 500 for a versions.yaml that does not parse: the API's way to
    repair it failed too."""
    app, service, root = world

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            assert (await http.post("/v1/models/parcels/load")).status_code == 200
            (root / "versions.yaml").write_text("policy: specific\ncanary: {version: '2', percent: 150}\n")
            stop = await http.delete("/v1/models/parcels/canary")
            assert stop.status_code == 200, stop.text
            (root / "versions.yaml").write_text("policy: [unclosed\n")
            answer = await http.post("/v1/models/parcels/versions/2/promote")
            assert answer.status_code == 200 and answer.json()["version"] == "2", answer.text
            assert read_policy(root).versions == ["2"]
            (root / "versions.yaml").write_text("policy: [unclosed\n")
            canary = await http.post("/v1/models/parcels/canary", json={"version": "1", "percent": 10})
            assert canary.status_code == 200, canary.text
            assert read_policy(root).canary is not None and read_policy(root).canary.version == "1"
            refused = await http.post("/v1/models/parcels/versions/3/promote")  # cannot load: the file is put back
            assert refused.status_code == 400 and read_policy(root).canary.version == "1"

    asyncio.run(scenario())


def test_policy_writers_do_not_replace_each_others_files(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def writer(version: str) -> None:
        try:
            for _ in range(50):
                write_policy(tmp_path, VersionPolicy(policy="specific", versions=[version]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(str(v),)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and read_policy(tmp_path).versions[0] in {"1", "2", "3", "4"}
    assert [p.name for p in tmp_path.iterdir()] == ["versions.yaml"]  # no temporary file left


def test_a_half_copied_version_that_is_not_served_stops_nothing(world: tuple, tmp_path: Path) -> None:
    """A version folder being copied in (its config.yaml cut short) made loading the served version fail, the poll
    loop raise, and a replica start fail: every model on the replica down while the copy ran."""
    from serving.model_control import load_model
    from serving.model_poll import ModelPoller
    from serving.repository import ModelRepository

    app, service, root = world
    settings = service.repository.settings
    shutil.rmtree(root / "3")
    full = (root / "1" / "config.yaml").read_text().replace("version: '1'", "version: '4'")
    (root / "4").mkdir()
    (root / "4" / "config.yaml").write_text(full[: len(full) // 2])

    async def scenario() -> None:
        assert await load_model(service, "parcels") == "1"
        await ModelPoller(service, settings, interval_s=3600).poll_once()
        listed = service.repository.versions["parcels"]["4"]
        assert not listed.available and "cannot be read" in (listed.unavailable_reason or "")

    asyncio.run(scenario())
    started = ModelRepository.scan(settings)
    assert started.entries["parcels"].version == "1" and "tiny" in started.entries
    write_policy(root, VersionPolicy(policy="specific", versions=["4"]))  # serving the broken one: that model only
    started = ModelRepository.scan(settings)
    assert "parcels" not in started.entries and "tiny" in started.entries


def _wider_version(source: Path, root: Path, version: str, size: int) -> None:
    """A version of the tiny classifier taking `size` x `size` images (another backbone resolution)."""

    from tests.unit.tiny_models import _save, classifier_graph

    versioned_copy(source, root, version)
    folder = root / version
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["weights"]["sha256"] = _save(classifier_graph(size), folder / "model.onnx")
    config["input"]["size"] = [size, size]
    config["preprocessing"]["resize"]["size"] = [size, size]
    config["preprocessing"]["crop"] = [size, size]
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_requests_in_flight_finish_on_their_version_whatever_its_input_size(world: tuple) -> None:
    """A request held the old version's stage but was decoded with the new version's preprocessing (another input
    size) and failed with 400 invalid_tensor when a promotion landed while it waited to be decoded."""
    import io
    import threading

    from PIL import Image

    from serving.metrics import MODEL_INFO
    from serving.model_control import load_model
    from serving.requests import ImageOptions

    app, service, root = world
    settings = service.repository.settings
    _wider_version(settings.model_repository / "tiny", root, "5", 48)
    photo = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 40, 40)).save(photo, "JPEG")
    gate = threading.Event()
    decode = service.pipeline.decode
    original = decode.decode

    def held(*args: object, **kwargs: object) -> object:  # the decode threads are busy while the promotion lands
        gate.wait(10)
        return original(*args, **kwargs)

    def loaded(version: str) -> float:
        labels = ("parcels", version, "onnxruntime", "cpu", "fp32")
        return MODEL_INFO.labels(*labels)._value.get()

    counted: list[float] = []

    async def scenario() -> list[str]:
        assert await load_model(service, "parcels") == "1"
        counted.append(loaded("1"))
        decode.decode = held
        calls = [
            asyncio.create_task(service.classify([photo.getvalue()], ImageOptions(model="parcels"))) for _ in range(8)
        ]
        await asyncio.sleep(0.05)
        write_policy(root, VersionPolicy(policy="specific", versions=["5"]))
        assert await load_model(service, "parcels") == "5"
        gate.set()
        results = await asyncio.gather(*calls)
        decode.decode = original
        after = await service.classify([photo.getvalue()], ImageOptions(model="parcels"))
        return [r[0].model_version for r in results] + [after[0].model_version]

    versions = asyncio.run(scenario())
    assert versions == ["1"] * 8 + ["5"]
    assert loaded("1") == counted[0] - 1 and loaded("5") >= 1  # imgserve_model_info counts the swapped-out stage off


def test_a_closed_batch_queue_serves_late_items_and_its_worker_ends() -> None:
    from serving.stages.batching import BatchQueue

    async def double(items: list) -> list:
        return [item.item * 2 for item in items]

    async def scenario() -> None:
        queue: BatchQueue[int, int] = BatchQueue(double, 4, 0.01)
        assert await queue.submit(1) == 2
        worker = queue._worker
        queue.close()
        assert await queue.submit(2) == 4  # a caller that held the stage before it was swapped out
        await asyncio.sleep(0.05)
        assert worker is not None and worker.done() and queue._worker is not None
        await asyncio.sleep(0.05)
        assert queue._worker.done()  # no worker waits for ever (destroyed pending at the next swap)

    asyncio.run(scenario())


def test_ending_a_canary_during_a_promotion_does_not_undo_it(world: tuple) -> None:
    """Ending (or starting) a canary read the served version before taking the model lock: with a promotion at the
    same time, it wrote back the version served before it, and both answered 200."""
    app, service, root = world

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            assert (await http.post("/v1/models/parcels/load")).status_code == 200
            promote, stop = await asyncio.gather(
                http.post("/v1/models/parcels/versions/2/promote"), http.delete("/v1/models/parcels/canary")
            )
            assert promote.status_code == stop.status_code == 200
            # whichever call took the lock first, the promotion stands (ending the canary first answers version 1)
            assert service.served_entry("parcels").version == "2" and read_policy(root).versions == ["2"]

    asyncio.run(scenario())
