"""Load, resize and encode with libvips (pyvips): shrink-on-load, streaming, one pass.

`load_vips` validates the file with the decode stage's limits (`pipelines.decode.open_validated`: bytes, pixels,
progressive scans) before libvips sees it, then builds one `thumbnail` pipeline: reduced-scale JPEG/WebP decode,
EXIF orientation applied (the tag is removed), colour conversion to sRGB (CMYK included) unless `icc=keep`.
Nothing is computed until the encoder pulls the pixels, so a 12 MP JPEG to a 2048-px WebP never holds the full-size
image in memory.
"""

import io
import os
import re
from dataclasses import dataclass

import numpy as np
import pyvips
from PIL import Image, ImageCms

from pipelines.convert import jpeg_fast, libwebp
from pipelines.convert.deep_samples import deep_samples, scaled_to_eight_bit
from pipelines.convert.formats import FORMATS, MAX_OUTPUT_SIDE, SLOW_ENCODERS
from pipelines.convert.metadata_edit import anonymize_vips, anonymized_exif, exif_block, exif_of_block, keep_flags
from pipelines.convert.options import DEFAULT_EFFORT, DEFAULT_QUALITY, ConvertOptions
from pipelines.convert.pillow_input import PILLOW_INPUTS, load_with_pillow
from pipelines.convert.truncation import gif_is_complete, loader_options
from pipelines.errors import ImageTooLargeError, InvalidImageError, InvalidOptionError
from pipelines.frames import MAX_COUNTED_PAGES, frame_count
from pipelines.image_header import exif_orientation, open_validated, register_heif, upright_size
from pipelines.jpeg_markers import check_jpeg_data
from pipelines.limits import DecodeLimits
from pipelines.orientation import SWAPS_AXES

VIPS_THREADS_ENV = "IMGSERVE_VIPS_THREADS"


def vips_threads() -> int:
    """libvips threads per image (IMGSERVE_VIPS_THREADS, default 1; 0: libvips' own default, one per core): requests
    and bulk files already run in parallel on the stages' threads; one libvips thread each was 5-8 % faster at 4
    concurrent conversions on 2 cores than two. ValueError naming the variable for anything but a whole number 0 or
    more: `imgserve serve` refuses to start with it, `imgserve convert`/`enhance` refuse to run (this module's import
    then uses 1 rather than fail: an import error was a traceback before either could say so)."""
    raw = os.environ.get(VIPS_THREADS_ENV, "1")
    if not raw.strip().isdecimal():
        raise ValueError(f"{VIPS_THREADS_ENV}={raw!r}: expected a whole number of threads, 0 or more (0: one per core)")
    return int(raw)


pyvips.cache_set_max(0)  # no operation cache: a server converts each input once, cached buffers only cost memory


def _threads_at_import() -> int:
    try:
        return vips_threads()
    except ValueError:
        return 1  # refused by whoever runs: serving.start_checks, serving.cli_operations


pyvips.concurrency_set(_threads_at_import())
UNBOUNDED = 10_000_000  # a thumbnail box that never shrinks
ANIMATED_INPUTS = frozenset({"GIF", "WEBP"})


@dataclass(frozen=True)
class SourceInfo:
    format: str  # Pillow's name of the input format
    width: int  # upright size of the input
    height: int
    frames: int


def target_box(width: int, height: int, options: ConvertOptions) -> tuple[int, int]:
    """The box the output must fit in (aspect ratio kept): max_side, width and/or height; unbounded otherwise."""
    box_w = min(v for v in (options.max_side, options.width, UNBOUNDED) if v is not None)
    box_h = min(v for v in (options.max_side, options.height, UNBOUNDED) if v is not None)
    if options.width is not None and options.height is None and options.max_side is None:
        box_h = UNBOUNDED
    return box_w, box_h


