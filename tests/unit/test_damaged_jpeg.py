"""A JPEG whose data libjpeg reads with loss (cut short, a frame header claiming rows the data lacks, coded data that
lost its sync) is a 400 `invalid_image` on every path that decodes it, not an image filled with grey; harmless
defects (stray bytes between header segments) still decode, to the pixels Pillow gives."""

import io
import random
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import DecoderName, decode_image, decode_rgb
from pipelines.errors import InvalidImageError
from pipelines.jpeg_markers import TRUNCATED, lost_data
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, require

pytestmark = pytest.mark.unit

SPEC = PreprocessSpec()
DECODERS: list[DecoderName] = ["pillow", "opencv"]


@pytest.fixture(scope="module")
def photo() -> bytes:
    return require(IMAGENET_SAMPLES / "n04335435_streetcar.JPEG").read_bytes()  # 500x375, baseline


def with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """`data` with its first frame header (SOF) claiming `width` x `height`."""
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def damaged(photo: bytes) -> dict[str, bytes]:
    n = len(photo)
    noise = bytes(random.Random(1).randrange(255) for _ in range(n // 3))  # no 0xFF: no stray markers
    return {
        "frame claims 8000x8000": with_frame_size(photo, 8000, 8000),
        "middle third zeroed": photo[: n // 3] + bytes(n // 3) + photo[2 * n // 3 :],
        "middle third noise": photo[: n // 3] + noise + photo[2 * n // 3 :],
        "cut, end marker appended": photo[:3000] + b"\xff\xd9",
        "cut": photo[:3000],
    }


def cmyk_jpeg(photo: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("CMYK").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def with_stray_header_bytes(photo: bytes) -> bytes:
    """Three stray bytes after the first segment (libjpeg: "3 extraneous bytes before marker 0xdb"): nothing lost."""
    end = 4 + struct.unpack(">H", photo[4:6])[0]
    return photo[:end] + b"\x12\x34\x56" + photo[end:]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("reduced", [True, False])
def test_damaged_jpegs_are_refused_naming_the_damage(photo: bytes, decoder: DecoderName, reduced: bool) -> None:
    for source in (photo, cmyk_jpeg(photo)):  # CMYK: Pillow decodes it, after the same check
        for name, data in damaged(source).items():
            with pytest.raises(InvalidImageError, match="^JPEG data (ends early|is corrupt)") as info:
                decode_image(data, SPEC, decoder=decoder, reduced=reduced, working_max_side=512)
            assert info.value.http_status == 400 and info.value.kind == "invalid_image", name
    with pytest.raises(InvalidImageError, match=f"^{TRUNCATED}$"):
        decode_image(photo[:3000] + b"\xff\xd9", SPEC, decoder=decoder, reduced=reduced)


def test_convert_refuses_the_same_files_on_its_fast_and_libvips_paths(photo: bytes) -> None:
    for source in (photo, cmyk_jpeg(photo)):  # CMYK is not the fast path's: libvips decodes it
        for name, data in damaged(source).items():
            for options in (ConvertOptions(format="png", max_side=64), ConvertOptions(format="webp")):
                if name.startswith("frame claims") and options.max_side is None:
                    continue  # 8000x8000 out is over the output limit before anything decodes (413)
                with pytest.raises(InvalidImageError, match="^JPEG data (ends early|is corrupt)"):
                    convert_image(data, options, DecodeLimits())
        assert convert_image(with_stray_header_bytes(source), ConvertOptions(format="png"), DecodeLimits()).width == 500


@pytest.mark.parametrize("decoder", DECODERS)
def test_harmless_stray_bytes_still_decode_to_the_same_pixels(photo: bytes, decoder: DecoderName) -> None:
    clean = decode_image(photo, SPEC, decoder=decoder, working_max_side=512)
    for data in (with_stray_header_bytes(photo), photo[:-2] + b"\x00\x00\x00\x00\xff\xd9"):
        stray = decode_image(data, SPEC, decoder=decoder, working_max_side=512)
        assert np.array_equal(stray.tensor, clean.tensor) and np.array_equal(stray.working, clean.working)


def test_which_libjpeg_messages_mean_lost_data() -> None:
    assert lost_data("Corrupt JPEG data: premature end of data segment") == TRUNCATED
    assert lost_data("Premature end of JPEG file") == TRUNCATED
    assert "bad Huffman code" in (lost_data("Corrupt JPEG data: bad Huffman code") or "")
    assert "restart" in (lost_data("Corrupt JPEG data: found marker 0xd9 instead of RST3") or "")
    assert "4410 bytes" in (lost_data("Corrupt JPEG data: 4410 extraneous bytes before marker 0xd9") or "")
    assert lost_data("Corrupt JPEG data: 2 extraneous bytes before marker 0xd9") is None  # webcam MJPEG quirk
    assert lost_data("Corrupt JPEG data: 300 extraneous bytes before marker 0xdb") is None  # between segments
    assert lost_data("Unsupported color conversion request") is None  # Pillow decodes it instead


def test_real_photos_decode_to_pillows_pixels_at_every_scale_and_orientation() -> None:
    """The checked decode (libjpeg-turbo through simplejpeg) gives what Pillow's draft decode and EXIF turn gave."""
    paths = [
        *sorted(require(EXIF_SAMPLES / "jpg" / "orientation").glob("*.jpg")),
        *sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:5],
    ]
    grey = io.BytesIO()
    Image.open(paths[-1]).convert("L").save(grey, "JPEG")
    cases = [p.read_bytes() for p in paths] + [grey.getvalue()]
    tiny = PreprocessSpec(resize_size=(1, 1), crop_size=None)  # the scale is left to `min_long_side`
    for data in cases:
        for scale in (1, 2, 4, 8):
            reference = Image.open(io.BytesIO(data))
            stored_w, stored_h = reference.size
            decoded = decode_rgb(data, tiny, DecodeLimits(), min_long_side=max(stored_w, stored_h) // scale)
            assert decoded.scale == scale
            reference.draft(reference.mode, (stored_w // scale, stored_h // scale))
            expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
            assert decoded.pixels is not None and np.array_equal(decoded.pixels, expected)
            assert np.array_equal(np.asarray(decoded.rgb), expected)


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_padding_before_the_end_marker_is_not_damage(photo: bytes, fill: int) -> None:
    """Encoders and editors that pad a complete scan (16 zero bytes before EOI) made libjpeg warn "16 extraneous bytes
    before marker 0xd9" on intact photos; the more-than-8-bytes rule refused them.
    Leftover coded data is still damage."""
    clean = photo
    end = clean.rindex(b"\xff\xd9")
    padded = clean[:end] + bytes([fill]) * 16 + clean[end:]
    for decoder in ("pillow", "opencv"):
        decode_image(padded, PreprocessSpec(), decoder=decoder)  # no InvalidImageError
    leftover = clean[:end] + bytes(range(1, 17)) + clean[end:]
    with pytest.raises(InvalidImageError, match="left over"):
        decode_image(leftover, PreprocessSpec())
