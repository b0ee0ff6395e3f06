"""Training and evaluation data for quality_net: real photos, synthetic degradations, the model's preprocessing.

The split is by photo. The `*.JPEG` files of ../shared/data/imagenet-samples, sorted by name, with index < 500
form the training pool (every 10th of them is the validation split); index >= 500 is reserved for held-out
evaluation and is never read by training. Photos whose shorter side is under 224 px (the model would see them
upscaled, i.e. already blurry) or that are monochrome (desaturation is a no-op on them) are left out of both.

A sample is: the upright RGB photo at its own resolution -> `apply_distortion(kind, level)` (or none: clean)
-> the config's resize -> centre crop -> normalise, exactly what the decode stage does to a served JPEG. Only
the crop differs during training: a random 224 window of a centre 240 region, plus a random horizontal flip.
"""

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipelines.decode import decode_rgb
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec, geometry_pil
from tooling.quality import distortions
from tooling.quality.distortions import KINDS, apply_distortion

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = PROJECT_ROOT / "models" / "quality_net"
PHOTOS_DIR = PROJECT_ROOT.parent / "shared" / "data" / "imagenet-samples"
HELD_OUT_FROM = 500  # photos with a sorted index >= this are reserved for held-out evaluation
VALIDATION_EVERY = 10  # every 10th training-pool photo is validation
MIN_SHORTER_SIDE = 224
MONOCHROME_CHROMA = 2.0  # 95th percentile of Lab chroma below this: a black-and-white photo
FIRST_POSITIVE_LEVEL = 3  # default first level at which a kind's own group is positive; lower levels are ignored
CACHE_SIZE = 240  # training keeps a centre 240x240 region so that random 224 crops stay inside it

# Output order of `probs` (labels.txt). Names follow the tags of pipelines/quality where one exists.
GROUPS: dict[str, tuple[str, ...]] = {
    "blurry": ("gaussian_blur", "lens_blur", "motion_blur"),
    "motion_blur": ("motion_blur",),
    "noisy": ("white_noise", "color_noise", "impulse_noise", "multiplicative_noise"),
    "compression_artifacts": ("jpeg", "jpeg2000"),
    "low_light": ("darken",),
    "overexposed": ("brighten",),
    "low_contrast": ("contrast_change",),
    "undersaturated": ("desaturate",),
    "oversaturated": ("oversaturate",),
    "color_cast": ("color_cast",),
    "pixelated": ("pixelate",),
    "posterized": ("quantization",),
}
GROUP_NAMES: tuple[str, ...] = tuple(GROUPS)


def side_effects(kind: str) -> frozenset[str]:
    """Groups a `kind` may legitimately trigger besides its own (severe JPEG 2000 is blurry, darkening lowers
    contrast, ...): taken from pipelines.quality's tag expectations, so they are not trained or scored as
    negatives. Read defensively: those tables belong to the quality-metrics stage."""
    allowed = set(getattr(distortions, "ALLOWED_TAGS", {}).get(kind, ()))
    allowed |= set(getattr(distortions, "EXPECTED_TAGS", {}).get(kind, {}))
    own = {group for group, kinds in GROUPS.items() if kind in kinds}
    return frozenset(allowed & set(GROUP_NAMES)) - own


def first_positive_level(kind: str, group: str) -> int:
    """Level from which `kind` counts as `group`: where pipelines.quality expects the same-named tag to fire
    (motion blur is `motion_blur` from level 4), else FIRST_POSITIVE_LEVEL. Below it the distortion is often
    invisible at the model's scale (JPEG quality 25 after a 0.7x downscale), so it is neither positive nor
    negative: training ignores it and the evaluation reports it per level only."""
    expected = getattr(distortions, "EXPECTED_TAGS", {}).get(kind, {})
    return int(expected.get(group, FIRST_POSITIVE_LEVEL))


