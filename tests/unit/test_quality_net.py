"""quality_net: the committed ONNX loads via the real repository entry and sees blur and noise on held-out photos."""

from pathlib import Path

import numpy as np
import pytest

from pipelines.decode import decode_image
from pipelines.preprocess import normalize
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.repository import ModelEntry, ModelRepository
from tests.paths import IMAGENET_SAMPLES, require
from tooling.quality.distortions import apply_distortion
from tooling.quality_net.dataset import GROUP_NAMES, HELD_OUT_FROM, list_photos, load_upright, model_pixels, usable

pytestmark = pytest.mark.unit

BLURRY, NOISY = GROUP_NAMES.index("blurry"), GROUP_NAMES.index("noisy")


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    entry = ModelRepository.scan().get("quality_net")
    assert entry.available, entry.unavailable_reason
    return entry


@pytest.fixture(scope="module")
def backend(entry: ModelEntry) -> OnnxRuntimeBackend:
    backend = OnnxRuntimeBackend(intra_op_threads=2)
    backend.load(entry)
    return backend


@pytest.fixture(scope="module")
def held_out(entry: ModelEntry) -> list[Path]:
    """A few usable photos from the held-out range (sorted index >= 500), which training never read."""
    candidates = list_photos(require(IMAGENET_SAMPLES))[HELD_OUT_FROM : HELD_OUT_FROM + 12]
    spec = entry.config.preprocess_spec()
    return [p for p in candidates if usable(load_upright(p, spec))][:4]


def test_committed_weights_are_the_configured_ones(entry: ModelEntry) -> None:
    assert entry.config.task == "quality"
    assert entry.config.weights.committed
    assert entry.artifacts.onnx == entry.folder / "quality_net.onnx"
    assert entry.artifacts.onnx.stat().st_size < 5 * 2**20
    assert entry.labels == GROUP_NAMES  # labels.txt lists the groups in output order


def test_output_shapes_for_any_batch(entry: ModelEntry, backend: OnnxRuntimeBackend) -> None:
    for n in (1, 5):
        x = np.random.default_rng(n).uniform(-1, 1, (n, *entry.config.input.shape)).astype(np.float32)
        out = backend.infer(x)
        assert out["probs"].shape == (n, len(GROUP_NAMES))
        assert out["score"].shape == (n, 1)
        for value in out.values():
            assert np.all((value >= 0) & (value <= 1))


def test_training_preprocessing_is_what_the_decode_stage_serves(entry: ModelEntry, held_out: list[Path]) -> None:
    spec = entry.config.preprocess_spec()
    path = held_out[0]
    served = decode_image(path.read_bytes(), spec).tensor
    trained = normalize(model_pixels(load_upright(path, spec), spec), spec)
    np.testing.assert_array_equal(served, trained)


def test_strong_blur_and_noise_are_seen_on_held_out_photos(
    entry: ModelEntry, backend: OnnxRuntimeBackend, held_out: list[Path]
) -> None:
    spec = entry.config.preprocess_spec()
    rng = np.random.default_rng(0)
    renders = []
    for path in held_out:
        rgb = load_upright(path, spec)
        for pixels in (
            rgb,
            apply_distortion(rgb, "gaussian_blur", 5, rng),
            apply_distortion(rgb, "white_noise", 5, rng),
        ):
            renders.append(model_pixels(pixels, spec))
    out = backend.infer(normalize(np.stack(renders), spec))
    probs, score = out["probs"].reshape(len(held_out), 3, -1), out["score"].reshape(len(held_out), 3)
    for i, path in enumerate(held_out):
        clean, blurred, noisy = probs[i]
        assert blurred[BLURRY] > clean[BLURRY], path.name
        assert score[i, 1] < score[i, 0], path.name
        assert noisy[NOISY] > clean[NOISY], path.name
        assert score[i, 2] < score[i, 0], path.name
    assert np.all(probs[:, 1, BLURRY] >= 0.5) and np.all(probs[:, 2, NOISY] >= 0.5)
