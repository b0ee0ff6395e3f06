"""Real-photo fixtures shared by the collection tests: which exif-samples get planted near-duplicate copies, how the
copies are made, and the groups the samples form among themselves (found by looking at the images)."""

import io

from PIL import Image, ImageOps

# Planted: copies of these (upright, without EXIF) must join their originals.
PLANTED_ORIGINALS = [
    "jpg/Canon_40D.jpg",  # 100 px thumbnail-sized
    "jpg/Panasonic_DMC-FZ30.jpg",
    "jpg/Reconyx_HC500_Hyperfire.jpg",
    "jpg/exif-org/fujifilm-mx1700.jpg",
    "jpg/gps/DSCN0010.jpg",
    "jpg/hdr/iphone_hdr_YES.jpg",  # also joins the expected iPhone HDR group
    "jpg/mobile/HMD_Nokia_8.3_5G.jpg",  # 4608x1976 panorama-ish
    "jpg/orientation/portrait_6.jpg",  # stored rotated, EXIF orientation 6
    "jpg/tests/30-type_error.jpg",
    "jpg/xmp/BlueSquare.jpg",
]

# Groups among the sample files themselves, after looking at them: each is one picture in several variants.
# Not grouped, rightly: Canon_40D vs Canon_40D_photoshop_import (an iguana and a lizard, distance 26), and
# hdr/canon_hdr_NO vs canon_hdr_YES (the same street lamp shot twice, reframed: distance 16).
EXPECTED_SAMPLE_GROUPS = [
    [f"jpg/orientation/landscape_{i}.jpg" for i in range(1, 9)],  # one scene in the 8 EXIF orientations
    [f"jpg/orientation/portrait_{i}.jpg" for i in range(1, 9)],
    ["jpg/hdr/iphone_hdr_NO.jpg", "jpg/hdr/iphone_hdr_YES.jpg"],  # one shot, HDR off/on (distance 4)
]

VARIANTS = ("half_q75.jpg", "png.png", "640_q60.jpg")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def plant_copies(original: bytes) -> dict[str, bytes]:
    with Image.open(io.BytesIO(original)) as opened:
        upright = ImageOps.exif_transpose(opened).convert("RGB")
    half = upright.resize((max(1, upright.width // 2), max(1, upright.height // 2)), Image.Resampling.LANCZOS)
    scale = 640 / max(upright.size)
    small_size = (max(1, round(upright.width * scale)), max(1, round(upright.height * scale)))
    small = upright.resize(small_size, Image.Resampling.LANCZOS)
    return {
        VARIANTS[0]: encode(half, "JPEG", quality=75),
        VARIANTS[1]: encode(upright, "PNG", compress_level=1),
        VARIANTS[2]: encode(small, "JPEG", quality=60),
    }
