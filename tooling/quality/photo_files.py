"""Photos on disk -> what `compute_metrics` needs, for batch tools (calibration, evaluation, tests).

The online server decodes through `pipelines.decode`; this is the same idea for local files: upright
RGB (EXIF orientation applied), optionally a reduced-scale JPEG draft decode for speed, the working
image, the original size and a full-resolution crop that still carries the noise and the JPEG block grid.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipelines.quality.working_image import WORKING_MAX_SIDE, native_crop, working_image
from serving.image_files import IMAGE_SUFFIXES  # what the server decodes: a phone's .HEIC folder was skipped


@dataclass(frozen=True)
class LoadedPhoto:
    """A photo prepared for `compute_metrics`."""

    working: np.ndarray  # HxWx3 uint8, longer side <= working max side
    original_size: tuple[int, int]  # (width, height) upright, of the file as stored
    native_rgb: np.ndarray | None  # full-resolution crop (noise, JPEG grid); None after a reduced-scale decode


def load_photo(path: str | Path, draft_side: int | None = None, max_side: int = WORKING_MAX_SIDE) -> LoadedPhoto:
    """Decode `path`; with `draft_side`, JPEGs decode at a reduced DCT scale of at least that size (faster)."""
    with Image.open(path) as image:
        stored_w, stored_h = image.size
        if draft_side is not None and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (draft_side, draft_side))
        scale = max(1, round(stored_w / image.size[0]))
        orientation = image.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(image).convert("RGB")
    rgb = np.asarray(upright)
    width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)
    native = native_crop(rgb) if scale == 1 else None
    return LoadedPhoto(working_image(rgb, max_side), (width, height), native)


def list_photos(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