def output_size(width: int, height: int, box_w: int, box_h: int, upscale: bool) -> tuple[int, int]:
    """The size `thumbnail` gives an upright width x height image fitted into the box (aspect kept)."""
    scale = min(box_w / width, box_h / height)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def needs_srgb_transform(header: Image.Image) -> bool:
    """Whether the pixels must go through a colour transform to become sRGB: an embedded profile that is not sRGB.
    (No profile means sRGB already; CMYK is converted by libvips' thumbnail anyway. A transform costs as much as
    the whole resize: libvips applies it to every image given `export_profile`, so it is asked for only here.)"""
    icc = header.info.get("icc_profile")
    if not icc:
        return False
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:  # noqa: BLE001 - an unreadable profile: let libvips decide what it can use
        return True
    return "srgb" not in description.lower()


def load_vips(
    data: bytes, options: ConvertOptions, limits: DecodeLimits
) -> tuple[pyvips.Image, SourceInfo, ConvertOptions]:
    """A lazy libvips image of the input, upright, resized to the options' box; the options with the output
    format filled in (the input's, when not given). Raises `ImageInputError`s."""
    header = open_validated(data, limits)
    options = options.resolved(header.format or "")
    transform = options.icc == "srgb" and needs_srgb_transform(header)
    orientation = exif_orientation(header)
    width, height = upright_size(header, orientation)
    # frame_count stops at MAX_COUNTED_PAGES and says so: more is refused when the animation is to be kept
    frames, too_many = frame_count(header, data) if header.format in ANIMATED_INPUTS else (1, None)
    info = SourceInfo(header.format or "", width, height, frames)
    fmt = FORMATS[options.format or "jpeg"]
    pages = info.frames if (options.animated and fmt.animation and info.frames > 1) else 1
    if pages > 1 and too_many:
        raise ImageTooLargeError(
            f"animation of more than {MAX_COUNTED_PAGES} frames (ask for animated=false to convert the first frame)"
        )
    if pages > 1 and width * height * pages > limits.max_full_decode_pixels:
        raise ImageTooLargeError(
            f"animation of {pages} frames of {width}x{height}: {width * height * pages} pixels in all; the limit is"
            f" {limits.max_full_decode_pixels} (ask for animated=false to convert the first frame)"
        )
    box_w, box_h = target_box(width, height, options)
    # upscale without max_side, width or height is no resize (not a fit to the unbounded box)
    upscale = options.upscale and min(box_w, box_h) < UNBOUNDED
    out_w, out_h = output_size(width, height, box_w, box_h, upscale)
    side_limit = MAX_OUTPUT_SIDE.get(fmt.name)
    if side_limit is not None and max(out_w, out_h) > side_limit:
        raise InvalidOptionError(
            f"{fmt.name} images are at most {side_limit} pixels a side; the output would be {out_w}x{out_h} "
            "(ask for max_side)"
        )
    if out_w * out_h * pages > limits.max_full_decode_pixels:
        raise ImageTooLargeError(
            f"the output would be {out_w}x{out_h}"
            + (f" x {pages} frames" if pages > 1 else "")
            + f" = {out_w * out_h * pages} pixels; the limit is {limits.max_full_decode_pixels} (ask for max_side)"
        )
    if fmt.name in SLOW_ENCODERS and out_w * out_h * pages > limits.max_slow_encode_pixels:
        raise ImageTooLargeError(
            f"the {fmt.name} output would be {out_w}x{out_h}"
            + (f" x {pages} frames" if pages > 1 else "")
            + f" = {out_w * out_h * pages} pixels; {', '.join(sorted(SLOW_ENCODERS))} outputs (slow encoders) are"
            f" limited to {limits.max_slow_encode_pixels} (ask for max_side, or another format)"
        )
    if jpeg_fast.applies(header, transform) and jpeg_fast.decoded_pixels(header, (out_w, out_h), orientation) <= (
        limits.max_full_decode_pixels
    ):
        fast = jpeg_fast.load_jpeg(data, header, orientation, (out_w, out_h), budgeted=_lossy_webp(options))
        if fast is not None:
            return fast, info, options
        # a harmless libjpeg warning (stray bytes between segments): libvips decodes it
    elif header.format in ("JPEG", "MPO"):  # libvips' fail_on=truncated lets lost data through: the decode stage's rule
        check_jpeg_data(data, header.mode)
    if header.format in PILLOW_INPUTS:
        return load_with_pillow(header, orientation, (out_w, out_h)), info, options
    deep = deep_samples(header)
    header.close()
    if pages > 1 and info.format == "GIF" and not gif_is_complete(data):
        raise InvalidImageError(f"GIF animation is truncated: it ends inside its blocks, after {pages} frames began")
    # The loader's options go in option_string (thumbnail's own fail_on does not reach the loader)
    loader = loader_options(info.format, pages)
    # libvips turns an animation's whole strip of frames, not each frame: frames are turned one by one below
    turn_pages = pages > 1 and orientation != 1
    if turn_pages and orientation in SWAPS_AXES:
        box_w, box_h = box_h, box_w  # the box of the stored (sideways) frames
    kwargs: dict[str, object] = {
        "height": box_h,
        "size": "both" if upscale else "down",
        "option_string": loader,
        "no_rotate": turn_pages,
    }
    if transform:
        kwargs["export_profile"] = "srgb"
    try:
        if deep:  # scaled to 8 bits first (the whole image: its largest value decides the scale), then resized
            source = scaled_to_eight_bit(pyvips.Image.new_from_buffer(data, loader, access="random"))
            image = source.thumbnail_image(box_w, **{k: v for k, v in kwargs.items() if k != "option_string"})
        else:
            image = pyvips.Image.thumbnail_buffer(data, box_w, **kwargs)
        if turn_pages:
            image = _upright_pages(image, orientation)
    except pyvips.Error as exc:
        raise InvalidImageError(f"image could not be decoded: {vips_message(exc)}") from None
    return image, info, options


