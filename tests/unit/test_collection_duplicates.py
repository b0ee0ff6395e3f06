"""pipelines.collections.duplicates: exact groups, near groups on synthetic hashes at scale, and real photos."""

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.collections import duplicates
from pipelines.collections.duplicates import DEFAULT_MAX_DISTANCE, exact_duplicate_groups, near_duplicate_groups
from pipelines.collections.record import ImageRecord, failed_record, record_from_document
from pipelines.metadata import extract_metadata
from tests.collection_samples import EXPECTED_SAMPLE_GROUPS, PLANTED_ORIGINALS, plant_copies
from tests.paths import EXIF_SAMPLES, require

pytestmark = pytest.mark.unit


def _hex(value: int) -> str:
    return f"{value:016x}"


def _flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def _records(hashes: dict[str, int]) -> list[ImageRecord]:
    return [ImageRecord(name=name, phash=_hex(value)) for name, value in hashes.items()]


def _brute_force_groups(hashes: dict[str, int], max_distance: int) -> list[list[str]]:
    names = list(hashes)
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(names)), 2):
        if (hashes[names[i]] ^ hashes[names[j]]).bit_count() <= max_distance:
            parent[find(i)] = find(j)
    groups: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        groups.setdefault(find(i), []).append(name)
    return sorted((sorted(g) for g in groups.values() if len(g) >= 2), key=lambda g: g[0])


# --- exact duplicates ---------------------------------------------------------------------------------------


def test_exact_groups_by_sha256() -> None:
    records = [
        ImageRecord(name="d.jpg", sha256="aa"),
        ImageRecord(name="b.jpg", sha256="bb"),
        ImageRecord(name="a.jpg", sha256="bb"),
        ImageRecord(name="c.jpg", sha256="aa"),
        ImageRecord(name="e.jpg", sha256="aa"),
        ImageRecord(name="single.jpg", sha256="cc"),
        ImageRecord(name="no-digest-1.jpg"),
        ImageRecord(name="no-digest-2.jpg"),
        ImageRecord(name="failed.jpg", ok=False, error="boom", sha256="cc"),
        failed_record("failed-2.jpg", "unreadable"),
    ]
    assert exact_duplicate_groups(records) == [["a.jpg", "b.jpg"], ["c.jpg", "d.jpg", "e.jpg"]]
    assert exact_duplicate_groups([]) == []
    assert exact_duplicate_groups(records[5:]) == []


# --- near duplicates, synthetic -----------------------------------------------------------------------------


def test_near_groups_link_within_the_distance_transitively() -> None:
    base = 0x0123_4567_89AB_CDEF
    hashes = {
        "a": base,
        "b": _flip(base, [0, 10, 20, 30, 40, 50]),  # 6 from a
        "c": _flip(base, [0, 10, 20, 30, 40, 50, 60, 63, 1, 2, 3, 4]),  # 12 from a, 6 from b: joins through b
        "far": _flip(base, list(range(0, 64, 8))),  # 8 from a, 10+ from the others
        "x": 0xFFFF_0000_FFFF_0000,
        "y": 0xFFFF_0000_FFFF_0000,  # identical to x
    }
    records = _records(hashes) + [
        ImageRecord(name="failed", ok=False, phash=_hex(base)),
        ImageRecord(name="no-hash"),
        ImageRecord(name="bad-hash", phash="not-hex"),
        ImageRecord(name="too-long", phash="0" * 17),
    ]
    assert near_duplicate_groups(records, 6) == [["a", "b", "c"], ["x", "y"]]
    assert near_duplicate_groups(records, 5) == [["x", "y"]]
    assert near_duplicate_groups(records, 0) == [["x", "y"]]
    assert near_duplicate_groups(records, 8) == [["a", "b", "c", "far"], ["x", "y"]]
    assert near_duplicate_groups(records) == near_duplicate_groups(records, DEFAULT_MAX_DISTANCE)
    assert near_duplicate_groups(records[:1]) == []
    with pytest.raises(ValueError):
        near_duplicate_groups(records, -1)
    with pytest.raises(ValueError):
        near_duplicate_groups(records, 64)


@pytest.mark.parametrize("max_distance", [1, 2, 3, 4, 6, 8, 12])
def test_near_groups_match_brute_force_on_clustered_hashes(max_distance: int) -> None:
    """Hashes in clusters (a few bits flipped from 40 centres) exercise every chunk boundary and bucket shape."""
    rng = np.random.default_rng(1234 + max_distance)
    centres = [int(v) for v in rng.integers(0, 2**63, size=40, dtype=np.int64)]
    hashes: dict[str, int] = {}
    for i in range(600):
        bits = rng.choice(64, size=int(rng.integers(0, 2 * max_distance + 2)), replace=False).tolist()
        hashes[f"h{i:03d}"] = _flip(centres[i % len(centres)], bits)
    expected = _brute_force_groups(hashes, max_distance)
    assert expected, "the clustered sample should have groups"
    assert near_duplicate_groups(_records(hashes), max_distance) == expected


