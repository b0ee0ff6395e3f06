"""Compressed request bodies (`Content-Encoding: gzip` or `deflate`, as tritonclient's `request_compression_algorithm`
and HTTP clients with request compression send them), inflated as they arrive, for every route: the body a route
reads is the plain one (`serving.http.body_limit` applies it). What the body inflates to is held to the same limit
as a plain body, checked a step at a time, so a zip bomb of a few kilobytes costs no more memory than a plain body
at the limit."""

import zlib

from serving.errors import BadRequestError, RequestTooLargeError

# zlib's window bits for each Content-Encoding ("deflate" is the zlib format, RFC 9110 8.4.1.2, which tritonclient
# writes).
CONTENT_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
INFLATE_STEP_BYTES = 1024 * 1024


class UnsupportedContentEncodingError(BadRequestError):
    http_status = 415
    kind = "unsupported_encoding"


class BodyInflater:
    """One request body's decompression, fed the body's pieces as they arrive."""

    def __init__(self, coding: str, max_bytes: int):
        self.coding = coding
        self.max_bytes = max_bytes
        self.size = 0  # bytes inflated so far
        self._received = False
        self._inflater = zlib.decompressobj(CONTENT_DECODERS[coding])

    @classmethod
    def for_encoding(cls, content_encoding: str | None, max_bytes: int) -> "BodyInflater | None":
        """The inflater for a Content-Encoding header's value; None for none or `identity` (the body as it is).
        Other encodings, or more than one, are a 415 naming the ones taken."""
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if not codings:
            return None
        if len(codings) > 1 or codings[0] not in CONTENT_DECODERS:
            supported = "send gzip, deflate or an uncompressed body"
            raise UnsupportedContentEncodingError(
                f"Content-Encoding {content_encoding!r:.60} is not supported; {supported}"
            )
        return cls(codings[0], max_bytes)

    def feed(self, data: bytes, final: bool) -> bytes:
        """The plain bytes of the next piece of the body (`final`: its last). More than `max_bytes` in all is a 413
        as soon as it is seen; data that is not the encoding, or a stream cut short or followed by more bytes, a 400.
        An empty body stays empty (a request without one that names an encoding)."""
        self._received = self._received or bool(data)
        plain = bytearray()
        pending = data
        try:
            while True:
                step = self._inflater.decompress(pending, min(INFLATE_STEP_BYTES, self.max_bytes + 1 - self.size))
                self.size += len(step)
                if self.size > self.max_bytes:
                    raise RequestTooLargeError(
                        f"request body decompresses to more than the limit of {self.max_bytes} bytes"
                    )
                plain += step
                pending = self._inflater.unconsumed_tail
                if not step and not pending:
                    break
        except zlib.error as exc:
            raise BadRequestError(f"request body is not valid {self.coding} data: {exc}") from None
        if self._inflater.unused_data or (final and self._received and not self._inflater.eof):
            raise BadRequestError(f"request body is not one complete {self.coding} stream")
        return bytes(plain)
