"""Truncated files are a 400 in conversion, as in the decode stage, with the libvips line that says why
(`pipelines.convert.truncation`, `pipelines.convert.vips_io.vips_message`)."""

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.convert import ConvertOptions, convert_image
from pipelines.convert.truncation import gif_is_complete
from pipelines.enhance import EnhanceOptions
from pipelines.enhance.image import enhance_image
from pipelines.errors import InvalidImageError
from pipelines.limits import DecodeLimits

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def animation(frames: int = 6) -> bytes:
    images = [noise((60, 40), seed) for seed in range(frames)]
    return encoded(images[0], "GIF", save_all=True, append_images=images[1:], duration=50, loop=0)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_a_truncated_uncompressed_tiff_is_refused(fmt: str) -> None:
    """libtiff reports a short strip as a read error, not a truncation: the bottom 40 % came out black (200)."""
    data = encoded(noise((200, 100)), "TIFF")
    with pytest.raises(InvalidImageError, match="Read error"):
        convert_image(data[: int(len(data) * 0.6)], ConvertOptions.parse(format=fmt), LIMITS)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_a_truncated_animation_is_refused_when_its_frames_are_kept(fmt: str) -> None:
    data = animation()
    cut = data[: len(data) // 2]
    with pytest.raises(InvalidImageError, match="truncated"):
        convert_image(cut, ConvertOptions.parse(format=fmt), LIMITS)
    first = convert_image(cut, ConvertOptions.parse(format=fmt, animated=False), LIMITS)  # the first frame is whole
    assert first.frames == 1 and (first.width, first.height) == (60, 40)
    assert convert_image(data, ConvertOptions.parse(format=fmt), LIMITS).frames == 6


def test_gif_completeness_walks_the_blocks_when_the_file_does_not_end_in_the_trailer() -> None:
    data = animation(3)
    assert gif_is_complete(data) and gif_is_complete(data + b"\x00junk")
    assert (
        not gif_is_complete(data[:-1]) and not gif_is_complete(data[: len(data) // 2]) and not gif_is_complete(b"GIF")
    )


@pytest.mark.parametrize(
    ("source", "cause"), [("PNG", "libpng read error"), ("JPEG", "JPEG data ends early"), ("TIFF", "Read error")]
)
def test_the_message_names_the_cause_not_the_saver(source: str, cause: str) -> None:
    """libvips' last line was the saver's: "vips2png: unable to write to target target"."""
    data = encoded(noise((400, 300)), source)
    cut = data[: int(len(data) * 0.6)]
    with pytest.raises(InvalidImageError, match=cause) as raised:
        convert_image(cut, ConvertOptions.parse(format="png"), LIMITS)
    assert "unable to write" not in str(raised.value)
    if source == "PNG":
        with pytest.raises(InvalidImageError, match=cause):
            enhance_image(cut, EnhanceOptions.parse(ops="gamma"), ConvertOptions.parse(format="png"), LIMITS)
