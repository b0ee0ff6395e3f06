"""64-bit DCT perceptual hash (pHash), the algorithm of `imagehash.phash` in a few lines of numpy.

Greyscale, resize to 32x32 (Lanczos), 2-D DCT-II, keep the 8x8 lowest frequencies, one bit per coefficient:
above their median. Near-duplicates (re-encoded, resized, lightly edited) differ in a few bits; compare
hashes with `hamming_distance`. The DCT is unnormalised like scipy's; scaling does not change any bit.
"""

from functools import lru_cache

import numpy as np
from PIL import Image

HASH_SIZE = 8
SAMPLE_SIZE = 32


@lru_cache(maxsize=1)
def _dct_matrix(n: int = SAMPLE_SIZE) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def phash_bits(image: Image.Image) -> np.ndarray:
    """The 8x8 boolean hash matrix of `image`."""
    grey = image.convert("L").resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    dct = _dct_matrix()
    coefficients = (dct @ pixels @ dct.T)[:HASH_SIZE, :HASH_SIZE]
    return coefficients > np.median(coefficients)


def phash(image: Image.Image) -> str:
    """16 hex digits, row-major bits, the same string `str(imagehash.phash(image))` gives."""
    value = 0
    for bit in phash_bits(image).flatten():
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming_distance(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