# orientation -> the libvips operations that turn one stored frame upright (as `UPRIGHT_TRANSPOSE` does in Pillow)
_UPRIGHT_OPS: dict[int, tuple[str, ...]] = {
    2: ("fliphor",), 3: ("d180",), 4: ("flipver",), 5: ("d90", "fliphor"),
    6: ("d90",), 7: ("d270", "fliphor"), 8: ("d270",),
}  # fmt: skip


def _upright_pages(image: pyvips.Image, orientation: int) -> pyvips.Image:
    """An animation (frames stacked top to bottom, `page-height` each) with every frame turned upright."""
    page_height = image.get("page-height") if "page-height" in image.get_fields() else image.height
    frames = []
    for top in range(0, image.height - page_height + 1, page_height):
        frame = image.crop(0, top, image.width, page_height)
        for op in _UPRIGHT_OPS[orientation]:
            frame = getattr(frame, op)() if op.startswith("flip") else frame.rot(op)
        frames.append(frame)
    upright = pyvips.Image.arrayjoin(frames, across=1).copy()
    upright.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    return upright


# lines libvips adds on top of the cause when a saver or an operation fails because its input did not decode
_WRAPPER_LINE = re.compile(r"unable to write to target|^unable to call ")


def vips_message(exc: pyvips.Error) -> str:
    """The informative line of a libvips error: the first that is not a wrapper of the one before it (a truncated PNG
    written as PNG said only "vips2png: unable to write to target target")."""
    lines = [line.strip() for line in (exc.detail or str(exc)).strip().splitlines() if line.strip()]
    causes = [line for line in lines if not _WRAPPER_LINE.search(line)]
    # a bare wrapper ("unable to call thumbnail_buffer") names libvips' internals, not the file's fault
    return causes[0] if causes else "its data is invalid or incomplete"


def _eight_bit(image: pyvips.Image) -> pyvips.Image:
    if image.format in ("uchar", "char"):
        return image
    grey = image.interpretation in ("b-w", "grey16")
    return image.colourspace("b-w" if grey else "srgb").cast("uchar")


