"""Where the shared real data and third-party weights live, and skip helpers when they are absent."""

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
DATA = SHARED / "data"
IMAGENET_SAMPLES = DATA / "imagenet-samples"
EXIF_SAMPLES = DATA / "exif-samples"
MOBILENET_DIR = SHARED / "models" / "mobilenet_v2_imagenet"


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason when a shared folder/file is absent (e.g. a user's fresh clone)."""
    if not path.exists():
        pytest.skip(f"{path} is absent: real photos and third-party weights are read from ../shared, not the repo")
    return path
