"""The fixed BIQ2021 held-out split (tooling.quality.biq): deterministic, ~20 %, order-independent, disjoint."""

import random
from pathlib import Path

import pytest

from tests.paths import DATA, require
from tooling.quality.biq import held_out, load_biq, source, split

pytestmark = pytest.mark.unit

BIQ = DATA / "biq2021-train"
SYNTHETIC = [(Path("images") / f"ss0{1 + i % 3} ({i}).jpg", (i % 100) / 100) for i in range(3000)]


def test_held_out_is_a_fixed_function_of_the_name() -> None:
    # Pinned: changing SALT or the rule would silently move photos between the parts (and leak tuned-on photos
    # into the held-out numbers).
    assert [i for i in range(1000, 1040) if held_out(f"ss01 ({i}).jpg")] == [
        1007,
        1011,
        1012,
        1015,
        1023,
        1024,
        1030,
        1031,
        1032,
    ]
    names = [p.name for p, _ in SYNTHETIC]
    assert [held_out(n) for n in names] == [held_out(n) for n in names]


def test_synthetic_names_split_about_one_in_five() -> None:
    train, held = split(SYNTHETIC)
    assert 0.18 <= len(held) / len(SYNTHETIC) <= 0.22
    assert len(train) + len(held) == len(SYNTHETIC)


def test_split_is_independent_of_row_order_and_disjoint() -> None:
    shuffled = list(SYNTHETIC)
    random.Random(7).shuffle(shuffled)
    train, held = split(SYNTHETIC)
    train2, held2 = split(shuffled)
    assert set(held) == set(held2) and set(train) == set(train2)
    assert not {p for p, _ in train} & {p for p, _ in held}
    # a photo's part does not depend on the other photos present
    assert split(held[:5])[1] == held[:5] and split(train[:5])[1] == []


def test_source_prefix() -> None:
    assert source("ss03 (7999).jpg") == "ss03"
    assert source("ss01(12).jpg") == "ss01"


def test_real_file_split() -> None:
    rows = load_biq(require(BIQ))
    train, held = split(rows)
    assert len(rows) == len({p.name for p, _ in rows}) == len(train) + len(held)
    assert 0.18 <= len(held) / len(rows) <= 0.22, len(held)
    assert not {p.name for p, _ in train} & {p.name for p, _ in held}
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert sorted(split(shuffled)[1]) == sorted(held)
    assert all(0.0 <= mos <= 1.0 for _, mos in rows)
    assert {source(p.name) for p, _ in held} == {"ss01", "ss02", "ss03"}
