"""Bad input gets the right ImageInputError (and HTTP status) from real broken files; good formats decode."""

import io
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.decode import DecoderName, decode_image
from pipelines.errors import ImageInputError, ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize, reference_preprocess
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

DECODERS: list[DecoderName] = ["pillow", "opencv"]
SPEC = PreprocessSpec(mean=(128.0,) * 3, std=(128.0,) * 3)
PHOTO = "imagenet-samples/n01440764_tench.JPEG"


def decode(data: bytes, decoder: DecoderName = "pillow", limits: DecodeLimits | None = None) -> None:
    decode_image(data, SPEC, limits, decoder=decoder)


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@pytest.fixture(scope="session")
def png_bomb() -> bytes:
    """A valid 20000x20000 1-bit PNG of ~50 KB, compressed row by row so the pixels never exist in memory."""
    width = height = 20_000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width // 8)  # filter byte + 1 bit per pixel
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> bytes:
    return (shared_data / PHOTO).read_bytes()


@pytest.mark.parametrize("decoder", DECODERS)
def test_empty_bytes(decoder: DecoderName) -> None:
    with pytest.raises(InvalidImageError, match="empty image") as info:
        decode(b"", decoder)
    assert info.value.http_status == 400 and info.value.kind == "invalid_image"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("fraction", [0.4, 0.9])
def test_truncated_jpeg(photo: bytes, decoder: DecoderName, fraction: float) -> None:
    with pytest.raises(InvalidImageError, match="JPEG data ends early: the image is truncated or damaged"):
        decode(photo[: int(len(photo) * fraction)], decoder)


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is a text file and not an image\n" * 20,
        b"\x00" * 64 + bytes(random.Random(7).getrandbits(8) for _ in range(4096)),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["text", "random", "svg"],
)
def test_not_an_image_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError, match="unrecognised image format; supported: AVIF, BMP") as info:
        decode(data)
    assert info.value.http_status == 415 and info.value.kind == "unsupported_format"


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_real_image_outside_allow_list(photo: bytes, fmt: str) -> None:
    data = encoded(Image.open(io.BytesIO(photo)).convert("RGB").resize((64, 48)), fmt)
    with pytest.raises(UnsupportedFormatError, match=f"format {fmt} is not accepted") as info:
        decode(data)
    assert info.value.http_status == 415


def test_allow_list_comes_from_the_limits(photo: bytes) -> None:
    png = encoded(Image.open(io.BytesIO(photo)), "PNG")
    with pytest.raises(UnsupportedFormatError, match="supported: JPEG$"):
        decode(png, limits=DecodeLimits(formats=frozenset({"JPEG"})))


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8\xff\xe0" + b"garbage!" * 64, b"\xff\xd8" + b"garbage!" * 64, b"\x89PNG\r\n\x1a\n" + b"garbage!" * 64],
    ids=["jpeg-app0", "jpeg-soi", "png"],
)
def test_supported_magic_then_garbage_is_corrupt_not_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidImageError) as info:
        decode(data)
    assert info.value.http_status == 400


@pytest.mark.parametrize("decoder", DECODERS)
def test_too_many_bytes(photo: bytes, decoder: DecoderName) -> None:
    with pytest.raises(ImageTooLargeError, match=f"image is {len(photo)} bytes; the limit is 1000") as info:
        decode(photo, decoder, DecodeLimits(max_bytes=1000))
    assert info.value.http_status == 413 and info.value.kind == "too_large"
    decode(photo, decoder, DecodeLimits(max_bytes=len(photo)))  # the limit itself is allowed


def test_too_many_pixels(photo: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match="image is 500x375 = 187500 pixels; the limit is 100000"):
        decode(photo, limits=DecodeLimits(max_pixels=100_000))