def prepare_for(image: pyvips.Image, options: ConvertOptions) -> pyvips.Image:
    """Bit depth, alpha and metadata as the output format and options need them."""
    fmt = FORMATS[options.format or "jpeg"]
    if not fmt.high_bit_depth or image.format not in ("uchar", "ushort"):
        image = _eight_bit(image)
    if image.hasalpha() and not fmt.alpha:
        image = image.flatten(background=list(options.background)).cast("uchar")
    if options.anonymize and options.metadata == "keep":
        image = anonymize_vips(image)
    return image


def _lossy_webp(options: ConvertOptions) -> bool:
    """The output libwebp writes from a frame in memory (`direct_webp`), whose decode the budget bounds."""
    return options.format == "webp" and not options.lossless


def _quality_effort(name: str, options: ConvertOptions) -> tuple[int, int | None]:
    """The encoder's quality and effort for output format `name`: the options', else the format's defaults."""
    effort = options.effort if options.effort is not None else DEFAULT_EFFORT.get(name)
    return options.quality or DEFAULT_QUALITY.get(name, 85), effort


def direct_webp(image: pyvips.Image, options: ConvertOptions) -> libwebp.WebpFrame | None:
    """A lossy WebP's frame computed into memory for libwebp (`pipelines.convert.libwebp`: 11 MB less and ~25 %
    faster than libvips' saver); None where libvips' saver is to write it. The caller can drop `image` (and the
    decoded photo its pipeline holds) before encoding. Raises `InvalidImageError` when the pixels fail to decode."""
    if not (_lossy_webp(options) and libwebp.takes(image)):  # decided before the metadata is made upright
        return None
    quality, effort = _quality_effort("webp", options)
    try:
        keep = keep_flags(options.metadata, options.icc)
        return libwebp.frame(_upright_metadata(image), keep, quality, effort or 0)
    except pyvips.Error as exc:
        raise InvalidImageError(f"image could not be decoded: {vips_message(exc)}") from None


def encode_vips(image: pyvips.Image, options: ConvertOptions) -> bytes:
    """Encode a prepared image in `options.format`. Raises `InvalidImageError` when the pixels fail to decode."""
    frame = direct_webp(image, options)
    if frame is not None:
        return frame.encode()
    name = options.format or "jpeg"
    image = _upright_metadata(image)
    keep = keep_flags(options.metadata, options.icc)
    quality, effort = _quality_effort(name, options)
    try:
        if FORMATS[name].engine == "pillow":
            return _encode_pillow(image, options, quality)
        if name == "jpeg":
            return image.jpegsave_buffer(
                Q=quality, interlace=options.progressive, optimize_coding=options.optimize,
                subsample_mode=options.subsampling, keep=keep,
            )  # fmt: skip
        if name == "png":
            compression = int(options.compression) if options.compression is not None else 6
            return image.pngsave_buffer(compression=compression, interlace=options.progressive, keep=keep)
        if name == "webp":
            if options.lossless:
                return image.webpsave_buffer(lossless=True, effort=effort, keep=keep)
            return image.webpsave_buffer(Q=quality, effort=effort, keep=keep)
        if name == "tiff":
            compression = options.compression or "deflate"
            if compression == "webp" and image.bands < 3:  # WebP in TIFF holds RGB(A) only
                image = image.colourspace("srgb")
            return image.tiffsave_buffer(compression=compression, Q=quality, keep=keep)
        if name == "gif":
            return image.gifsave_buffer(effort=effort, keep=keep)
        if name == "avif":
            if options.lossless:
                return image.heifsave_buffer(compression="av1", lossless=True, effort=effort, keep=keep)
            return image.heifsave_buffer(
                compression="av1", Q=quality, effort=effort, subsample_mode=options.subsampling, keep=keep
            )
    except pyvips.Error as exc:
        raise InvalidImageError(f"image could not be decoded: {vips_message(exc)}") from None
    raise AssertionError(f"no encoder for {name}")


