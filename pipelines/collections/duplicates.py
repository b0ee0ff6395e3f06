"""Exact and near duplicates of a collection: same bytes (sha256), or perceptual hashes a few bits apart.

Near duplicates are found without comparing all pairs (multi-index hashing): identical hashes are collapsed
first, so a flood of identical (e.g. blank) images costs one entry; the 64 bits are split into
`max_distance + 1` disjoint chunks, and by the pigeonhole principle two hashes within `max_distance` bits agree
exactly on at least one chunk. Hashes are bucketed by (chunk, chunk value), pairs inside a bucket are verified
with the real Hamming distance, and the links are merged into groups (connected components).

`DEFAULT_MAX_DISTANCE` = 6, measured on the 88 JPEGs of `shared/data/exif-samples` with the phash of
`pipelines.metadata` (distances are even: a median-threshold phash sets exactly 32 bits). Each file copied upright
three ways (50 % at JPEG q75, PNG, 640 px longest side at q60), 264 copies: 213 at distance 0, 36 at 2, 12 at 4;
the 3 others (14, 18, 24) are copies of two flat, featureless images (a uniform grey frame, a dark 49x500 sliver)
whose phash is noise. Different photos: nearest pairs at 18 (two pairs); the same scene shot twice (Canon
HDR on/off) at 16; the same shot in iPhone HDR on/off at 4 (a true duplicate). 6 is one step above every real
copy and 10 below the nearest different photo. The cost grows with the distance (chunks of 64 / (d + 1) bits):
100,000 random hashes at 6 take about a second on one core.
"""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pipelines.collections.record import ImageRecord

DEFAULT_MAX_DISTANCE = 6
HASH_BITS = 64

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    return _BYTE_POPCOUNT[values.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


def _sorted_groups(groups: list[list[str]]) -> list[list[str]]:
    return sorted((sorted(group) for group in groups if len(group) >= 2), key=lambda group: group[0])


def exact_duplicate_groups(records: Sequence[ImageRecord]) -> list[list[str]]:
    """Names of byte-identical files (same sha256), groups of 2 or more; failed records and those without a digest
    are ignored. Names sorted inside a group, groups by their first name."""
    by_digest: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if record.ok and record.sha256:
            by_digest[record.sha256].append(record.name)
    return _sorted_groups(list(by_digest.values()))


def _parse_hash(text: str | None) -> int | None:
    if not text or len(text) > HASH_BITS // 4:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def _chunks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of `max_distance + 1` disjoint bit ranges covering all 64 bits, as equal as possible."""
    count = max_distance + 1
    sizes = [HASH_BITS // count + (1 if i < HASH_BITS % count else 0) for i in range(count)]
    chunks, shift = [], 0
    for size in sizes:
        chunks.append((shift, (1 << size) - 1))
        shift += size
    return chunks


def _close_pairs(hashes: np.ndarray, keys: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of `hashes` with equal `keys` and Hamming distance <= max_distance.

    Sorting by key makes each bucket a run; offset by offset, every position pairs with the one `offset` further
    in its run, and only positions whose run is still long enough stay active: the work is the number of candidate
    pairs, never all pairs, and the memory one array of positions.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    n = len(keys)
    starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    lengths = np.diff(np.append(starts, n))
    run_end = np.repeat(starts + lengths, lengths)
    active = np.flatnonzero(run_end - np.arange(n) > 1)
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    offset = 1
    while active.size:
        a, b = order[active], order[active + offset]
        close = _popcount(hashes[a] ^ hashes[b]) <= max_distance
        if close.any():
            found_a.append(a[close])
            found_b.append(b[close])
        offset += 1
        active = active[run_end[active] - active > offset]
    if not found_a:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(found_a), np.concatenate(found_b)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member) of each of `n` nodes linked by edges (a, b).

    Vectorised union-find: each round hooks the larger root of every unmerged edge under the smaller one, then
    compresses paths fully. Parents only ever decrease, so this ends; every edge ends inside one tree.
    """
    parent = np.arange(n)
    while a.size:
        root_a, root_b = parent[a], parent[b]
        merge = root_a != root_b
        if not merge.any():
            break
        a, b = a[merge], b[merge]
        low, high = np.minimum(root_a[merge], root_b[merge]), np.maximum(root_a[merge], root_b[merge])
        np.minimum.at(parent, high, low)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def near_duplicate_groups(records: Sequence[ImageRecord], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[str]]:
    """Names of images whose perceptual hashes are within `max_distance` bits, linked transitively (connected
    components of 2 or more; exact duplicates included). Failed records and those without a valid phash are
    ignored. Names sorted inside a group, groups by their first name."""
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be in 0..{HASH_BITS - 1}, got {max_distance}")
    names: list[str] = []
    values: list[int] = []
    for record in records:
        value = _parse_hash(record.phash) if record.ok else None
        if value is not None:
            names.append(record.name)
            values.append(value)
    if len(names) < 2:
        return []
    distinct, inverse = np.unique(np.array(values, dtype=np.uint64), return_inverse=True)
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    if max_distance > 0 and len(distinct) > 1:
        for shift, mask in _chunks(max_distance):
            keys = (distinct >> np.uint64(shift)) & np.uint64(mask)
            a, b = _close_pairs(distinct, keys, max_distance)
            edges_a.append(a)
            edges_b.append(b)
    if edges_a:
        labels = _components(len(distinct), np.concatenate(edges_a), np.concatenate(edges_b))
    else:
        labels = np.arange(len(distinct))
    groups: dict[int, list[str]] = defaultdict(list)
    for name, label in zip(names, labels[inverse.ravel()].tolist(), strict=True):
        groups[label].append(name)
    return _sorted_groups(list(groups.values()))
