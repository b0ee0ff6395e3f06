"""Enhancement (`pipelines.enhance`): the operations do what they say, options are checked, auto mode applies only
what fixes the tags it is given. (The quality stage's verdict before/after, on real photos at scale:
`python -m tooling.enhance.evaluate`; the HTTP/gRPC form: tests/unit/test_operation_routes.py.)"""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.convert import ConvertOptions
from pipelines.enhance import OPERATIONS, EnhanceOptions, describe_options
from pipelines.enhance import operations as op
from pipelines.enhance.image import enhance_image
from pipelines.errors import InvalidOptionError
from pipelines.limits import DecodeLimits
from pipelines.quality.colour import measure_colour, measure_tone
from tests.paths import IMAGENET_SAMPLES, require
from tooling.quality.distortions import apply_distortion

pytestmark = pytest.mark.unit
PNG = ConvertOptions(format="png")


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    paths = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[::10]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_keeps_shape_and_leaves_its_input_alone(photos: list[np.ndarray], name: str) -> None:
    rgb = photos[0]
    before = rgb.copy()
    result = OPERATIONS[name].apply(rgb)
    assert np.array_equal(rgb, before)
    if result is not None:
        assert result[0].shape == rgb.shape and result[0].dtype == np.uint8


def test_manual_brightness_scales_mid_tone_luminance(photos: list[np.ndarray]) -> None:
    # mid-tone: mean luma 60-130, and at most 5 % of pixels with a channel above 170 (that 1.5x pushes past white)
    mid_tones = [p for p in photos if 60 <= luma(p).mean() <= 130 and (p.max(axis=2) > 170).mean() <= 0.05]
    assert len(mid_tones) >= 5
    for rgb in mid_tones:
        result, applied = enhance_image(png(rgb), EnhanceOptions.parse(brightness=1.5), PNG, DecodeLimits())
        assert applied == [{"operation": "brightness", "reason": "requested", "factor": 1.5}]
        ratio = luma(pixels(result.data)).mean() / luma(rgb).mean()
        assert 1.4 <= ratio <= 1.6, ratio


