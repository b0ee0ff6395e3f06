"""`ImageInfo` from an opened (not decoded) Pillow image: size, mode, depth, frames, alpha, ICC, orientation."""

import io

from PIL import ExifTags, Image, ImageCms

from pipelines.frames import frame_count
from pipelines.image_header import stored_size, upright_size
from pipelines.metadata.result import ImageInfo
from pipelines.orientation import SWAPS_AXES

ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF"})
_MODE_BITS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_MIME_OVERRIDES = {"MPO": "image/jpeg"}  # an MPO is a JPEG with extra pictures appended; browsers know image/jpeg


def mime_type(image: Image.Image) -> str | None:
    """MIME type of the container (pillow-heif distinguishes image/heic from image/heif)."""
    if image.format in _MIME_OVERRIDES:
        return _MIME_OVERRIDES[image.format]
    return image.get_format_mimetype()


def is_heif(image: Image.Image) -> bool:
    """HEIF via pillow-heif: libheif already applies the container's rotation and mirroring.

    AVIF is not: Pillow's own AVIF plugin turns irot/imir into an EXIF orientation and leaves pixels as coded.
    """
    return image.format == "HEIF"


def orientation(image: Image.Image) -> tuple[int | None, str | None]:
    """(EXIF orientation 1..8 or None when not declared, error). Pillow falls back to XMP tiff:Orientation."""
    # pillow-heif rewrites the EXIF copy to 1 (libheif rotates already) and keeps the original here.
    value = image.info.get("original_orientation") if is_heif(image) else None
    if value is None:
        try:
            value = image.getexif().get(ExifTags.Base.Orientation)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block leaves the orientation unknown
            return None, f"image.orientation: unreadable EXIF: {type(exc).__name__}: {exc}"
    if value is None:
        return None, None
    if isinstance(value, int) and 1 <= value <= 8:
        return value, None
    return None, f"image.orientation: invalid value {value!r}"


def _heif_quarter_turn(image: Image.Image) -> bool | None:
    """Whether libheif rotated the coded image by 90/270 degrees (irot); None when pillow-heif does not say."""
    try:
        heif_file = image._heif_file  # type: ignore[attr-defined]
        transformations = heif_file[image.tell()]._c_image.transformations
    except (AttributeError, IndexError, TypeError):
        return None
    return any(kind == "irot" and angle in (90, 270) for kind, angle, *_ in transformations)


def bit_depth(image: Image.Image, data: bytes) -> int | None:
    """Bits per sample as stored: PNG IHDR, TIFF BitsPerSample, HEIF bitstream, else from the decoded mode."""
    if image.format == "PNG" and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)
        if isinstance(bits, tuple) and bits:
            return max(int(b) for b in bits)
        if isinstance(bits, int):
            return bits
    if is_heif(image) and isinstance(image.info.get("bit_depth"), int):
        return image.info["bit_depth"]
    if image.mode in _MODE_BITS:
        return _MODE_BITS[image.mode]
    return 8 if image.mode in Image.MODES else None


def icc_description(image: Image.Image) -> str | None:
    """The ICC profile's description tag, if a profile is embedded."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    return description.strip() or None


def read_image_info(image: Image.Image, data: bytes, errors: list[str]) -> ImageInfo:
    """Header-level facts about the main image; problems go to `errors`, never raise for one field."""
    rotation, error = orientation(image)
    if error:
        errors.append(error)
    decoded_w, decoded_h = image.size
    if is_heif(image):
        quarter = _heif_quarter_turn(image)
        if quarter is None:
            quarter = rotation in SWAPS_AXES
        (width, height), upright = ((decoded_h, decoded_w) if quarter else image.size), image.size
    else:  # Pillow reports an oriented TIFF's size upright already (`turned_by_pillow`)
        (width, height), upright = stored_size(image), upright_size(image, rotation or 1)
    try:
        frames, error = frame_count(image, data)
        if error:
            errors.append(error)
    except Exception as exc:  # noqa: BLE001 - a broken frame chain must not lose the rest
        errors.append(f"image.frames: {type(exc).__name__}: {exc}")
        frames = 1
    try:
        icc = icc_description(image)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"image.icc_profile: unreadable profile: {exc}")
        icc = None
    return ImageInfo(
        width=width,
        height=height,
        upright_width=upright[0],
        upright_height=upright[1],
        mode=image.mode,
        bands=len(image.getbands()),
        bit_depth=bit_depth(image, data),
        frames=frames,
        animated=frames > 1 and image.format in ANIMATED_FORMATS,
        has_alpha="A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info,
        icc_profile=icc,
        orientation=rotation,
    )
