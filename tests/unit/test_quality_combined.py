"""Classical tags combined with quality_net (as `pipelines.quality.quality_verdict` does) on held-out photos."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.preprocess import geometry_pil, normalize
from pipelines.quality.metrics import compute_metrics
from pipelines.quality.tags import tags_from_values
from pipelines.quality.thresholds import DEFAULT_THRESHOLDS_PATH, ModelCombination, default_thresholds
from pipelines.quality.working_image import native_crop, working_image
from tooling.quality.distortions import apply_distortion
from tooling.quality.evaluate import load_rgb
from tooling.quality_net.combined_inputs import infer_probs, load_model

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# Held-out photos (sorted index >= 500: never read by training or threshold fitting), clean and in colour.
PHOTOS = ("n03047690_clog.JPEG", "n04335435_streetcar.JPEG", "n04532670_viaduct.JPEG", "n07930864_cup.JPEG")


def test_model_combination_block_validates() -> None:
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    block = ModelCombination.model_validate(raw["model"])
    assert set(raw["model"]) == {"confirm", "alone", "score_weight"}  # every value written out, none defaulted
    assert block == default_thresholds().model
    assert 0 <= block.confirm < block.alone <= 1  # veto below `confirm` (0: never), add from `alone`
    assert block.alone >= 0.5  # a tag the model adds on its own is one it believes more likely than not


@pytest.fixture(scope="module")
def model():  # noqa: ANN201 - (entry, backend)
    if not (DATA / "imagenet-samples").is_dir():
        pytest.skip(f"{DATA / 'imagenet-samples'} is absent: the real photos are read from ../shared, not the repo")
    return load_model(threads=2)


def test_strong_blur_and_noise_get_combined_tags(model) -> None:  # noqa: ANN001
    entry, backend = model
    spec = entry.config.preprocess_spec()
    thresholds = default_thresholds()
    rng = np.random.default_rng(0)
    for name in PHOTOS:
        rgb = load_rgb(DATA / "imagenet-samples" / name)
        size = (rgb.shape[1], rgb.shape[0])
        variants = {
            "clean": rgb,
            "gaussian_blur": apply_distortion(rgb, "gaussian_blur", 4, rng),  # sigma 2.5 px at 512 px
            "white_noise": apply_distortion(rgb, "white_noise", 4, rng),  # sigma 16 per channel
        }
        pixels = np.stack([geometry_pil(Image.fromarray(v), spec) for v in variants.values()])
        probs = [r["probabilities"] for r in infer_probs(backend, entry, normalize(pixels, spec))]
        tags = {}
        for (kind, image), p in zip(variants.items(), probs, strict=True):
            values = compute_metrics(working_image(image), size, native_crop(image)).as_dict()
            tags[kind] = {t.name: t for t in tags_from_values(values, thresholds, p)}
        assert "blurry" not in tags["clean"] and "noisy" not in tags["clean"], (name, sorted(tags["clean"]))
        assert "blurry" in tags["gaussian_blur"], (name, sorted(tags["gaussian_blur"]), probs[1]["blurry"])
        assert "noisy" in tags["white_noise"], (name, sorted(tags["white_noise"]), probs[2]["noisy"])
        assert "noisy" not in tags["gaussian_blur"] and "blurry" not in tags["white_noise"], (name, tags)
        # Both paths agree: the model is confident on the distorted copies and does not add tags to the clean one.
        for tag, kind in (("blurry", "gaussian_blur"), ("noisy", "white_noise")):
            assert tags[kind][tag].source == "classical+model", (name, tags[kind][tag])
            assert tags[kind][tag].evidence["model_probability"] >= 0.5, (name, tag, tags[kind][tag].evidence)
            assert probs[0][tag] < thresholds.model.alone, (name, tag, probs[0][tag])
