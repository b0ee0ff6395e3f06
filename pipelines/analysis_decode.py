"""One decode for several consumers: a tensor per model plus the quality stage's working image.

`decode_for_analysis` picks the reduced JPEG scale that satisfies every consumer at once (each model's
resize target and the working image's longer side), so a 12 MP photo is still decoded at 1/4 or 1/8
scale when the models and the quality metrics all allow it. Blockiness needs the JPEG's own 8x8 grid,
which only exists at full scale: `native_gray` is set only when the image was decoded at scale 1.
"""

from dataclasses import dataclass

import numpy as np

from pipelines.decode import DecoderName, decode_rgb
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize
from pipelines.quality.working_image import WORKING_MAX_SIDE, native_crop, working_image


@dataclass(frozen=True)
class AnalysisImage:
    """What the analysis stages need from one image; full-resolution pixels are not kept."""

    tensors: dict[str, np.ndarray]  # model name -> model input (no batch axis)
    width: int  # upright original size
    height: int
    format: str
    decode_scale: int
    working: np.ndarray | None = None  # HxWx3 uint8, longer side <= WORKING_MAX_SIDE
    native_gray: np.ndarray | None = None  # full-scale gray centre crop (blockiness); None after reduced decode
    decode_ms: float = 0.0


def decode_for_analysis(
    data: bytes,
    specs: dict[str, PreprocessSpec],
    limits: DecodeLimits | None = None,
    working_max_side: int | None = WORKING_MAX_SIDE,
    decoder: DecoderName = "pillow",
    reduced: bool = True,
) -> AnalysisImage:
    """Decode once; raises `ImageInputError` subclasses on bad input, like `decode_for_model`."""
    decoded = decode_rgb(data, list(specs.values()), limits or DecodeLimits(), decoder, reduced, working_max_side or 0)
    tensors = {name: normalize(geometry_pil(decoded.rgb, spec), spec) for name, spec in specs.items()}
    working = native = None
    if working_max_side:
        pixels = np.asarray(decoded.rgb, dtype=np.uint8)
        working = working_image(pixels, working_max_side)
        native = native_crop(pixels) if decoded.scale == 1 else None
    return AnalysisImage(tensors, decoded.width, decoded.height, decoded.format, decoded.scale, working, native)