def targets(kind: str | None, level: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, mask, score) for one sample: multi-label 0/1 per group, 1 where the label counts, and the
    quality-score target (1 for a clean photo, 1 - level/5 for a distorted one)."""
    labels = np.zeros(len(GROUP_NAMES), np.float32)
    mask = np.ones(len(GROUP_NAMES), np.float32)
    if kind is None:
        return labels, mask, 1.0
    ignored = side_effects(kind)
    for i, (group, kinds) in enumerate(GROUPS.items()):
        if kind in kinds:
            labels[i] = mask[i] = 1.0 if level >= first_positive_level(kind, group) else 0.0
        elif group in ignored:
            mask[i] = 0.0
    return labels, mask, 1.0 - level / 5.0


def list_photos(photos_dir: Path = PHOTOS_DIR) -> list[Path]:
    """All sample photos in the order that defines the split."""
    return sorted(photos_dir.glob("*.JPEG"))


def load_upright(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """The photo as the decode stage sees it before geometry: full resolution, EXIF-upright, RGB uint8."""
    return np.asarray(decode_rgb(path.read_bytes(), spec, DecodeLimits(), reduced=False).rgb)


def usable(rgb: np.ndarray) -> bool:
    """Large enough not to be upscaled, and in colour."""
    if min(rgb.shape[:2]) < MIN_SHORTER_SIDE:
        return False
    small = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2Lab)
    return float(np.percentile(np.hypot(lab[..., 1], lab[..., 2]), 95)) >= MONOCHROME_CHROMA


def _usable_photos(photos: Sequence[Path], spec: PreprocessSpec) -> list[Path]:
    out = []
    for path in photos:
        with Image.open(path) as header:
            if min(header.size) < MIN_SHORTER_SIDE:
                continue
        if usable(load_upright(path, spec)):
            out.append(path)
    return out


def training_split(spec: PreprocessSpec, photos_dir: Path = PHOTOS_DIR) -> tuple[list[Path], list[Path]]:
    """(train, validation) photos from the training pool (sorted index < HELD_OUT_FROM); nothing else is read."""
    pool = list_photos(photos_dir)[:HELD_OUT_FROM]
    validation = set(pool[VALIDATION_EVERY - 1 :: VALIDATION_EVERY])
    kept = _usable_photos(pool, spec)
    return [p for p in kept if p not in validation], [p for p in kept if p in validation]


def held_out_photos(spec: PreprocessSpec, photos_dir: Path = PHOTOS_DIR) -> list[Path]:
    """Usable photos reserved for evaluation (sorted index >= HELD_OUT_FROM)."""
    return _usable_photos(list_photos(photos_dir)[HELD_OUT_FROM:], spec)


def model_pixels(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC uint8 pixels the model sees (resize + centre crop of `spec`), before normalisation."""
    return geometry_pil(Image.fromarray(rgb), spec)


def training_spec(spec: PreprocessSpec) -> PreprocessSpec:
    """The served geometry with a larger centre crop, so random training crops of the served size fit inside."""
    return dataclasses.replace(spec, crop_size=(CACHE_SIZE, CACHE_SIZE))


@dataclass(frozen=True)
class Variant:
    """One degradation of one photo; kind None is the clean photo."""

    kind: str | None
    level: int


def training_variants(rng: np.random.Generator, levels_per_kind: int, clean_copies: int) -> list[Variant]:
    """Every kind at `levels_per_kind` distinct random levels, plus the clean photo `clean_copies` times (the
    copies share one cached image; they only weight clean samples to ~25%)."""
    variants = [Variant(None, 0)] * clean_copies
    for kind in KINDS:
        for level in sorted(rng.choice(np.arange(1, 6), size=levels_per_kind, replace=False)):
            variants.append(Variant(kind, int(level)))
    return variants


def evaluation_variants() -> list[Variant]:
    """The held-out grid: clean, then every kind at every level."""
    return [Variant(None, 0)] + [Variant(kind, level) for kind in KINDS for level in range(1, 6)]


def render(rgb: np.ndarray, variant: Variant, spec: PreprocessSpec, rng: np.random.Generator) -> np.ndarray:
    """Distort at the photo's own resolution, then the model geometry of `spec`."""
    pixels = rgb if variant.kind is None else apply_distortion(rgb, variant.kind, variant.level, rng)
    return model_pixels(pixels, spec)


@dataclass(frozen=True)
class PhotoJob:
    path: Path
    seed: tuple[int, ...]
    spec: PreprocessSpec
    variants: tuple[Variant, ...]


def _render_photo(job: PhotoJob) -> np.ndarray:
    cv2.setNumThreads(1)
    rng = np.random.default_rng(job.seed)
    rgb = load_upright(job.path, job.spec)
    # Repeated variants (clean copies) are rendered once; the caller maps them back.
    unique = list(dict.fromkeys(job.variants))
    return np.stack([render(rgb, v, job.spec, rng) for v in unique])


def render_all(jobs: Sequence[PhotoJob], workers: int) -> Iterator[np.ndarray]:
    """Rendered unique variants per job, in job order; deterministic whatever `workers` is (a seed per photo)."""
    if workers <= 1:
        yield from map(_render_photo, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render_photo, jobs, chunksize=4)


def label_table() -> str:
    """Markdown: per kind, its groups with the first positive level, and the groups it is not trained against."""
    rows = ["| kind | positive for (from level) | ignored (side effects) |", "| --- | --- | --- |"]
    for kind in KINDS:
        own = [f"{g} ({first_positive_level(kind, g)})" for g, kinds in GROUPS.items() if kind in kinds]
        rows.append(f"| {kind} | {', '.join(own)} | {', '.join(sorted(side_effects(kind))) or '-'} |")
    return "\n".join(rows)
