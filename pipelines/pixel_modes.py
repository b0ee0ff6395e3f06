"""Pillow's many modes as 8-bit RGB, one rule for every decode: deep grey samples scaled to 8 bits
(`eight_bit_scale`), transparent pixels shown on white. Every step is per pixel (given the whole image's largest
value, `top`), so a strip of an image converts to the same pixels as the whole image (`pipelines.full_size`)."""

from typing import Literal

import numpy as np
from PIL import Image

DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
TOP_SCALED_MODES = ("I", "F")  # deep modes whose 8-bit scale depends on the largest value (`eight_bit_scale`)
BAND_PIXELS = 1 << 16  # pixels of one band of rows read at a time by `largest_grey_value`
SampleType = tuple[Literal["uint", "int", "float"], int]  # kind of number and bits a sample
_TIFF_SAMPLE_KINDS: dict[int, Literal["uint", "int", "float"]] = {1: "uint", 2: "int", 3: "float"}


def eight_bit_scale(sample: SampleType | None, top: float) -> tuple[float, float]:
    """(multiplier, divisor) that turn deep samples into 8-bit ones (then rounded and clipped to 0..255), the one
    rule of the decode stage and of conversion (`pipelines.convert.deep_samples`): floats in 0..1 times 255; unsigned
    n-bit integers by 255 / (2^n - 1); signed ones from 0..2^(n-1) - 1 (negative values are black). Where the type
    is not known (Pillow's mode I of a 16-bit PNG) or a float goes above 1: values above 255 are taken as 16-bit,
    others as 8-bit. `top`: the largest value (read only for floats and unknown types)."""
    if sample is not None and sample[0] == "float" and top <= 1.0:
        return 255.0, 1.0
    if sample is not None and sample[0] == "uint":
        return 255.0, float(2 ** sample[1] - 1)
    if sample is not None and sample[0] == "int":
        return 255.0, float(2 ** (sample[1] - 1) - 1)
    return 1.0, (257.0 if top > 255.0 else 1.0)


def tiff_sample_type(image: Image.Image) -> SampleType | None:
    """(kind, bits) of a TIFF's samples from its SampleFormat and BitsPerSample tags; None for other formats."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    kind, bits = tags.get(339, 1), tags.get(258, 8)
    kind, bits = (kind[0] if isinstance(kind, tuple) else kind), (bits[0] if isinstance(bits, tuple) else bits)
    return (_TIFF_SAMPLE_KINDS[kind], int(bits)) if kind in _TIFF_SAMPLE_KINDS and isinstance(bits, int) else None


def grey_values(image: Image.Image, sample: SampleType | None) -> np.ndarray:
    """Mode I or F samples as one float32 copy (to work on in place), NaN and infinities as 0."""
    raw = np.asarray(image)
    if sample == ("uint", 32) and raw.dtype == np.int32:
        raw = raw.view(np.uint32)  # Pillow holds unsigned 32-bit samples in mode I's signed integers
    return np.nan_to_num(raw.astype(np.float32), copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def largest_grey_value(image: Image.Image, sample: SampleType | None) -> float:
    """The largest sample of a mode I or F image as `eight_bit_grey` reads it (`grey_values`: NaN and infinities as
    0), a band of rows of at most `BAND_PIXELS` at a time: a float copy of the whole image took 4 bytes a pixel
    (160 MB for a 40 MP TIFF), and each band's conversion to numpy holds a few copies of it at once."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // max(1, width))
    bands = (image.crop((0, top, width, min(height, top + rows))) for top in range(0, height, rows))
    return max((float(grey_values(band, sample).max(initial=0.0)) for band in bands), default=0.0)


def eight_bit_grey(image: Image.Image, sample: SampleType | None = None, top: float | None = None) -> Image.Image:
    """16-bit, 32-bit and float grey as 8-bit grey, scaled (Pillow's conversion clips 16-bit values, `point` does
    not take I;16B/L, and a 0-1 float image came out black). 16-bit modes are scaled by their depth whatever the
    values (a dark 16-bit photo stays dark); other modes by `eight_bit_scale` (`sample`: the file's sample type,
    where known: a 32-bit or signed 16-bit TIFF, both Pillow's mode I; `top`: the largest value of the whole image
    when `image` is a strip of it)."""
    if image.mode.startswith("I;16"):  # the high byte: as the v / 256 this replaced, in a pass over 2 bytes a pixel
        return Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
    # one float copy, worked on in place (a copy a step took 20 bytes a pixel: 800 MB for a 40 MP float TIFF)
    values = grey_values(image, sample)
    if image.mode == "F" and sample is None:
        sample = ("float", 32)
    multiplier, divisor = eight_bit_scale(sample, float(values.max(initial=0.0)) if top is None else top)
    values *= multiplier
    values /= divisor
    return Image.fromarray(np.clip(np.rint(values, out=values), 0, 255, out=values).astype(np.uint8), "L")


def on_white(image: Image.Image) -> Image.Image:
    """What a viewer shows of a transparent image on a white page: the colours under transparent pixels are
    not the picture (a fully transparent PNG was tagged low_light from its hidden black). Opaque images pass
    (compositing an opaque pixel on white leaves it as it is: all 2^24 colours checked)."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # convert() would copy an RGBA image
    if rgba.getextrema()[3][0] == 255:
        return rgba.convert("RGB")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def is_plain_rgb(image: Image.Image) -> bool:
    """Whether `image` is 8-bit RGB as it is (`to_rgb` returns it unchanged): no transparent colour key."""
    return image.mode == "RGB" and "transparency" not in image.info


def to_rgb(image: Image.Image, sample: SampleType | None = None, top: float | None = None) -> Image.Image:
    """`image` (any mode, upright) as 8-bit RGB, decoded here (errors are the file's); an RGB image is returned as it
    is, without convert()'s copy of the pixels. `sample`, `top`: as `eight_bit_grey` takes them."""
    if image.mode in DEEP_GREY_MODES:
        image = eight_bit_grey(image, sample, top)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = on_white(image)
    if is_plain_rgb(image):
        image.load()
        return image
    return image.convert("RGB")
