"""Lossy WebP through libwebp's own API (`pipelines.convert.libwebp`): the same bitstream as libvips' saver, the
metadata libvips writes, the frame let go before the encode, and the bulk decode budget."""

import io
import struct
import threading
import time

import numpy as np
import pytest
import pyvips
from PIL import Image

from pipelines.convert import ConvertOptions, convert_image, libwebp
from pipelines.convert.jpeg_fast import DecodeBudget
from pipelines.convert.metadata_edit import exif_with_size
from pipelines.limits import DecodeLimits
from tests.paths import EXIF_SAMPLES, require

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()


def chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    found, at = {}, 12
    while at + 8 <= len(data):
        (size,) = struct.unpack("<I", data[at + 4 : at + 8])
        found[data[at : at + 4]] = data[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)
    return found


def textured(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return np.clip(ramp + rng.normal(0, 25, ramp.shape), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def needs_libwebp() -> None:
    if not libwebp.available():
        pytest.skip("no libwebp with the encoder API here (Pillow's wheel bundles one): libvips' saver is used")


@pytest.mark.parametrize(("quality", "effort"), [(80, 2), (40, 0), (95, 4), (75, 6)])
def test_the_bitstream_is_libvips_own(quality: int, effort: int) -> None:
    """Same encoder, same settings: libwebp's VP8 chunk is byte for byte what libvips' webpsave writes (odd sizes
    too: chroma planes round up)."""
    pixels = textured(333, 221)
    image = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
    frame = libwebp.frame(image, keep=0, quality=quality, effort=effort)
    assert frame is not None
    ours = frame.encode()
    theirs = image.webpsave_buffer(Q=quality, effort=effort, keep=0)
    assert ours == theirs
    assert frame.pixels is None  # the RGB frame is let go once libwebp has its planes


def test_only_single_eight_bit_rgb_frames_take_it() -> None:
    rgb = pyvips.Image.new_from_array(textured(40, 30)).copy(interpretation="srgb")
    assert libwebp.frame(rgb.bandjoin(255), 0, 80, 2) is None  # alpha
    assert libwebp.frame(rgb.colourspace("b-w"), 0, 80, 2) is None  # grey
    assert libwebp.frame(rgb.cast("ushort"), 0, 80, 2) is None  # 16-bit
    strip = rgb.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 10)  # three frames of an animation
    assert libwebp.frame(strip, 0, 80, 2) is None


def test_metadata_is_written_as_libvips_writes_it() -> None:
    """A camera JPEG with EXIF, XMP and an ICC profile: the chunks libvips writes (ICC only with icc=keep), EXIF
    with its PixelX/YDimension saying the output's size; metadata=strip writes the simple format."""
    source = next(
        p.read_bytes()
        for p in sorted(require(EXIF_SAMPLES).glob("jpg/*.jpg"))
        if {"exif", "xmp", "icc_profile"} <= set(Image.open(p).info)
        and Image.open(p).mode == "RGB"
        and 0xA002 in Image.open(p).getexif().get_ifd(0x8769)
    )
    kept = convert_image(source, ConvertOptions.parse(format="webp", max_side=64, icc="keep"), LIMITS)
    found = chunks(kept.data)
    assert list(found) == [b"VP8X", b"ICCP", b"VP8 ", b"EXIF", b"XMP "]
    decoded = Image.open(io.BytesIO(kept.data))
    decoded.load()
    assert decoded.size == (kept.width, kept.height) and max(decoded.size) == 64
    assert decoded.info["icc_profile"] == Image.open(io.BytesIO(source)).info["icc_profile"]
    sub = decoded.getexif().get_ifd(0x8769)
    assert (sub[0xA002], sub[0xA003]) == (kept.width, kept.height)
    assert decoded.getexif().get(0x0112, 1) == 1
    assert b"x:xmpmeta" in found[b"XMP "]
    srgb = chunks(convert_image(source, ConvertOptions.parse(format="webp", max_side=64), LIMITS).data)
    assert b"ICCP" not in srgb and srgb[b"VP8 "] == found[b"VP8 "]
    stripped = convert_image(source, ConvertOptions.parse(format="webp", max_side=64, metadata="strip"), LIMITS)
    assert list(chunks(stripped.data)) == [b"VP8 "]


def test_without_libwebp_libvips_writes_the_same_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = io.BytesIO()
    Image.fromarray(textured(300, 200)).save(photo, "JPEG", quality=92)
    options = ConvertOptions.parse(format="webp", max_side=250)
    direct = convert_image(photo.getvalue(), options, LIMITS).data
    monkeypatch.setattr(libwebp, "_library", lambda: None)
    assert not libwebp.available()
    assert chunks(convert_image(photo.getvalue(), options, LIMITS).data)[b"VP8 "] == chunks(direct)[b"VP8 "]


def exif_block(order: str, kind: int, width: int, height: int) -> bytes:
    """A minimal TIFF/EXIF block: IFD0 with an ExifIFD pointer, ExifIFD with PixelX/YDimension of type `kind`."""
    mark = b"II" if order == "<" else b"MM"
    value = (lambda v: struct.pack(order + "HH", v, 0)) if kind == 3 else (lambda v: struct.pack(order + "I", v))
    ifd0 = struct.pack(order + "H", 1) + struct.pack(order + "HHII", 0x8769, 4, 1, 26) + struct.pack(order + "I", 0)
    exif = struct.pack(order + "H", 2)
    exif += struct.pack(order + "HHI", 0xA002, kind, 1) + value(width)
    exif += struct.pack(order + "HHI", 0xA003, kind, 1) + value(height) + struct.pack(order + "I", 0)
    return b"Exif\x00\x00" + mark + struct.pack(order + "HI", 42, 8) + ifd0 + exif


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", [3, 4])
def test_exif_dimensions_are_patched_in_place(order: str, kind: int) -> None:
    block = exif_block(order, kind, 4032, 3024)
    for width, height in ((2048, 1536), (70000, 10)):  # a SHORT that cannot hold 70000 becomes a LONG
        patched = exif_with_size(block, width, height)
        assert len(patched) == len(block) and patched[:6] == b"Exif\x00\x00"
        exif = Image.Exif()
        exif.load(patched[6:])
        sub = exif.get_ifd(0x8769)
        assert (sub[0xA002], sub[0xA003]) == (width, height)
    assert exif_with_size(b"Exif\x00\x00garbage", 1, 1) == b"Exif\x00\x00garbage"
    assert exif_with_size(block[:30], 1, 1) == block[:30]  # cut inside the sub-IFD


def test_the_decode_budget_holds_a_second_decode_until_the_first_conversion_lets_go() -> None:
    budget = DecodeBudget(limit=30)
    events: list[str] = []
    first_holds = threading.Event()
    let_go = threading.Event()

    def first() -> None:
        with budget.scope():
            budget.take(20)
            events.append("first took")
            first_holds.set()
            let_go.wait(5)
            events.append("first lets go")

    def second() -> None:
        first_holds.wait(5)
        with budget.scope():
            budget.take(20)  # 40 > 30: waits for the first
            events.append("second took")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    assert events == ["first took"]
    let_go.set()
    for thread in threads:
        thread.join(5)
    assert events == ["first took", "first lets go", "second took"]
    with budget.scope():
        budget.take(100)  # larger than the whole budget: runs alone
        budget.take(5)  # more in the same scope of the same thread does not wait for itself
    unbounded = DecodeBudget()
    with unbounded.scope():
        unbounded.take(10**12)
    budget.take(10**12)  # outside a scope nothing is taken
