"""Ten everyday categories made of ImageNet classes: labelled data for training jobs, from the 1000 sample photos.

`../shared/data/imagenet-samples` holds one photo per ImageNet-1k class (`<WNID>_<label>.JPEG`). Grouping classes
gives a real labelled dataset of the kind teams bring ("dogs / birds / vehicles ..."): each category's photos are of
*different* ImageNet classes, so a head trained on some dog breeds is checked on other breeds, not on more photos of
the same classes. The grouping (class indices in the order of the classifier's `wnids.txt`, 0-based):

| category | ImageNet classes | photos |
| --- | --- | ---: |
| fish | 0-6 (tench ... stingray), 389-397 (barracouta ... puffer) | 16 |
| birds | 7-24, 80-100, 127-146 | 59 |
| reptiles_amphibians | 25-68 (salamanders, frogs, turtles, lizards, crocodiles, snakes) | 44 |
| insects_spiders | 70-79 (harvestman ... centipede), 300-326 (beetles ... butterflies) | 37 |
| dogs | 151-268 | 118 |
| primates | 365-384 | 20 |
| vehicles | 20 road vehicles (ambulance, cab, convertible, fire engine, ..., trolleybus) | 20 |
| boats | 15 ships and boats (aircraft carrier, canoe, ..., yawl) | 15 |
| instruments | 24 musical instruments (accordion ... violin) | 24 |
| food | 924-957, 959-965 (dishes, vegetables, fruit; not hay, drinks or cups) | 41 |

`python -m tooling.training.everyday_categories OUT` writes `OUT/<category>/<photo>` (symbolic links), the
folder-per-category layout a training job reads.
"""

import argparse
import hashlib
import os
import shutil
from pathlib import Path

VEHICLES = (407, 436, 468, 511, 555, 569, 609, 627, 654, 656, 661, 675, 717, 734, 751, 779, 817, 864, 867, 874)
BOATS = (403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913, 914)
INSTRUMENTS = (401, 402, 420, 486, 494, 513, 541, 546, 558, 566, 579, 593, 594, 641, 642, 683, 684, 687, 699, 776)
INSTRUMENTS += (822, 875, 881, 889)

CATEGORIES: dict[str, tuple[int, ...]] = {
    "fish": (*range(0, 7), *range(389, 398)),
    "birds": (*range(7, 25), *range(80, 101), *range(127, 147)),
    "reptiles_amphibians": tuple(range(25, 69)),
    "insects_spiders": (*range(70, 80), *range(300, 327)),
    "dogs": tuple(range(151, 269)),
    "primates": tuple(range(365, 385)),
    "vehicles": VEHICLES,
    "boats": BOATS,
    "instruments": INSTRUMENTS,
    "food": (*range(924, 958), *range(959, 966)),
}


def categorised_photos(samples: Path, wnids: Path) -> dict[str, list[Path]]:
    """Category -> its sample photos, sorted by name."""
    index = {wnid: i for i, wnid in enumerate(wnids.read_text().split())}
    by_class = {index[p.name.split("_")[0]]: p for p in samples.glob("*.JPEG") if p.name.split("_")[0] in index}
    return {name: sorted(by_class[i] for i in classes if i in by_class) for name, classes in CATEGORIES.items()}


def held_out_split(photos: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(kept, held out): a fixed `fraction` of each category, chosen by a hash of the file name (not by order, so
    the held-out part is not one corner of the class range)."""
    ranked = sorted(photos, key=lambda p: hashlib.sha256(f"held-out:{p.name}".encode()).hexdigest())
    count = max(1, round(len(ranked) * fraction))
    return sorted(ranked[count:]), sorted(ranked[:count])


def write_category_folders(
    target: Path, photos: dict[str, list[Path]], per_category: int | None = None, copy: bool = False
) -> dict[str, list[Path]]:
    """`target/<category>/<photo>` as symbolic links, or copies (a server reads no link leading out of its allowed
    root); the first `per_category` of each category, by name, when given."""
    written: dict[str, list[Path]] = {}
    for category, files in photos.items():
        folder = target / category
        folder.mkdir(parents=True, exist_ok=True)
        chosen = files[:per_category] if per_category is not None else files
        for path in chosen:
            link = folder / path.name
            if link.exists():
                continue
            if copy:
                shutil.copyfile(path, link)
            else:
                os.symlink(path.resolve(), link)
        written[category] = chosen
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write <category>/<photo> links into")
    parser.add_argument("--samples", type=Path, default=Path("../shared/data/imagenet-samples"))
    parser.add_argument("--wnids", type=Path, default=Path("../shared/models/mobilenet_v2_imagenet/wnids.txt"))
    parser.add_argument("--per-category", type=int, default=None, help="at most this many photos per category")
    args = parser.parse_args()
    written = write_category_folders(args.out, categorised_photos(args.samples, args.wnids), args.per_category)
    for category, files in written.items():
        print(f"{category:22s} {len(files):4d}")


if __name__ == "__main__":
    main()
