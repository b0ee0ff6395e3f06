"""Inputs whose samples libvips' `thumbnail` would clip: signed, 32-bit and float TIFFs, scaled to 8 bits first by
the decode stage's rule (`pipelines.decode.eight_bit_scale`), so conversion and analysis see the same pixels."""

import pyvips
from PIL import Image

from pipelines.pixel_modes import SampleType, eight_bit_scale, tiff_sample_type

# libvips sample formats scaled by the decode stage's rule (`thumbnail` casts them to 8 bits, clipping)
_VIPS_SAMPLES: dict[str, SampleType] = {
    "char": ("int", 8), "short": ("int", 16), "uint": ("uint", 32), "int": ("int", 32), "float": ("float", 32),
    "double": ("float", 64),
}  # fmt: skip


def deep_samples(header: Image.Image) -> bool:
    """Whether libvips' `thumbnail` would clip the input's samples: signed, 32-bit or float ones (TIFF)."""
    sample = tiff_sample_type(header)
    return sample is not None and (sample[0] != "uint" or sample[1] > 16)


def scaled_to_eight_bit(image: pyvips.Image) -> pyvips.Image:
    """8-bit samples, scaled as the decode stage scales them (`eight_bit_scale`): `thumbnail`'s cast clipped, so a
    0..1 float TIFF came out black, a 32-bit one black and white and a signed 16-bit one at half brightness."""
    sample = _VIPS_SAMPLES.get(image.format)
    if sample is None:
        return image
    multiplier, divisor = eight_bit_scale(sample, image.max() if sample[0] == "float" else 0.0)
    eight_bit = image.linear(multiplier / divisor, 0).rint().cast("uchar")
    grey = image.bands < 3 and image.interpretation != "cmyk"
    return eight_bit.copy(interpretation="b-w" if grey else ("cmyk" if image.interpretation == "cmyk" else "srgb"))
