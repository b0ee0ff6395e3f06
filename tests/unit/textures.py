"""Synthetic test images shared by the quality tests."""

import cv2
import numpy as np


def dead_leaves_texture(size: tuple[int, int] = (384, 512), seed: int = 0) -> np.ndarray:
    """A 'dead leaves'-like RGB texture: random discs at all scales, like natural image statistics."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(1500):
        r = int(max(2, min(h, w) / 4 * rng.random() ** 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        cv2.circle(img, centre, r, colour, -1, lineType=cv2.LINE_AA)
    return img