def test_pair_at_exactly_the_distance_with_one_bit_per_chunk() -> None:
    """The pigeonhole worst case: the differing bits sit in `d` different chunks, only one chunk agrees."""
    for d in range(1, 12):
        starts = [shift for shift, _ in duplicates._chunks(d)]
        base = 0xA5A5_5A5A_C3C3_3C3C
        near = _flip(base, starts[:d])  # chunk d (the last) agrees
        farther = _flip(base, starts[: d + 1])
        assert near_duplicate_groups(_records({"a": base, "b": near}), d) == [["a", "b"]]
        assert near_duplicate_groups(_records({"a": base, "b": farther}), d) == []


def test_popcount_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.array([0, 1, 0xFF, 2**63, 2**64 - 1, 0x0123_4567_89AB_CDEF], dtype=np.uint64)
    expected = [int(v).bit_count() for v in values]
    assert duplicates._popcount(values).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert duplicates._popcount(values).tolist() == expected


def test_100k_random_hashes_find_exactly_the_planted_pairs() -> None:
    rng = np.random.default_rng(20240229)
    values = [int(v) for v in rng.integers(0, 2**64, size=100_000, dtype=np.uint64)]
    hashes = {f"random/{i:06d}": v for i, v in enumerate(values)}
    planted: list[list[str]] = []
    for k, distance in enumerate([0, 1, 2, 3, 4, 5, 6, 6, 6, 2]):
        original = f"random/{k * 9_973:06d}"
        bits = rng.choice(64, size=distance, replace=False).tolist()
        copy = f"planted/{k:02d}_d{distance}"
        hashes[copy] = _flip(hashes[original], bits)
        planted.append(sorted([original, copy]))
    records = _records(hashes)
    started = time.perf_counter()
    groups = near_duplicate_groups(records)
    elapsed = time.perf_counter() - started
    print(f"near_duplicate_groups: {len(records):,} hashes in {elapsed:.2f} s")
    assert groups == sorted(planted, key=lambda g: g[0])


def test_identical_hash_flood_is_one_group() -> None:
    flood = [ImageRecord(name=f"blank/{i:05d}.png", phash="8000000000000000") for i in range(10_000)]
    near_blank = ImageRecord(name="blank/near.png", phash=_hex(_flip(0x8000000000000000, [3, 17])))
    other = ImageRecord(name="photo.jpg", phash="0123456789abcdef")
    started = time.perf_counter()
    groups = near_duplicate_groups([*flood, near_blank, other])
    elapsed = time.perf_counter() - started
    print(f"identical flood: 10,002 hashes in {elapsed:.3f} s")
    assert len(groups) == 1
    assert groups[0] == sorted([r.name for r in flood] + [near_blank.name])


# --- near duplicates, real photos ---------------------------------------------------------------------------


def _record(name: str, data: bytes) -> ImageRecord | None:
    meta = extract_metadata(data, colors=False)
    if meta.image is None or meta.file.phash is None:  # unreadable or corrupt: no perceptual hash to compare
        return None
    return record_from_document(name, {"metadata": meta.to_dict()})


@pytest.mark.timeout(300)
def test_real_photos_group_planted_copies_and_nothing_else(tmp_path: Path) -> None:
    samples = require(EXIF_SAMPLES)
    files = sorted(p for p in samples.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    records: dict[str, ImageRecord] = {}
    for path in files:
        record = _record(path.relative_to(samples).as_posix(), path.read_bytes())
        if record is not None:
            records[record.name] = record
    assert len(records) >= 50, f"only {len(records)} readable JPEGs under {samples}"

    original_of: dict[str, str] = {}
    for original in PLANTED_ORIGINALS:
        if original not in records:
            continue
        stem = Path(original).stem
        for variant, data in plant_copies((samples / original).read_bytes()).items():
            name = f"planted/{stem}__{variant}"
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            record = _record(name, path.read_bytes())
            assert record is not None, name
            records[name] = record
            original_of[name] = original
    assert len(original_of) >= 3 * 8, "too few planted originals are present"

    groups = near_duplicate_groups(list(records.values()))
    group_of = {name: i for i, group in enumerate(groups) for name in group}

    for copy, original in original_of.items():
        assert copy in group_of and group_of.get(original) == group_of[copy], (copy, original, groups)

    # The whole partition is known: each expected sample group (with the copies of its planted members), and each
    # other planted original with its three copies. Anything else is a false group.
    expected: list[set[str]] = []
    for sample_group in EXPECTED_SAMPLE_GROUPS:
        present = {name for name in sample_group if name in records}
        expected.append(present | {c for c, o in original_of.items() if o in present})
    grouped = set().union(*expected)
    for original in sorted(set(original_of.values()) - grouped):
        expected.append({original} | {c for c, o in original_of.items() if o == original})
    expected_groups = sorted((sorted(g) for g in expected if len(g) >= 2), key=lambda g: g[0])
    assert groups == expected_groups
