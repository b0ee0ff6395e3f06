"""AVIF, HEIF and GIF outputs and enhancement have pixel budgets of their own, below the full-decode budget: a small
file could cost 10-40 s of CPU and ~1 GB (`DecodeLimits.max_slow_encode_pixels`, `max_enhance_pixels`; 413)."""

import io

import pytest
from PIL import Image

from pipelines.convert import ConvertOptions, available_formats, convert_image
from pipelines.convert.formats import SLOW_ENCODERS
from pipelines.enhance import EnhanceOptions
from pipelines.enhance.image import enhance_image
from pipelines.errors import ImageTooLargeError
from pipelines.limits import DecodeLimits

pytestmark = pytest.mark.unit
WRITTEN = {f.name for f in available_formats()}


def solid_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["avif", "heif", "gif", "jpeg", "webp"])
def test_slow_encoders_have_a_lower_output_budget(fmt: str) -> None:
    if fmt not in WRITTEN:
        pytest.skip(f"no {fmt} encoder installed here")
    limits = DecodeLimits(max_slow_encode_pixels=5_000)
    data = solid_png((100, 80))
    if fmt in SLOW_ENCODERS:
        with pytest.raises(ImageTooLargeError, match=r"100x80 = 8000 pixels; avif, gif, heif outputs .* 5000"):
            convert_image(data, ConvertOptions.parse(format=fmt), limits)
        assert convert_image(data, ConvertOptions.parse(format=fmt, max_side=50), limits).width == 50
    else:
        assert convert_image(data, ConvertOptions.parse(format=fmt), limits).width == 100


def test_an_animation_counts_its_frames_against_the_slow_budget() -> None:
    frames = [Image.new("RGB", (50, 40), (i * 40, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(ImageTooLargeError, match="x 3 frames = 6000 pixels"):
        convert_image(out.getvalue(), ConvertOptions.parse(format="gif"), DecodeLimits(max_slow_encode_pixels=5_000))


def test_default_budgets_refuse_before_any_pixel_is_encoded() -> None:
    """The defaults: 16 MP for the slow encoders and enhancement (were 40 MP and 25 MP)."""
    limits = DecodeLimits()
    assert limits.max_slow_encode_pixels == limits.max_enhance_pixels == 16_000_000 < limits.max_full_decode_pixels
    data = solid_png((4100, 4100))  # 16.8 MP
    with pytest.raises(ImageTooLargeError, match="limited to 16000000"):
        convert_image(data, ConvertOptions.parse(format="gif"), limits)
    with pytest.raises(ImageTooLargeError, match="enhancing 4100x4100 = 16810000 pixels; the limit is 16000000"):
        enhance_image(data, EnhanceOptions.parse(ops="gamma"), ConvertOptions.parse(format="jpeg"), limits)
    result, _ = enhance_image(
        data, EnhanceOptions.parse(ops="gamma"), ConvertOptions.parse(format="jpeg", max_side=1000), limits
    )
    assert (result.width, result.height) == (1000, 1000)


def test_the_caps_are_the_servers_settings() -> None:
    from serving.config.settings import ServerSettings

    env = {"IMGSERVE_MAX_SLOW_ENCODE_PIXELS": "1000", "IMGSERVE_MAX_ENHANCE_PIXELS": "2000"}
    limits = ServerSettings.from_env(env).decode_limits()
    assert (limits.max_slow_encode_pixels, limits.max_enhance_pixels) == (1000, 2000)