@pytest.mark.parametrize("decoder", DECODERS)
def test_decompression_bomb(png_bomb: bytes, decoder: DecoderName) -> None:
    assert len(png_bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="^image is 20000x20000 = 400000000 pixels; the limit is 100000000$"):
        decode(png_bomb, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("folder", ["invalid", "tests"])
def test_broken_camera_files_never_escape_as_other_errors(shared_data: Path, decoder: DecoderName, folder: str) -> None:
    paths = sorted((shared_data / "exif-samples" / "jpg" / folder).iterdir())
    assert len(paths) >= 7
    for path in [*paths, shared_data / "exif-samples" / "jpg" / "corrupted.jpg"]:
        try:
            decode(path.read_bytes(), decoder)
        except ImageInputError:
            pass  # any other exception type fails the test with the file in the traceback


def served_geometry(image: Image.Image) -> np.ndarray:
    """What the server computes from exactly these RGB pixels (its geometry is within a grey level of the
    textbook reference; `test_preprocess` pins that), so a lossless decode must reproduce it exactly."""
    return normalize(geometry_pil(image.convert("RGB"), SPEC), SPEC)


def lossless_cases(source: Image.Image) -> list[tuple[str, bytes]]:
    rgba = source.convert("RGBA")
    return [
        ("PNG", encoded(source, "PNG")),
        ("PNG", encoded(rgba, "PNG")),
        ("BMP", encoded(source, "BMP")),
        ("TIFF", encoded(source, "TIFF")),
        ("TIFF", encoded(source, "TIFF", compression="tiff_lzw")),
        ("WEBP", encoded(source, "WEBP", lossless=True)),
    ]


@pytest.mark.parametrize("decoder", DECODERS)
def test_lossless_formats_decode_to_the_source_pixels(photo: bytes, decoder: DecoderName) -> None:
    source = Image.open(io.BytesIO(photo)).convert("RGB")
    expected = served_geometry(source)
    for fmt, data in lossless_cases(source):
        decoded = decode_image(data, SPEC, decoder=decoder)
        assert (decoded.format, decoded.width, decoded.height) == (fmt, 500, 375)
        np.testing.assert_array_equal(decoded.tensor, expected, err_msg=fmt)


@pytest.mark.parametrize(("fmt", "mode"), [("GIF", "P"), ("WEBP", "RGB"), ("PNG", "L"), ("PNG", "P")])
def test_other_encodings_match_their_reference(photo: bytes, fmt: str, mode: str) -> None:
    data = encoded(Image.open(io.BytesIO(photo)).convert(mode), fmt)
    decoded = decode_image(data, SPEC)
    assert decoded.format == fmt
    np.testing.assert_array_equal(decoded.tensor, served_geometry(Image.open(io.BytesIO(data))))


def test_sixteen_bit_png_keeps_its_brightness(photo: bytes) -> None:
    grey = Image.open(io.BytesIO(photo)).convert("L")
    wide = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # the same picture at 16 bits
    decoded = decode_image(encoded(wide, "PNG"), SPEC)
    assert abs(float(decoded.tensor.mean()) - float(reference_preprocess(grey, SPEC).mean())) < 0.02


HEIC_CHECK = """
import sys
from pipelines.decode import decode_image
from pipelines.preprocess import PreprocessSpec
print(decode_image(open(sys.argv[1], "rb").read(), PreprocessSpec()).format)
"""


def test_real_heic_decodes_in_a_fresh_process(shared_data: Path) -> None:
    pytest.importorskip("pillow_heif")
    path = shared_data / "exif-samples" / "heic" / "mobile" / "iphone_13_pro_max.HEIC"
    # A fresh interpreter: another test may already have registered the HEIF opener in this one.
    result = subprocess.run(
        [sys.executable, "-c", HEIC_CHECK, str(path)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "HEIF"


# Issue #18's decode probes: what a header declares is checked before any pixel buffer is allocated.


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")


def test_100_megapixel_png_is_413_before_decoding() -> None:
    # a solid-colour 10000x10000 PNG is ~300 KB on the wire and 300-400 MB decoded: full-size formats have a lower cap
    with pytest.raises(ImageTooLargeError, match="formats decoded at full size"):
        decode(_png_header_only(10_000, 10_000))


def _bmp_header_only(width: int, height: int) -> bytes:
    file_header = b"BM" + struct.pack("<IHHI", 60, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return file_header + info + b"\0" * 6  # 60 bytes


def test_60_byte_bmp_declaring_10000x10000_is_refused_without_allocating() -> None:
    with pytest.raises((ImageTooLargeError, InvalidImageError)):  # 100 MP: over the full-size cap first
        decode(_bmp_header_only(10_000, 10_000))
    with pytest.raises(InvalidImageError, match="declares 6000x6000"):  # under the cap: the missing rows
        decode(_bmp_header_only(6000, 6000))
    # and one that is complete still decodes
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 20, 30)).save(buffer, "BMP")
    decode(buffer.getvalue())


def _tiff(mode: str, values: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.frombytes(mode, (values.shape[1], values.shape[0]), values.tobytes()).save(out, "TIFF")
    return out.getvalue()


def test_deep_grey_images_decode_scaled_to_eight_bits() -> None:
    """A 16-bit TIFF stored big- or little-endian (Pillow modes I;16B / I;16L) was a 400 "corrupt" (Pillow's `point`
    does not take them) and a float TIFF of 0-1 values decoded black."""
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    cases = {
        "I;16B": _tiff("I;16B", (ramp * 65535).astype(">u2")),
        "I;16L": _tiff("I;16", (ramp * 65535).astype("<u2")),
        "F": _tiff("F", ramp.astype("<f4")),
    }
    for name, data in cases.items():
        assert Image.open(io.BytesIO(data)).mode.startswith(name[:3]), name
        working = decode_image(data, SPEC, working_max_side=512).working
        assert abs(float(working.mean()) - 127.5) < 3 and working.max() >= 250, name


def test_transparent_pixels_are_shown_on_white_not_their_hidden_colour() -> None:
    """The colours under transparent pixels are not the picture: a fully transparent PNG (black underneath) was
    tagged low_light."""
    clear = np.zeros((48, 64, 4), np.uint8)  # transparent black
    half = clear.copy()
    half[:, :32] = (200, 30, 30, 255)  # an opaque red half
    for pixels, expected_mean in ((clear, 255.0), (half, None)):
        out = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(out, "PNG")
        working = decode_image(out.getvalue(), SPEC, working_max_side=512).working
        if expected_mean is not None:
            assert float(working.mean()) == expected_mean
        else:
            assert tuple(working[10, 50]) == (255, 255, 255) and tuple(working[10, 5]) == (200, 30, 30)


def test_a_dark_sixteen_bit_image_stays_dark() -> None:
    """The 8-bit scaling was chosen from the pixel values: a dark 16-bit TIFF (max 180 of 65535) became mid-grey."""
    dark = (np.linspace(0, 180, 64 * 48).reshape(48, 64)).astype(">u2")
    working = decode_image(_tiff("I;16B", dark), SPEC, working_max_side=512).working
    assert working.max() <= 1
