"""The two real-photo image mixes the benchmark and the locust load test send.

- ``web``: the 1000 JPEGs of ``../shared/data/imagenet-samples`` (one per ImageNet class, typically 500x375,
  ~0.2 MP, median ~106 KB) -- what a web/mobile upload API mostly sees.
- ``camera``: every JPEG of ``min_mp`` (3) megapixels or more under ``../shared/data`` (``blur-samples/*`` and
  ``exif-samples/**``) that decodes cleanly: phone and DSLR frames of 3-12 MP, 0.2-3 MB each.

"Decodes cleanly" means Pillow decodes every pixel (EXIF orientation applied, RGB) with neither an exception
nor a warning, *and* libjpeg itself reports no corrupt data. Pillow silently pads a JPEG whose entropy-coded
data is damaged (``exif-samples/jpg/corrupted.jpg`` ends with a valid EOI marker but libjpeg warns
"premature end of data segment"), so the libjpeg check goes through OpenCV with its stderr captured.

Only Pillow, numpy and (optionally) OpenCV are imported: the locust process loads this module too.
"""

import io
import os
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

DATA_DIR = Path(os.environ.get("IMGSERVE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MIX_NAMES = ("web", "camera")
JPEG_SUFFIXES = (".jpg", ".jpeg")
CAMERA_MIN_MP = 3.0


@dataclass
class Mix:
    """A named list of real photos, their bytes loaded in memory (file order is sorted, deterministic)."""

    name: str
    paths: list[Path]
    images: list[bytes] = field(repr=False, default_factory=list)
    sizes: list[tuple[int, int]] = field(repr=False, default_factory=list)  # (width, height) as stored

    def describe(self, root: Path | None = None) -> dict:
        """JSON-able summary: count, bytes and megapixels (median and range), and the files for small mixes."""
        kb = [len(b) / 1024 for b in self.images]
        mp = [w * h / 1e6 for w, h in self.sizes]
        out = {
            "images": len(self.paths),
            "median_kb": round(statistics.median(kb), 1) if kb else None,
            "median_mp": round(statistics.median(mp), 2) if mp else None,
            "mp_range": [round(min(mp), 2), round(max(mp), 2)] if mp else None,
            "total_mb": round(sum(kb) / 1024, 1),
        }
        if len(self.paths) <= 64:
            out["files"] = [_relative(p, root) for p in self.paths]
        return out


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def megapixels(path: Path) -> float:
    """Stored width x height / 1e6 from the header only (no pixel decode); 0.0 when the header is unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a candidate
        return 0.0
    return width * height / 1e6


def _libjpeg_warnings(data: bytes) -> str | None:
    """libjpeg's own complaints about `data` (via OpenCV, stderr captured at fd level); None if clean or no cv2."""
    try:
        import cv2
        import numpy as np
    except ImportError:  # pragma: no cover - OpenCV is a core dependency of imgserve
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace").strip()
    if decoded is None:
        return text or "OpenCV could not decode it"
    return text or None


def decode_problem(data: bytes) -> str | None:
    """Why `data` does not decode cleanly as a JPEG photo, or None when it does (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in ("JPEG", "MPO"):
                    return f"not a JPEG ({image.format})"
                ImageOps.exif_transpose(image).convert("RGB").load()
    except Exception as exc:  # noqa: BLE001 - any failure or warning disqualifies the file
        return f"Pillow: {type(exc).__name__}: {exc}"
    complaint = _libjpeg_warnings(data)
    return f"libjpeg: {complaint}" if complaint else None


def web_paths(data_dir: Path = DATA_DIR) -> list[Path]:
    folder = data_dir / "imagenet-samples"
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in JPEG_SUFFIXES)


def camera_candidates(data_dir: Path = DATA_DIR) -> list[Path]:
    """Every JPEG under blur-samples/ and exif-samples/ (recursively), sorted."""
    found: list[Path] = []
    for sub in ("blur-samples", "exif-samples"):
        folder = data_dir / sub
        if folder.is_dir():
            found.extend(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in JPEG_SUFFIXES)
    return sorted(found)


def select_camera(candidates: Iterable[Path], min_mp: float = CAMERA_MIN_MP) -> tuple[list[Path], dict[str, str]]:
    """(accepted paths, {rejected path: reason}) among `candidates` of at least `min_mp` megapixels."""
    accepted: list[Path] = []
    rejected: dict[str, str] = {}
    for path in candidates:
        if megapixels(path) < min_mp:
            continue
        problem = decode_problem(path.read_bytes())
        if problem:
            rejected[str(path)] = problem
        else:
            accepted.append(path)
    return accepted, rejected


def camera_paths(data_dir: Path = DATA_DIR, min_mp: float = CAMERA_MIN_MP) -> list[Path]:
    return select_camera(camera_candidates(data_dir), min_mp)[0]


def load_mix(name: str, data_dir: Path = DATA_DIR, limit: int | None = None) -> Mix:
    """The mix `name` ("web" or "camera"), at most `limit` images (an evenly spread subset), bytes in memory."""
    if name == "web":
        paths = web_paths(data_dir)
    elif name == "camera":
        paths = camera_paths(data_dir)
    else:
        raise ValueError(f"unknown mix {name!r}; choose from {', '.join(MIX_NAMES)}")
    if not paths:
        raise FileNotFoundError(f"mix {name!r}: no images under {data_dir} (the shared real-photo folder)")
    if limit is not None and 0 < limit < len(paths):
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    images = [p.read_bytes() for p in paths]
    sizes = []
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            sizes.append(image.size)
    return Mix(name, paths, images, sizes)
