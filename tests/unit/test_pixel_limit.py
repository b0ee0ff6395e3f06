"""`DecodeLimits.max_pixels` (IMGSERVE_MAX_PIXELS) governs on every open path, in the server's words: Pillow's own
bomb check (an error at 2 x 89,478,485 pixels) was a hidden cap under a larger limit, and answered images over it
with "exceeds limit of 178956970 pixels" whatever the configured limit said."""

import io
import struct
import zlib

import pytest
from PIL import Image

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import decode_image, open_validated
from pipelines.errors import ImageTooLargeError, InvalidImageError
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit

SPEC = PreprocessSpec()
PILLOW_CAP = 2 * 89_478_485  # Pillow's default error threshold


def encoded(fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 100, 50)).save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    data, i = encoded("JPEG"), 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def png_declaring(width: int, height: int) -> bytes:
    data = encoded("PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded("GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    descriptor = data.index(b"\x2c", 13)
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)  # the first frame
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded("TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        tag, kind = struct.unpack("<HH", data[at : at + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = width if tag == 256 else height
            data[at + 8 : at + 12] = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded("WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0] & ~((1 << 28) - 1)  # keep alpha and version bits
    data[21:25] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    return bytes(data)


HUGE = {  # each format at its largest header size, all over Pillow's cap
    "JPEG": jpeg_declaring(65000, 65000),
    "PNG": png_declaring(100_000, 100_000),
    "GIF": gif_declaring(65535, 65535),
    "BMP": bmp_declaring(20000, 20000),
    "TIFF": tiff_declaring(20000, 20000),
    "WEBP": webp_declaring(16384, 16384),
}


@pytest.mark.parametrize("fmt", sorted(HUGE))
def test_every_format_over_the_limit_gets_the_servers_wording(fmt: str) -> None:
    data = HUGE[fmt]
    for limits in (DecodeLimits(), DecodeLimits(max_pixels=150_000_000)):
        with pytest.raises(ImageTooLargeError) as info:
            decode_image(data, SPEC, limits)
        message = str(info.value)
        assert message.startswith("image is ") and f"the limit is {limits.max_pixels}" in message, message
        assert str(PILLOW_CAP) not in message and info.value.http_status == 413
        with pytest.raises(ImageTooLargeError, match=f"the limit is {limits.max_pixels}$"):
            convert_image(data, ConvertOptions(format="png", max_side=64), limits)


def test_a_limit_above_pillows_cap_governs() -> None:
    """14000x14000 = 196 MP: over Pillow's cap, under a configured 300 MP."""
    jpeg, png = jpeg_declaring(14000, 14000), png_declaring(14000, 14000)
    assert 14000 * 14000 > PILLOW_CAP
    generous = DecodeLimits(max_pixels=300_000_000, max_full_decode_pixels=300_000_000)
    for data in (jpeg, png):
        assert open_validated(data, generous).size == (14000, 14000)  # the header passes our check
    with pytest.raises(InvalidImageError):  # and the decode goes on, to find the pixel data missing (400, not 413)
        decode_image(jpeg, SPEC, generous)
    strict = DecodeLimits(max_pixels=150_000_000)
    with pytest.raises(ImageTooLargeError, match="^image is 14000x14000 = 196000000 pixels; the limit is 150000000$"):
        decode_image(jpeg, SPEC, strict)
    meta = extract_metadata(jpeg, generous)  # headers of huge images are read, the thumbnail decode is gated
    assert meta.image is not None and (meta.image.width, meta.image.height) == (14000, 14000)


def test_default_limits_are_unchanged() -> None:
    limits = DecodeLimits()
    assert limits.max_pixels == 100_000_000 and limits.max_full_decode_pixels == 40_000_000
    with pytest.raises(ImageTooLargeError, match="^image is 11000x11000 = 121000000 pixels; the limit is 100000000$"):
        decode_image(jpeg_declaring(11000, 11000), SPEC)
    with pytest.raises(ImageTooLargeError, match="formats decoded at full size are limited to 40000000$"):
        decode_image(png_declaring(7000, 7000), SPEC)
    assert decode_image(encoded("PNG"), SPEC).width == 4
