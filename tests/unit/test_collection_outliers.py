"""pipelines.collections.outliers: classifier-space outliers and rare metadata on synthetic collections."""

import numpy as np
import pytest

from pipelines.collections.outliers import Outlier, find_outliers
from pipelines.collections.record import ImageRecord, failed_record

pytestmark = pytest.mark.unit

FEATURE_REASON = "far from the collection in the classifier's output space"


def _usual_probs(rng: np.random.Generator) -> tuple[tuple[int, float], ...]:
    """A top-5 output like a classifier's on the usual subject: one of classes 0-4 on top, the rest among them."""
    top = int(rng.integers(0, 5))
    p_top = float(rng.uniform(0.5, 0.95))
    rest = rng.dirichlet([1.0] * 4) * (1 - p_top) * rng.uniform(0.8, 1.0)
    others = [c for c in range(5) if c != top]
    return ((top, p_top), *((c, float(q)) for c, q in zip(others, rest, strict=True)))


def _photo(name: str, **fields: object) -> ImageRecord:
    values: dict[str, object] = {"format": "JPEG", "mode": "RGB", "width": 4000, "height": 3000}
    values.update(fields)
    return ImageRecord(name=name, **values)  # type: ignore[arg-type]


def _feature_collection(seed: int = 3) -> tuple[list[ImageRecord], set[str]]:
    rng = np.random.default_rng(seed)
    records = [_photo(f"usual/{i:03d}.jpg", class_probs=_usual_probs(rng)) for i in range(200)]
    odd = {"odd/a.jpg", "odd/b.jpg", "odd/c.jpg"}
    for k, name in enumerate(sorted(odd)):
        records.insert(50 * k + 7, _photo(name, class_probs=((900, 0.8 + 0.05 * k), (901, 0.1), (2, 0.03))))
    return records, odd


def test_feature_space_outliers_are_exactly_the_odd_subject() -> None:
    records, odd = _feature_collection()
    found = find_outliers(records)
    assert {o.name for o in found} == odd
    for outlier in found:
        assert isinstance(outlier, Outlier)
        assert outlier.reason.startswith(FEATURE_REASON + " (z = ")
        assert outlier.score >= 3.5
        assert f"(z = {outlier.score:.1f})" in outlier.reason
    assert [o.score for o in found] == sorted((o.score for o in found), reverse=True)
    assert find_outliers(records, limit=2) == found[:2]
    assert find_outliers(records, limit=0) == []


def test_feature_space_needs_twenty_records_with_probs() -> None:
    records, odd = _feature_collection()
    usual = [r for r in records if r.name not in odd]
    one_odd = [r for r in records if r.name in odd][:1]
    without = [_photo(f"plain/{i:03d}.jpg") for i in range(100)]
    found = find_outliers(usual[:19] + one_odd + without)  # 20 with probs: measured
    assert [o.name for o in found] == [one_odd[0].name]
    assert find_outliers(usual[:18] + one_odd + without) == []  # 19 with probs: not measured


def test_identical_outputs_fall_back_to_mean_deviation_and_ignore_float_noise() -> None:
    same = [_photo(f"same/{i:03d}.jpg", class_probs=((1, 0.7), (2, 0.2))) for i in range(100)]
    odd = _photo("odd.jpg", class_probs=((500, 0.9),))
    found = find_outliers([*same, odd])  # MAD is 0: the mean absolute deviation scales the distances
    assert [o.name for o in found] == ["odd.jpg"]
    assert FEATURE_REASON in found[0].reason
    rng = np.random.default_rng(0)
    noisy = [
        _photo(f"noisy/{i:03d}.jpg", class_probs=((1, 0.7 + 1e-4 * rng.standard_normal()), (2, 0.2)))
        for i in range(100)
    ]
    assert find_outliers(noisy) == []  # tiny differences are not "far", whatever their z


def test_no_class_probs_means_no_feature_outliers() -> None:
    records = [_photo(f"p/{i:03d}.jpg") for i in range(300)]
    assert find_outliers(records) == []
    records.append(_photo("p/sliver.jpg", width=5000, height=500))
    found = find_outliers(records)
    assert [o.name for o in found] == ["p/sliver.jpg"]
    assert FEATURE_REASON not in found[0].reason


def test_rare_format_gifs_among_jpegs() -> None:
    records = [_photo(f"photos/{i:03d}.jpg") for i in range(500)]
    gifs = [_photo(f"anim/{i}.gif", format="GIF") for i in range(3)]
    records[100:100] = gifs
    found = find_outliers(records)
    assert {o.name for o in found} == {g.name for g in gifs}
    for outlier in found:
        assert outlier.reason == "format GIF: 3 of 503 images"
        assert outlier.score >= 3.5


def test_rare_mode_and_resolution_and_merged_reasons() -> None:
    records = [_photo(f"photos/{i:04d}.jpg") for i in range(1_200)]
    records.append(_photo("cmyk.jpg", mode="CMYK"))
    records.append(_photo("tiny.jpg", width=400, height=300))
    records.append(_photo("both.gif", format="GIF", mode="P"))
    found = {o.name: o for o in find_outliers(records)}
    assert set(found) == {"cmyk.jpg", "tiny.jpg", "both.gif"}
    assert found["cmyk.jpg"].reason == "colour mode CMYK: 1 of 1,203 images"
    assert found["tiny.jpg"].reason == "resolution ≤0.3 MP: 1 of 1,203 images"  # the report's class (0.12 MP)
    assert set(found["both.gif"].reason.split("; ")) == {
        "format GIF: 1 of 1,203 images",
        "colour mode P: 1 of 1,203 images",
    }


def test_rare_values_need_fifty_images_and_at_most_one_percent() -> None:
    small = [_photo(f"photos/{i:02d}.jpg") for i in range(45)] + [_photo("one.gif", format="GIF")]
    assert find_outliers(small) == []  # 46 images: too few to call anything rare
    common = [_photo(f"photos/{i:03d}.jpg") for i in range(196)] + [_photo(f"{i}.gif", format="GIF") for i in range(3)]
    assert find_outliers(common) == []  # 3 of 199 is 1.5 %
    rare = [_photo(f"photos/{i:03d}.jpg") for i in range(297)] + [_photo(f"{i}.gif", format="GIF") for i in range(3)]
    assert {o.name for o in find_outliers(rare)} == {"0.gif", "1.gif", "2.gif"}  # 3 of 300 is exactly 1 %


def test_extreme_aspect_ratio() -> None:
    records = [_photo(f"photos/{i:02d}.jpg") for i in range(30)]
    records += [
        _photo("four-to-one.jpg", width=4000, height=1000),
        _photo("banner.jpg", width=4010, height=1000),
        _photo("tower.jpg", width=300, height=3000),
    ]
    found = find_outliers(records)
    assert [o.name for o in found] == ["tower.jpg", "banner.jpg"]  # 10:1 before 4.01:1
    assert found[0].reason == "extreme aspect ratio 10.0:1 (300x3000)"


def test_small_collections_yield_nothing() -> None:
    records, odd = _feature_collection()
    tiny = [r for r in records if r.name not in odd][:6] + [r for r in records if r.name in odd]
    tiny.append(_photo("gif.gif", format="GIF", width=100, height=5000))
    assert len(tiny) == 10
    assert find_outliers(tiny) == []
    # Failed records do not count towards the 20, and are never flagged.
    ten = [_photo(f"p/{i}.jpg", width=100, height=5000) for i in range(10)]
    assert find_outliers(ten + [failed_record(f"bad/{i}", "unreadable") for i in range(15)]) == []
    assert find_outliers([]) == []
