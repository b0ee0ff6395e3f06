"""Errors for bad image input. Each carries the HTTP status and gRPC code name it maps to at the edge.

They take a single message argument so they survive pickling across Ray processes unchanged.
"""


class ImageInputError(ValueError):
    """The client sent an image we cannot use; never a server fault."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    kind = "invalid_image"


class InvalidImageError(ImageInputError):
    """Corrupt, truncated or otherwise undecodable image bytes."""


class UnsupportedFormatError(ImageInputError):
    """A format outside the configured allow-list, or bytes that are not an image at all."""

    http_status = 415
    kind = "unsupported_format"


class ImageTooLargeError(ImageInputError):
    """Too many bytes or too many pixels (decompression bombs). RESOURCE_EXHAUSTED on gRPC, as every `too_large`."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "too_large"


class InvalidOptionError(ImageInputError):
    """An image operation's option is unknown, out of range or not supported by this server (e.g. AVIF without
    its encoder)."""

    kind = "invalid_option"
