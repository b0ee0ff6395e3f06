"""The normalised scale every quality metric is computed at.

Why a fixed scale: a 12-MP phone photo and its 0.3-MP thumbnail look equally sharp, noisy or blocky on a
screen, but pixel-level statistics (Laplacian variance, noise sigma, edge width) differ by the scale
factor between them. Shrinking every photo so that its longer side is `WORKING_MAX_SIDE` px first makes
the metrics describe the photo as a viewer sees it at a normal display size, makes thresholds portable
across cameras, and bounds the cost (~0.2 MP) whatever was uploaded. Area interpolation (pixel
averaging) is used because it is the physically right low-pass for shrinking: no aliasing, no ringing.

Photos already smaller than the working size are *not* enlarged: upsampling would invent blur and
tag every thumbnail blurry. Their small size is reported by the resolution metrics instead.
Resolution and aspect ratio come from the original size, passed alongside.
"""

import cv2
import numpy as np

WORKING_MAX_SIDE = 512


def working_size(width: int, height: int, max_side: int = WORKING_MAX_SIDE) -> tuple[int, int]:
    """(width, height) of the working image for an original of `width` x `height`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image has an empty size {width}x{height}")
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def working_image(rgb: np.ndarray, max_side: int = WORKING_MAX_SIDE) -> np.ndarray:
    """HxWx3 uint8 RGB (or HxW gray, promoted to RGB) -> uint8 RGB whose longer side is at most `max_side`."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    rgb = rgb[:, :, :3]
    height, width = rgb.shape[:2]
    size = working_size(width, height, max_side)
    if size == (width, height):
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def native_crop(rgb_or_gray: np.ndarray, size: int = 256) -> np.ndarray:
    """Centre crop (at most `size` x `size`) of the full-resolution decode, as HxWx3 uint8 RGB, for the
    pixel-level metrics (noise, impulses, JPEG blockiness).

    Pixel noise and JPEG's 8x8 block grid only exist at the resolution the file was stored at; they are averaged
    away by the working-image resize and by a reduced-scale JPEG draft decode (which must not be used here; the
    server takes the same crop from a partial decode instead: `pipelines.native_crop`).
    """
    rgb = rgb_or_gray if rgb_or_gray.ndim == 3 else np.repeat(rgb_or_gray[:, :, None], 3, axis=2)
    height, width = rgb.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return np.ascontiguousarray(rgb[top : top + size, left : left + size, :3])