def _upright_metadata(image: pyvips.Image) -> pyvips.Image:
    """`image` with orientation 1 in its `orientation` field and EXIF block. Its pixels are upright (the load turns
    them), but an EXIF block set on it again (enhancement copies the input's metadata onto its new pixels,
    anonymisation writes an edited block) is parsed again by libvips, orientation included, and the saver would write
    that back: viewers then turned the image a second time."""
    fields = image.get_fields()
    blob = image.get("exif-data") if "exif-data" in fields else None
    upright = upright_exif(blob)
    if upright is blob and ("orientation" not in fields or image.get("orientation") == 1):
        return image
    image = image.copy()
    if blob is not None and upright is None:  # unreadable: not copied (as the Pillow-written formats do)
        image.remove("exif-data")
    elif upright is not blob:
        image.set_type(pyvips.GValue.blob_type, "exif-data", upright)
    image.set_type(pyvips.GValue.gint_type, "orientation", 1)  # after the block: setting it re-reads the block
    return image


def colour_array(image: pyvips.Image) -> np.ndarray:
    """HxWx3 (RGB) or HxWx4 (RGBA) uint8 pixels of a prepared libvips image: grey (+ alpha) becomes RGB(A)."""
    # reshaped: numpy() drops a band axis of 1, and a 1x1 one-band image comes back as a 0-d array
    array = np.asarray(image.numpy()).reshape(image.height, image.width, image.bands)
    if array.shape[2] in (1, 2):
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    return np.ascontiguousarray(array)


def to_pillow(image: pyvips.Image) -> Image.Image:
    """An 8-bit RGB or RGBA Pillow image of a prepared libvips image (BMP and HEIF writers want colour)."""
    array = colour_array(image)
    return Image.fromarray(array, "RGBA" if array.shape[2] == 4 else "RGB")


def upright_exif(blob: bytes | None) -> bytes | None:
    """The EXIF block with orientation 1: the pixels are upright already, and HEIF writers turn the tag into a
    rotation of their own (libvips does this through its `orientation` field; Pillow's writers need the block).
    Returned as libvips keeps its blobs (`exif_block`: one `Exif\\0\\0` header): libwebp's writer copies it as it is."""
    if not blob:
        return blob
    try:
        exif = exif_of_block(blob)
        if exif.get(0x0112, 1) == 1:
            return blob
        exif[0x0112] = 1
        return exif_block(exif)
    except Exception:  # noqa: BLE001 - an unreadable block is not copied
        return None


def _rgb_profile(data: bytes) -> bytes | None:
    """An ICC profile fit for RGB pixels, or None: a CMYK or grey profile (the pixels became RGB) or one that does
    not parse is not written into a HEIF, as libvips' savers drop them."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - unreadable
        return None
    return data if profile.profile.xcolor_space.strip() == "RGB" else None


def _encode_pillow(image: pyvips.Image, options: ConvertOptions, quality: int) -> bytes:
    pil = to_pillow(image)
    out = io.BytesIO()
    fields = image.get_fields()
    exif = image.get("exif-data") if options.metadata == "keep" and "exif-data" in fields else None
    if exif is not None:
        exif = upright_exif(anonymized_exif(exif) if options.anonymize else exif)
    params: dict[str, object] = {"exif": exif} if exif else {}
    if options.format == "heif":
        register_heif()  # Pillow's HEIF writer is pillow-heif's; a JPEG input never loaded the plugin
        params["quality"] = -1 if options.lossless else quality
        if options.lossless:  # RGB as it is: full-resolution chroma and the identity matrix (no YCbCr rounding)
            params.update(chroma=444, matrix_coefficients=0)
        if options.icc == "keep" and "icc-profile-data" in fields:
            profile = _rgb_profile(image.get("icc-profile-data"))
            if profile is not None:
                params["icc_profile"] = profile
        try:
            pil.save(out, "HEIF", **params)
        except RuntimeError as exc:  # x265 refuses sizes beyond its levels' limits: 8000x2, 16x16000 (not 4000x4)
            raise InvalidOptionError(
                f"the heif encoder cannot write a {pil.width}x{pil.height} image ({exc}); ask for max_side, or another"
                " format"
            ) from None
    else:
        pil.save(out, "BMP")
    return out.getvalue()
