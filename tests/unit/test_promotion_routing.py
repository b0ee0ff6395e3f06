"""A request answers on the version it was routed to, whatever model control does while it waits.

The service routes a version, then awaits (the quota charge, the stages' queues) before the model runs; a promotion,
reload or unload in that gap made a request routed to version 1 run on version 2's stage while its answer said
version 1 and named version 1's labels. Here the await point is the quota charge (a gate that promotes, unloads or
moves the canary split when it is charged), with two versions whose weights and labels differ.
"""

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper
from PIL import Image

from serving.errors import ModelUnavailableError
from serving.model_control import load_model, unload_model
from serving.requests import ImageOptions
from serving.service import Classification, InferenceService
from tests.unit.tiny_models import CLASSES, QUALITY_TAGS, SIZE, classifier_graph, tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit

MODEL = "routed-pets"  # a name no other test's stages count under in `imgserve_model_info`
V2_LABELS = [f"v2-{label}" for label in reversed(CLASSES)]
SERVE_1 = "policy: specific\nversions: ['1']\n"  # versions.yaml: version 1 served
SERVE_2 = "policy: specific\nversions: ['2']\n"  # version 2 promoted
CANARY_2 = SERVE_1 + "canary: {version: '2', percent: 50}\n"
Served = tuple[InferenceService, Path, "ChargingGate"]


class ChargingGate:
    """A `SecurityGate` stand-in whose next charge runs `action` first: model control while the request waits."""

    def __init__(self) -> None:
        self.action: Callable[[], Awaitable[object]] | None = None

    async def charge_images(self, images: int) -> None:
        action, self.action = self.action, None
        if action is not None:
            await action()

    async def anonymize_forced(self) -> bool:
        return False


def _write_version_2(root: Path) -> None:
    """Version 2 of the model at `root`: other weights (other scores) and other labels."""
    folder = root / "2"
    graph = classifier_graph()
    weights = numpy_helper.to_array(graph.initializer[0])
    graph.initializer[0].CopyFrom(numpy_helper.from_array((weights[::-1] * -1.5 + 1.0).astype(np.float32), "w"))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["weights"]["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "labels.txt").write_text("\n".join(V2_LABELS) + "\n")


def _image() -> bytes:
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 220, 40, 120
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _policy(root: Path, text: str) -> None:
    (root / "versions.yaml").write_text(text)


@pytest.fixture
def served(tmp_path: Path) -> Served:
    """The tiny local service serving version 1 of `MODEL` (version 2 on disk, not served), with a `ChargingGate`."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / MODEL
    for version in ("1", "2"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    _write_version_2(root)
    _policy(root, SERVE_1)
    assert asyncio.run(load_model(service, MODEL)) == "1"
    gate = ChargingGate()
    service.gate = gate
    return service, root, gate


def _classify(
    service: InferenceService, gate: ChargingGate, action: Callable[[], Awaitable[object]] | None = None
) -> Classification:
    async def go() -> Classification:
        gate.action = action
        return (await service.classify([_image()], ImageOptions(model=MODEL, top_k=5)))[0]

    return asyncio.run(go())


def _answer(result: Classification) -> tuple[str, list[tuple[str, float]]]:
    return result.model_version, [(p.label, round(p.score, 6)) for p in result.predictions]


def _promote(service: InferenceService, root: Path, policy: str) -> Callable[[], Awaitable[str]]:
    async def promote() -> str:
        _policy(root, policy)
        return await load_model(service, MODEL)

    return promote


def test_a_classification_routed_to_version_1_answers_on_version_1_across_a_promotion(served: Served) -> None:
    service, root, gate = served
    version_1 = _answer(_classify(service, gate))
    assert version_1[0] == "1" and {label for label, _ in version_1[1]} == set(CLASSES)
    promoted = _answer(_classify(service, gate, _promote(service, root, SERVE_2)))
    assert service.served_entry(MODEL).version == "2"  # the promotion happened while the request waited
    assert promoted == version_1  # version, labels and scores all version 1's
    version_2 = _answer(_classify(service, gate))
    assert version_2[0] == "2" and {label for label, _ in version_2[1]} == set(V2_LABELS)
    assert [score for _, score in version_2[1]] != [score for _, score in version_1[1]]  # the versions do differ


def test_a_tensor_routed_to_version_1_runs_on_version_1_across_a_promotion(served: Served) -> None:
    service, root, gate = served
    batch = np.random.default_rng(0).random((2, 3, SIZE, SIZE), dtype=np.float32)
    version_1 = asyncio.run(service.infer_tensor(MODEL, batch))["logits"]
    gate.action = _promote(service, root, SERVE_2)
    promoted = asyncio.run(service.infer_tensor(MODEL, batch))["logits"]
    assert service.served_entry(MODEL).version == "2"
    np.testing.assert_allclose(promoted, version_1, rtol=1e-6)
    version_2 = asyncio.run(service.infer_tensor(MODEL, batch))["logits"]
    assert not np.allclose(version_2, version_1)


def test_a_request_held_by_an_unloaded_model_still_finishes_on_it(served: Served) -> None:
    service, _, gate = served
    version_1 = _answer(_classify(service, gate))
    finished = _answer(_classify(service, gate, lambda: unload_model(service, MODEL)))
    assert MODEL not in service.repository.entries
    assert finished == version_1


def test_a_request_routed_to_the_canary_answers_on_it_after_the_split_ends(served: Served) -> None:
    service, root, gate = served
    assert asyncio.run(_promote(service, root, CANARY_2)())
    first, canary = _answer(_classify(service, gate)), _answer(_classify(service, gate))
    assert (first[0], canary[0]) == ("1", "2")  # 50 %: every second request
    _classify(service, gate)  # the next turn is the served version's
    ended = _classify(service, gate, _promote(service, root, SERVE_1))
    assert MODEL not in service.repository.canaries
    assert _answer(ended) == canary


def test_the_learned_quality_answer_names_the_version_that_ran(served: Served) -> None:
    """The same for `quality_mos` (the `anomaly` field): its labels are the tags of the version that ran."""
    service, _, gate = served
    folder = service.repository.get("quality_mos").folder
    relabelled = [f"relabelled-{tag}" for tag in QUALITY_TAGS]

    async def relabel() -> str:
        (folder / "labels.txt").write_text("\n".join(relabelled) + "\n")
        return await load_model(service, "quality_mos")

    def anomaly(action: Callable[[], Awaitable[object]] | None = None) -> dict:
        async def go() -> dict:
            gate.action = action
            analysis = (await service.analyze([_image()], ImageOptions(fields=["anomaly"])))[0]
            assert analysis.anomaly is not None
            return analysis.anomaly.to_dict()

        return asyncio.run(go())

    before = anomaly()
    assert set(before["probabilities"]) == set(QUALITY_TAGS)
    assert anomaly(relabel) == before
    assert service.repository.get("quality_mos").labels == tuple(relabelled)
    assert set(anomaly()["probabilities"]) == set(relabelled)


def test_an_entry_routed_before_a_swap_is_refused_with_a_retryable_error(served: Served) -> None:
    """`infer_on` takes a version its caller routed: one swapped out before the request holds its stages is a 503
    (retry), never run on the stage that replaced it."""
    service, root, gate = served
    routed = service.routed_entry(MODEL)
    asyncio.run(_promote(service, root, SERVE_2)())
    batch = np.zeros((1, 3, SIZE, SIZE), np.float32)
    with pytest.raises(ModelUnavailableError, match="version 1"):
        asyncio.run(service.infer_on(routed, batch))
