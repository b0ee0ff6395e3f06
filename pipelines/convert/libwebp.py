"""Lossy WebP from 8-bit RGB pixels through libwebp's own encoder API (ctypes), without libvips' WebP saver.

libvips' `webpsave` copies the frame into a 32-bit ARGB picture before libwebp turns it into YUV 4:2:0 (12.6 MB
more for a 2048x1536 photo); `WebPPictureImportRGB` reads the RGB rows straight into the YUV planes. Same encoder,
same settings (libwebp's default preset at the quality asked, `method` = effort): the VP8 bitstream is byte for
byte libvips' (`tests/unit/test_libwebp.py`). A 12 MP camera photo at 2048 px, effort 2: +5.8 MB and ~100 ms against
+16.7 MB and ~125-155 ms through `webpsave` (BENCHMARKS.md, "WebP through libwebp's own API").

The library is the libwebp Pillow ships with (its wheel bundles one), else the system's; none found (or
`IMGSERVE_DIRECT_WEBP=0`) leaves WebP to libvips. Metadata goes into the extended container as libvips writes it:
VP8X, ICCP, VP8, EXIF (with libvips' `Exif\\0\\0` prefix), XMP.
"""

import ctypes
import ctypes.util
import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import PIL
import pyvips

from pipelines.convert.metadata_edit import KEEP_EXIF, KEEP_ICC, KEEP_XMP, exif_with_size
from pipelines.errors import InvalidOptionError
from pipelines.switches import env_switch

DIRECT_WEBP_ENV = "IMGSERVE_DIRECT_WEBP"
ENCODER_ABI = 0x020F  # WEBP_ENCODER_ABI_VERSION of libwebp 1.x: the major byte is what the library checks
_V = ctypes.c_void_p
_VP8X_ICC, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x08, 0x04


class _Picture(ctypes.Structure):
    """libwebp's WebPPicture (encode.h, ABI 2.x); only width, height, writer and custom_ptr are set here."""

    _fields_ = [
        ("use_argb", ctypes.c_int), ("colorspace", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
        ("y", _V), ("u", _V), ("v", _V), ("y_stride", ctypes.c_int), ("uv_stride", ctypes.c_int),
        ("a", _V), ("a_stride", ctypes.c_int), ("pad1", ctypes.c_uint32 * 2),
        ("argb", _V), ("argb_stride", ctypes.c_int), ("pad2", ctypes.c_uint32 * 3),
        ("writer", _V), ("custom_ptr", _V), ("extra_info_type", ctypes.c_int), ("extra_info", _V),
        ("stats", _V), ("error_code", ctypes.c_int), ("progress_hook", _V), ("user_data", _V),
        ("pad3", ctypes.c_uint32 * 3), ("pad4", _V), ("pad5", _V), ("pad6", ctypes.c_uint32 * 8),
        ("memory_", _V), ("memory_argb_", _V), ("pad7", _V * 2),
    ]  # fmt: skip


class _MemoryWriter(ctypes.Structure):
    _fields_ = [("mem", _V), ("size", ctypes.c_size_t), ("max_size", ctypes.c_size_t), ("pad", ctypes.c_uint32)]


def _candidates() -> list[str]:
    bundled = Path(PIL.__file__).resolve().parent.parent / "pillow.libs"
    found = sorted(str(p) for p in bundled.glob("libwebp-*.so*"))
    system = ctypes.util.find_library("webp")
    return found + ([system] if system else [])


def direct_webp_enabled(env: dict[str, str] | None = None) -> bool:
    """IMGSERVE_DIRECT_WEBP, on by default (`pipelines.switches`: only `0` turned it off, and `false` or `maybe`
    were taken as on). A value that is no switch is refused at `imgserve serve`'s start; a command that reads it
    later (`imgserve convert`) keeps the default then."""
    try:
        return env_switch(DIRECT_WEBP_ENV, True, env)
    except ValueError:
        return True


@functools.cache
def _library() -> ctypes.CDLL | None:
    """libwebp with the encoder API, version 1.x; None when there is none (or the variable turns it off)."""
    if not direct_webp_enabled():
        return None
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate)
            if not 0x010000 <= lib.WebPGetEncoderVersion() < 0x020000:
                continue
            lib.WebPConfigInitInternal.argtypes = [_V, ctypes.c_int, ctypes.c_float, ctypes.c_int]
            lib.WebPPictureInitInternal.argtypes = [_V, ctypes.c_int]
            lib.WebPPictureImportRGB.argtypes = [_V, _V, ctypes.c_int]
            lib.WebPEncode.argtypes = [_V, _V]
            for name in ("WebPPictureFree", "WebPMemoryWriterInit", "WebPMemoryWriterClear"):
                getattr(lib, name).argtypes = [_V]
                getattr(lib, name).restype = None
        except (OSError, AttributeError):
            continue
        return lib
    return None


def available() -> bool:
    return _library() is not None


# WebPEncodingError values a client can act on (a smaller or lower-quality output); 1 and 2 are out of memory
_ENCODER_REFUSALS = {5: "bad dimension", 6: "partition 0 overflow", 7: "partition overflow", 9: "file too big"}


