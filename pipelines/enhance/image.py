"""Enhance an encoded image: decode (libvips, as conversion does), run the steps on its pixels, encode.

The output keeps the input's metadata (subject to the conversion options: strip, anonymise) and its alpha channel;
an animated input is enhanced as its first frame. When no step applies (auto mode on a photo with nothing to fix)
and nothing was asked of the conversion, the input itself is the answer, byte for byte: re-encoding it (JPEG quality
85 by default) would only lose quality, and an "enhanced" photo must never come back worse than it went in.
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyvips

from pipelines.convert import ConvertResult
from pipelines.convert.formats import FROM_PILLOW
from pipelines.convert.options import ConvertOptions
from pipelines.convert.vips_io import colour_array, encode_vips, load_vips, prepare_for, vips_message
from pipelines.enhance.plan import EnhanceOptions, apply_steps
from pipelines.errors import ImageTooLargeError, InvalidImageError
from pipelines.limits import DecodeLimits

_METADATA_PREFIXES = ("exif-", "xmp-data", "iptc-data", "icc-profile-data")


def _pixels(image: pyvips.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(HxWx3 uint8 RGB, HxWx1 alpha or None) of an 8-bit image with 1-4 bands."""
    array = colour_array(image)
    return np.ascontiguousarray(array[:, :, :3]), (array[:, :, 3:] if array.shape[2] == 4 else None)


def _with_metadata(pixels: np.ndarray, source: pyvips.Image) -> pyvips.Image:
    image = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
    for name in source.get_fields():
        if name.startswith(_METADATA_PREFIXES):
            image.set_type(source.get_typeof(name), name, source.get(name))
    return image


def enhance_image(
    data: bytes,
    options: EnhanceOptions,
    convert: ConvertOptions,
    limits: DecodeLimits,
    tags: Sequence[str] = (),
) -> tuple[ConvertResult, list[dict[str, Any]]]:
    """The enhanced image, encoded as `convert` says, and the steps applied (name, reason, parameters).
    `tags`: the quality stage's tags of the input, which auto mode reads. Raises `ImageInputError`s."""
    untouched_output = convert == ConvertOptions()  # no format, size, metadata or anonymisation asked for
    image, source, convert = load_vips(data, replace(convert, animated=False), limits)
    # Enhancement holds a few float32 copies of the image (Lab conversions): larger inputs are enhanced with max_side
    if image.width * image.height > limits.max_enhance_pixels:
        raise ImageTooLargeError(
            f"enhancing {image.width}x{image.height} = {image.width * image.height} pixels; the limit is"
            f" {limits.max_enhance_pixels} (ask for max_side)"
        )
    image = prepare_for(image, convert)
    try:
        rgb, alpha = _pixels(image)
    except pyvips.Error as exc:  # the pixels are read here: a file whose header was fine but whose data is not
        raise InvalidImageError(f"image could not be decoded: {vips_message(exc)}") from None
    enhanced, applied = apply_steps(rgb, options.steps(tags))
    kept_format = FROM_PILLOW.get(source.format)
    if not applied and untouched_output and kept_format is not None:  # nothing to do: the input as it came
        return ConvertResult(data, kept_format, source.width, source.height, source.frames, source, len(data)), applied
    if alpha is not None:
        enhanced = np.concatenate([enhanced, alpha], axis=2)
    encoded = encode_vips(_with_metadata(enhanced, image), convert)
    height, width = enhanced.shape[:2]
    return ConvertResult(encoded, convert.format or "jpeg", width, height, 1, source, len(data)), applied
