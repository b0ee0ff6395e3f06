"""Pure image code: decode, preprocess and analysis. Arrays and bytes in, frozen dataclasses out.

Nothing in this package imports Ray Serve, FastAPI or gRPC: the same functions serve the online graph,
bulk jobs and the tests.
"""

from pipelines.decode import DecodedImage, decode_image
from pipelines.errors import ImageInputError, ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec

__all__ = [
    "DecodeLimits",
    "DecodedImage",
    "ImageInputError",
    "ImageTooLargeError",
    "InvalidImageError",
    "PreprocessSpec",
    "UnsupportedFormatError",
    "decode_image",
]