def _encoder(quality: int, method: int) -> tuple[ctypes.CDLL, ctypes.Array, _Picture, _MemoryWriter] | None:
    lib = _library()
    if lib is None:
        return None
    config = (ctypes.c_int * 64)()  # WebPConfig: 29 ints and floats in ABI 2.x; method is the third
    picture, writer = _Picture(), _MemoryWriter()
    if not lib.WebPConfigInitInternal(config, 0, float(quality), ENCODER_ABI):
        return None
    config[2] = method
    if not lib.WebPPictureInitInternal(ctypes.byref(picture), ENCODER_ABI):
        return None
    lib.WebPMemoryWriterInit(ctypes.byref(writer))
    picture.writer = ctypes.cast(lib.WebPMemoryWrite, _V).value
    picture.custom_ptr = ctypes.addressof(writer)
    return lib, config, picture, writer


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def with_metadata(
    simple: bytes, width: int, height: int, icc: bytes | None, exif: bytes | None, xmp: bytes | None
) -> bytes:
    """The extended container (VP8X) around a simple WebP's VP8 chunk with the given blobs, in libvips' order."""
    if not (icc or exif or xmp):
        return simple
    flags = (_VP8X_ICC if icc else 0) | (_VP8X_EXIF if exif else 0) | (_VP8X_XMP if xmp else 0)
    canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
    body = b"WEBP" + _chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas)
    body += (_chunk(b"ICCP", icc) if icc else b"") + simple[12:]
    body += (_chunk(b"EXIF", exif) if exif else b"") + (_chunk(b"XMP ", xmp) if xmp else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


@dataclass
class WebpFrame:
    """One upright 8-bit RGB frame in memory with the metadata to write: what `encode` needs once the libvips
    pipeline that made it (and the decoded photo it held) is gone."""

    pixels: memoryview | None  # packed RGB rows (libvips' buffer); None once encoded
    width: int
    height: int
    quality: int
    effort: int
    icc: bytes | None
    exif: bytes | None
    xmp: bytes | None

    def encode(self) -> bytes:
        """The WebP file. The RGB frame is let go once libwebp has its YUV planes (before the long encode), so the
        frame is unusable afterwards."""
        encoder = _encoder(self.quality, self.effort)
        if encoder is None or self.pixels is None:
            return self._with_libvips()
        lib, config, picture, writer = encoder
        picture.width, picture.height = self.width, self.height
        try:
            source = (ctypes.c_char * self.pixels.nbytes).from_buffer(self.pixels)
            imported = lib.WebPPictureImportRGB(ctypes.byref(picture), source, self.width * 3)
            del source
            if not imported:  # out of memory for the planes
                return self._with_libvips()
            self.pixels.release()
            self.pixels = None  # libvips' buffer is freed here: 9 MB for 2048x1536
            if not lib.WebPEncode(config, ctypes.byref(picture)):
                code = picture.error_code
                if code in _ENCODER_REFUSALS:
                    raise InvalidOptionError(
                        f"the webp encoder cannot write this {self.width}x{self.height} image"
                        f" ({_ENCODER_REFUSALS[code]}); ask for a lower quality or max_side"
                    )
                raise MemoryError(f"libwebp could not encode ({code})")
            simple = ctypes.string_at(writer.mem, writer.size)
        finally:
            lib.WebPPictureFree(ctypes.byref(picture))
            lib.WebPMemoryWriterClear(ctypes.byref(writer))
        return with_metadata(simple, self.width, self.height, self.icc, self.exif, self.xmp)

    def _with_libvips(self) -> bytes:
        """libvips' saver, same settings (no libwebp of our own, or it ran out of memory for the planes)."""
        assert self.pixels is not None
        image = pyvips.Image.new_from_memory(self.pixels, self.width, self.height, 3, "uchar")
        for field, blob in (("icc-profile-data", self.icc), ("exif-data", self.exif), ("xmp-data", self.xmp)):
            if blob:
                image.set_type(pyvips.GValue.blob_type, field, blob)
        return image.webpsave_buffer(Q=self.quality, effort=self.effort)


def takes(image: pyvips.Image) -> bool:
    """Whether libwebp here writes `image`: one 8-bit sRGB frame without alpha (the rest is libvips' saver's)."""
    single = "page-height" not in image.get_fields() or image.get("page-height") == image.height
    rgb = image.format == "uchar" and image.bands == 3 and image.interpretation == "srgb"
    return single and rgb and available()


def frame(image: pyvips.Image, keep: int, quality: int, effort: int) -> WebpFrame | None:
    """The pixels of a prepared, upright libvips image computed into memory, for a lossy WebP; None where libvips'
    saver is to write it (`takes`). Raises `pyvips.Error` when the pixels fail to decode."""
    if not takes(image):
        return None
    fields = image.get_fields()

    def blob(field: str, flag: int) -> bytes | None:
        return image.get(field) if keep & flag and field in fields else None

    exif = blob("exif-data", KEEP_EXIF)
    return WebpFrame(
        memoryview(image.write_to_memory()), image.width, image.height, quality, effort,
        blob("icc-profile-data", KEEP_ICC), exif_with_size(exif, image.width, image.height) if exif else None,
        blob("xmp-data", KEEP_XMP),
    )  # fmt: skip