def test_exposure_up_recovers_a_darkened_photo(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for rgb in photos[:4]:
        dark = apply_distortion(rgb, "darken", 4, rng)
        result = OPERATIONS["exposure_up"].apply(dark)
        assert result is not None
        mean = measure_tone(luma(result[0])).brightness_mean
        assert 0.35 <= mean <= 0.45 and result[1]["stops"] > 1.0


def test_recover_highlights_lowers_exposure_and_gives_blown_areas_texture_back(photos: list[np.ndarray]) -> None:
    """Auto mode's fix for `overexposed`: the exposure change of `exposure_down` (mean luma to 0.45), then local
    contrast, so what the brightening flattened is not left an even grey."""
    rng = np.random.default_rng(2)
    for rgb in photos[:4]:
        bright = apply_distortion(rgb, "brighten", 4, rng)
        down, recovered = OPERATIONS["exposure_down"].apply(bright), OPERATIONS["recover_highlights"].apply(bright)
        assert down is not None and recovered is not None and recovered[1] == down[1]  # the same exposure change
        assert measure_tone(luma(recovered[0])).brightness_mean < measure_tone(luma(bright)).brightness_mean - 0.1
        flat = luma(bright) >= 250  # blown by the brightening
        assert luma(recovered[0])[flat].std() > luma(down[0])[flat].std()


def test_white_balance_removes_a_cast(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    for rgb in photos[:4]:
        cast = apply_distortion(rgb, "color_cast", 5, rng)
        fixed = op.white_balance_robust(cast)
        assert measure_colour(fixed).cast_strength < 0.5 * measure_colour(cast).cast_strength


def test_auto_levels_restores_contrast(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    for rgb in photos[:4]:
        flat = apply_distortion(rgb, "contrast_change", 4, rng)
        spread = measure_tone(luma(flat)).contrast_spread
        assert measure_tone(luma(op.auto_levels(flat))).contrast_spread > 1.5 * spread


def test_denoise_lowers_noise_and_sharpen_raises_detail(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    rgb = photos[1]
    noisy = apply_distortion(rgb, "white_noise", 4, rng)
    error = lambda x: np.abs(x.astype(int) - rgb.astype(int)).mean()  # noqa: E731
    assert error(op.denoise(noisy)) < 0.8 * error(noisy)
    laplacian = lambda x: cv2.Laplacian(luma(x), cv2.CV_64F).var()  # noqa: E731
    assert laplacian(op.sharpen(rgb)) > laplacian(rgb)


def test_auto_plan_follows_the_tags_in_a_fixed_order() -> None:
    options = EnhanceOptions.parse()
    assert options.auto
    steps = options.steps(["low_contrast", "color_cast", "blurry", "noisy", "low_light"])
    assert [s.name for s in steps] == ["denoise", "white_balance", "exposure_up", "auto_levels"]
    assert steps[0].reason == "tag noisy"
    assert options.steps([]) == [] and options.steps(["blurry", "low_resolution"]) == []
    manual = EnhanceOptions.parse(ops="clahe,sharpen", contrast="1.2")
    assert not manual.auto
    assert [(s.name, s.factor) for s in manual.steps(["low_light"])] == [("clahe", None), ("sharpen", None),
                                                                           ("contrast", 1.2)]  # fmt: skip


def test_auto_leaves_an_untagged_photo_exactly_as_a_plain_encode(photos: list[np.ndarray]) -> None:
    data = png(photos[2])
    result, applied = enhance_image(data, EnhanceOptions.parse(auto=True), PNG, DecodeLimits(), tags=[])
    assert applied == [] and np.array_equal(pixels(result.data), photos[2])


def test_alpha_survives_enhancement() -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., :3] = 60
    rgba[..., 3] = np.arange(32, dtype=np.uint8)[None, :] * 8
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG")
    result, _ = enhance_image(out.getvalue(), EnhanceOptions.parse(brightness=2.0), PNG, DecodeLimits())
    back = np.asarray(Image.open(io.BytesIO(result.data)))
    assert back.shape == (32, 32, 4) and np.array_equal(back[..., 3], rgba[..., 3]) and back[0, 0, 0] == 120


@pytest.mark.parametrize(
    "options, message",
    [
        ({"brightness": 3.5}, "out of range"),
        ({"contrast": 0.05}, "out of range"),
        ({"saturation": "lots"}, "expected a number"),
        ({"ops": "clahe,teleport"}, "unknown operations"),
        ({"auto": "perhaps"}, "true or false"),
        ({"vibrance": 1.2}, "unknown enhancement options"),
    ],
)
def test_bad_enhancement_options(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        EnhanceOptions.parse(**options)


def test_options_document_lists_every_operation() -> None:
    document = describe_options()
    assert [o["name"] for o in document["operations"]] == list(OPERATIONS)
    assert document["manual_factors"]["brightness"] == {"min": 0.1, "max": 3.0, "neutral": 1.0}
    assert set(document["auto"]["fixes"].values()) <= set(OPERATIONS)


def test_revert_rule_only_undoes_auto_steps() -> None:
    from pipelines.enhance import should_revert, without_auto

    options = EnhanceOptions.parse(auto=True, ops="sharpen", brightness=1.1)
    applied = [{"operation": "exposure_up", "reason": "tag low_light"}, {"operation": "sharpen", "reason": "requested"}]
    assert should_revert(options, applied, before=50.0, after=49.0)
    assert not should_revert(options, applied, before=50.0, after=51.0)
    assert not should_revert(options, applied[1:], before=50.0, after=40.0)  # manual edits are never reverted
    assert not should_revert(EnhanceOptions.parse(ops="sharpen"), applied, before=50.0, after=40.0)
    fallback = without_auto(options)
    assert not fallback.auto and fallback.ops == ("sharpen",) and fallback.factors == {"brightness": 1.1}


def test_enhancement_has_its_own_pixel_bound() -> None:
    from pipelines.errors import ImageTooLargeError

    limits = DecodeLimits(max_enhance_pixels=1000)  # DecodeLimits.max_enhance_pixels (was the module's constant)
    data = png(np.zeros((40, 40, 3), dtype=np.uint8))
    with pytest.raises(ImageTooLargeError, match="max_side"):
        enhance_image(data, EnhanceOptions.parse(brightness=1.2), PNG, limits)
    small, _ = enhance_image(data, EnhanceOptions.parse(brightness=1.2), ConvertOptions(format="png", max_side=30),
                             limits)  # fmt: skip
    assert small.width == 30


def test_auto_with_nothing_to_fix_and_no_conversion_asked_answers_the_input_itself() -> None:
    """Re-encoding an untouched JPEG at the default quality lost quality (a README walkthrough: 86,704 -> 28,060
    bytes, score 68.5 -> 66.2) for an "enhancement" that changed nothing."""
    rgb = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=97)
    data = out.getvalue()
    result, applied = enhance_image(data, EnhanceOptions.parse(auto=True), ConvertOptions(), DecodeLimits(), tags=[])
    assert applied == [] and result.data is data
    assert (result.format, result.width, result.height, result.ratio) == ("jpeg", 64, 48, 1.0)
    # anything asked of the conversion, or a step that applies, still makes a new image
    asked, _ = enhance_image(data, EnhanceOptions.parse(auto=True), ConvertOptions(quality=97), DecodeLimits(), [])
    assert asked.data != data
    brighter, steps = enhance_image(data, EnhanceOptions.parse(brightness=1.2), ConvertOptions(), DecodeLimits())
    assert steps and brighter.data != data
