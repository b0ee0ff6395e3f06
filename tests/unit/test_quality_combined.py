"""The served quality verdict on real photos (classical metrics + quality_mos, as `/v1/analyze?fields=quality`
returns it): strong distortions are tagged with the model's agreement, clean photos are not; the combination block."""

import io

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.quality.thresholds import DEFAULT_THRESHOLDS_PATH, ModelCombination, default_thresholds
from tests.paths import DATA
from tooling.quality.distortions import apply_distortion

pytestmark = pytest.mark.unit

# The first three held-out BIQ2021 photos (mos.csv order) people rated >= 0.8 (tooling.quality.biq: never trained or
# tuned on); chosen by that rule, not by how they come out.
PHOTOS = ("ss03 (7328).jpg", "ss03 (1012).jpg", "ss03 (5132).jpg")


def test_model_combination_block_validates() -> None:
    raw = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    block = ModelCombination.model_validate(raw["model"])
    assert block == default_thresholds().model
    assert set(block.tags) <= set(default_thresholds().tags)
    for tag in block.tags:
        confirm, alone = block.for_tag(tag)
        assert 0 <= confirm <= alone <= 1, tag  # veto below `confirm`, add from `alone`
        assert alone >= 0.5, tag  # a tag the model adds on its own is one it believes more likely than not


def _jpeg(rgb: np.ndarray) -> tuple[str, bytes]:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=95)
    return ("photo", out.getvalue())


def test_strong_blur_and_noise_get_combined_tags() -> None:
    from tooling.quality.biq import load_biq, split
    from tooling.quality.served import served_quality

    folder = DATA / "biq2021-train" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the real photos are read from ../shared, not the repo")
    assert [p.name for p, mos in split(load_biq())[1] if mos >= 0.8][:3] == list(PHOTOS)
    rng = np.random.default_rng(0)
    items = []
    for name in PHOTOS:
        rgb = np.asarray(Image.open(folder / name).convert("RGB"))
        items += [
            _jpeg(rgb),
            _jpeg(apply_distortion(rgb, "gaussian_blur", 4, rng)),  # sigma 2.5 px at 512 px
            _jpeg(apply_distortion(rgb, "white_noise", 4, rng)),  # sigma 16 per channel
        ]
    results = served_quality(items, workers=1)
    for i, name in enumerate(PHOTOS):
        clean, blurred, noisy = ({t.name: t for t in r.served.tags} for r in results[3 * i : 3 * i + 3])
        defects = [t for t in clean if default_thresholds().tags[t].kind == "defect"]
        assert not defects, (name, defects)
        assert "blurry" in blurred and "noisy" not in blurred, (name, sorted(blurred))
        assert "noisy" in noisy and "blurry" not in noisy, (name, sorted(noisy))
        for tag, tags in (("blurry", blurred), ("noisy", noisy)):
            assert tags[tag].evidence["model_probability"] >= 0.5, (name, tag, tags[tag].evidence)
        assert results[3 * i].served.score > results[3 * i + 1].served.score, name


def test_model_vetoes_pixel_level_evidence_only_where_it_could_see_it() -> None:
    from pipelines.quality.tags import tags_from_values

    # JPEG blocks measured at the file's own pixels: on a photo the working image shows at full size the model saw
    # them too and may veto; on a 4x larger photo its 256-px input cannot show 8-px blocks, so it may not.
    values = {"blockiness": 2.0, "working_scale": 1.0}
    veto = {"compression_artifacts": 0.001}
    assert "compression_artifacts" not in {t.name for t in tags_from_values(values, None, veto)}
    values["working_scale"] = 0.25
    tag = {t.name: t for t in tags_from_values(values, None, veto)}["compression_artifacts"]
    assert tag.evidence["blockiness"] == 2.0 and tag.evidence["model_probability"] == 0.001
    # a condition that is not pixel-level keeps the veto at any size
    assert "low_contrast" not in {
        t.name for t in tags_from_values({"contrast_spread": 0.1, "working_scale": 0.25}, None, {"low_contrast": 0.0})
    }


def test_the_level_is_the_one_of_the_score_answered() -> None:
    """The level was decided on the unrounded score: an answer could say score 85.0 and level HIGH (ULTRA from 85)."""
    from pipelines.quality import analyze_quality
    from pipelines.quality.scoring import quality_level, score_quality

    metrics = analyze_quality(np.full((64, 64, 3), 128, np.uint8)).metrics
    thresholds = default_thresholds()
    weight = thresholds.model.score_weight
    classical = score_quality(metrics, None, None).classical_score
    for cut in thresholds.score.levels.values():
        for target in (cut - 0.004, cut - 0.001, cut, cut + 0.003):  # just under a band's start rounds onto it
            model_score = (target - (1 - weight) * classical) / weight
            if not 0 <= model_score <= 100:
                continue
            detail = score_quality(metrics, None, model_score)
            assert detail.level == quality_level(detail.score), (target, detail.score, detail.level)
