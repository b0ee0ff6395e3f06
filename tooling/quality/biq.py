"""BIQ2021 real photos with human ratings (`../shared/data/biq2021-train/`): loading and the fixed held-out split.

    rows = load_biq()                  # [(path, mos)], mos.csv order
    train, held = split(rows)          # ~80 % / ~20 %, fixed per file name

The held-out part (`held_out(name)`: the first 8 hex digits of sha256(SALT + name) as an integer, % 5 == 0, so
about 20 % of the photos) is chosen once, per file name alone: it does not depend on row order, on which other
photos are present or on any seed, and a photo never moves between the parts. It is **never used for tuning,
training, threshold or hyper-parameter choice, model selection or early stopping**; it is only evaluated on, to
report numbers (issue #15's targets, docs/QUALITY.md "Real photos: BIQ2021 held-out baseline"). Everything that
learns or calibrates from these photos uses `split(rows)[0]` only.

The database's own test split is not in ../shared (others check the project on it); `biq2021-train` is a random
sample of its training split. Names say the source: ss01 camera gallery, ss02 deliberate capture errors, ss03
post-processed stock photos (see ../shared/data/README.md).
"""

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

BIQ_FOLDER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "biq2021-train"
BLUR_SAMPLES = BIQ_FOLDER.parent / "blur-samples"  # phone/DSLR scenes, _S sharp, _F defocus, _M motion (not BIQ2021)
SALT = b"imgserve-biq2021-heldout:"
HELD_OUT_EVERY = 5  # one photo in five (~20 %)
GOOD_MOS = 0.72  # issue #15: photos rated at least this are "good" (false-alarm denominator)

Row = tuple[Path, float]


def held_out(name: str) -> bool:
    """Whether the photo named `name` (file name only, e.g. 'ss03 (7999).jpg') is in the held-out part."""
    digest = hashlib.sha256(SALT + name.encode()).hexdigest()
    return int(digest[:8], 16) % HELD_OUT_EVERY == 0


def source(name: str) -> str:
    """The source prefix of a BIQ2021 file name ('ss01', 'ss02', 'ss03'; the text before the first space)."""
    return name.split(" ", 1)[0].split("(", 1)[0]


def load_biq(folder: Path = BIQ_FOLDER) -> list[Row]:
    """(image path, MOS 0-1) for every row of `folder`/mos.csv, in the file's order; images in `folder`/images."""
    mos_file = folder / "mos.csv"
    if not mos_file.exists():
        raise FileNotFoundError(f"{mos_file} is absent (BIQ2021 photos are read from ../shared/data, not the repo)")
    with mos_file.open(newline="") as f:
        return [(folder / "images" / r["image"], float(r["mos"])) for r in csv.DictReader(f)]


def split(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(train, held_out), each in the order of `rows`; only the first may ever be tuned or trained on."""
    train: list[Row] = []
    held: list[Row] = []
    for row in rows:
        (held if held_out(row[0].name) else train).append(row)
    return train, held
