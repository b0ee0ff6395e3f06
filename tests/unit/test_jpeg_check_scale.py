"""`check_jpeg_data` (the damaged-JPEG check in front of OpenCV and libvips) decodes at 1/8 scale, as it says: it
decoded at full size (simplejpeg ignores `min_factor` without a minimum size), a second full-size buffer per request
(59 MP IPTC JPEG converted with max_side=1024: +14 MB -> +171 MB peak RSS, 81 -> 330-680 ms). Still refuses damage."""

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidImageError
from pipelines.jpeg_markers import check_jpeg_data

PHOTO = Path("/work/shared/data/imagenet-samples/n01440764_tench.JPEG")


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    if not PHOTO.is_file():
        pytest.skip("needs ../shared/data")
    image = Image.open(PHOTO).convert("RGB").resize((2400, 1800))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_check_decodes_at_one_eighth(large_jpeg: bytes, mode: str) -> None:
    data = large_jpeg
    if mode == "CMYK":
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("CMYK").save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
    tracemalloc.start()
    try:
        check_jpeg_data(data, mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_size = 2400 * 1800 * (4 if mode == "CMYK" else 3)
    assert peak < full_size / 16, f"peak {peak} bytes: a full-size decode is {full_size}"


def _with_frame_size(data: bytes, width: int, height: int) -> bytes:
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def test_check_at_one_eighth_still_refuses_damage(large_jpeg: bytes) -> None:
    n = len(large_jpeg)
    damaged = {
        "cut, end marker appended": large_jpeg[: n // 2] + b"\xff\xd9",
        "middle third zeroed": large_jpeg[: n // 3] + bytes(n // 3) + large_jpeg[2 * n // 3 :],
        "frame claims more rows": _with_frame_size(large_jpeg, 2400, 4000),
    }
    for name, data in damaged.items():
        with pytest.raises(InvalidImageError):
            check_jpeg_data(data, "RGB")
        assert name
    check_jpeg_data(large_jpeg, "RGB")  # intact: no error
    assert np.asarray(Image.open(io.BytesIO(large_jpeg))).shape == (1800, 2400, 3)
