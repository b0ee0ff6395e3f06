"""Pure image code: decode, preprocess and analysis. Arrays and bytes in, frozen dataclasses out.

Nothing in this package imports Ray Serve, FastAPI or gRPC: the same functions serve the online graph,
bulk jobs and the tests. The names below load on first use (PEP 562), so importing a light submodule
(`pipelines.limits`, `pipelines.errors`) does not load the decoders.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.decode import DecodedImage, decode_image
    from pipelines.errors import ImageInputError, ImageTooLargeError, InvalidImageError, UnsupportedFormatError
    from pipelines.limits import DecodeLimits
    from pipelines.preprocess import PreprocessSpec

_HOMES = {
    "DecodeLimits": "pipelines.limits",
    "DecodedImage": "pipelines.decode",
    "ImageInputError": "pipelines.errors",
    "ImageTooLargeError": "pipelines.errors",
    "InvalidImageError": "pipelines.errors",
    "PreprocessSpec": "pipelines.preprocess",
    "UnsupportedFormatError": "pipelines.errors",
    "decode_image": "pipelines.decode",
}
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(import_module(home), name)
