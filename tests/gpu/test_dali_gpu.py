"""DaliDecoder with device="gpu" (nvJPEG via the ``mixed`` backend) against the Pillow reference.

Skips without CUDA or without DALI. The GPU decoder's JPEG chroma upsampling and IDCT differ from
libjpeg-turbo, so the per-pixel bound is looser than the CPU test's; correlation stays above 0.99.
"""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.dali_decode import dali_available
from pipelines.decode import DecodedImage
from pipelines.errors import InvalidImageError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec, reference_preprocess

pytestmark = pytest.mark.gpu

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPEC = PreprocessSpec(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _cuda_reason() -> str | None:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return f"torch is not importable ({type(exc).__name__}), cannot check for CUDA"
    return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"


for _reason in (_cuda_reason(), dali_available(), None if DATA.is_dir() else f"no shared data at {DATA}"):
    if _reason is not None:
        pytest.skip(_reason, allow_module_level=True)

from pipelines.dali_decode import DaliDecoder  # noqa: E402


def test_gpu_matches_pillow_reference() -> None:
    files = sorted((DATA / "imagenet-samples").glob("*.JPEG"))[::60][:16]
    blobs = [f.read_bytes() for f in files]
    decoder = DaliDecoder(SPEC, DecodeLimits(), batch_size=8, device="gpu", num_threads=2)
    results = decoder.decode_batch(blobs + [blobs[0][: len(blobs[0]) // 2]])
    assert isinstance(results[-1], InvalidImageError)
    levels_per_image = []
    for path, data, result in zip(files, blobs, results, strict=False):
        assert isinstance(result, DecodedImage), f"{path.name}: {result!r}"
        ref = reference_preprocess(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), SPEC)
        assert result.tensor.shape == ref.shape and result.tensor.dtype == np.float32
        levels = np.abs(result.tensor - ref) * (np.asarray(SPEC.std, np.float32)[:, None, None] / SPEC.scale)
        levels_per_image.append(float(levels.mean()))
        assert levels.mean() <= 3.0, f"{path.name}: mean diff {levels.mean():.2f} levels"
        assert np.corrcoef(result.tensor.ravel(), ref.ravel())[0, 1] > 0.99, path.name
    print(f"GPU vs Pillow mean |diff| per image (levels): max {max(levels_per_image):.3f}")
