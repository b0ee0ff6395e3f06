"""`imgserve quality calibrate` review findings: bad ratings files and unreadable rated photos as one-line usage
errors naming the line or file, a re-fitted model's version naming its head, no calibration over the packaged files,
a hand-edited calibrated thresholds file refused, a labelled folder with nothing to tune refused.

No shared data and no classifier weights: the rated photos' features are given (as in
test_quality_mos_calibration.py) and the labelled photos are synthetic textures."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.quality.thresholds import (
    DEFAULT_THRESHOLDS_PATH,
    Thresholds,
    default_thresholds,
    dump_thresholds,
    load_thresholds,
)
from serving.config.model_config import load_model_config
from serving.feature_head import FeatureHead
from tests.unit.textures import dead_leaves_texture
from tooling.quality_mos.features import QUALITY_MODEL_DIR, Measured

pytestmark = pytest.mark.unit


def _ratings(folder: Path, csv_text: str, photos: int = 24) -> Path:
    folder.mkdir(parents=True)
    for i in range(photos):
        (folder / f"p{i}.jpg").write_bytes(b"stands in for a photo")
    (folder / "mos.csv").write_text(csv_text)
    return folder


def _rows(photos: int = 24) -> list[str]:
    return [f"p{i}.jpg,{i / 30:.3f}\n" for i in range(photos)]


# 1. bad ratings input: one line, the usage-error exit code, the right line and file


def test_a_row_without_its_rating_is_a_usage_error_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: AttributeError ('NoneType' object has no attribute 'strip'), a traceback and exit 1, the code that
    means "not better, nothing written"."""
    from serving.cli import main

    rows = _rows()
    rows[-1] = "p23.jpg\n"  # the last row lacks its mos field
    rated = _ratings(tmp_path / "rated", "image,mos\n" + "".join(rows))
    assert main(["quality", "calibrate", str(rated), "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err.strip()
    assert said == "imgserve: error: mos.csv line 25 (p23.jpg): no mos field"
    assert not (tmp_path / "out").exists()


def test_a_row_without_an_image_name_is_refused_naming_its_line(tmp_path: Path) -> None:
    from tooling.quality_mos.calibrate_mos import read_ratings

    rows = _rows()
    rows[3] = ",0.5\n"
    with pytest.raises(ValueError, match=r"^mos.csv line 5: no image name$"):
        read_ratings(_ratings(tmp_path / "rated", "image,mos\n" + "".join(rows)))


def test_errors_name_the_file_line_across_blank_lines(tmp_path: Path) -> None:
    """Rows were counted, not lines: with blank lines above it a bad rating on line 9 was said to be on line 5."""
    from tooling.quality_mos.calibrate_mos import read_ratings

    rows = _rows()
    rows[3] = "p3.jpg,abc\n"
    text = "image,mos\n\n" + "".join(rows[:2]) + "\n\n" + rows[2] + "\n" + "".join(rows[3:])
    assert text.splitlines()[8] == "p3.jpg,abc"  # line 9 of the file
    with pytest.raises(ValueError, match=r"^mos.csv line 9 \(p3.jpg\): rating 'abc'"):
        read_ratings(_ratings(tmp_path / "rated", text))
    rows[3] = "p0.jpg,0.2\n"  # a repeat, also after blank lines
    text = "image,mos\n\n\n" + "".join(rows)
    with pytest.raises(ValueError, match=r"^mos.csv line 7: p0.jpg is rated twice"):
        read_ratings(_ratings(tmp_path / "rated2", text))


def test_a_rated_file_that_is_no_image_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 'unrecognised image format; supported: ...' without saying which of the rated files."""
    import tooling.quality_mos.features as features

    photo = tmp_path / "ss03 (7999).jpg"
    photo.write_bytes(b"not an image at all")
    monkeypatch.setattr(features, "_SESSION", object())  # the file is refused before the classifier runs
    with pytest.raises(ValueError, match="not a readable image") as error:
        features._measure_chunk(("unused.onnx", [photo]))
    assert str(photo) in str(error.value) and "unrecognised image format" in str(error.value)


# 2. a re-fitted model's version names its head


def _given_features(monkeypatch: pytest.MonkeyPatch, n: int) -> np.ndarray:
    """measure_all answers features on the served head's standardisation; returns what the served head predicts."""
    rng = np.random.default_rng(11)
    head = FeatureHead.load(QUALITY_MODEL_DIR / "head.npz")
    z = rng.normal(size=(n, head.mean.size))
    features = head.mean + head.scale * z
    monkeypatch.setattr(
        "tooling.quality_mos.calibrate_mos.measure_all",
        lambda items, workers=2: [
            Measured(str(p), f.astype(np.float32), {}) for p, f in zip(items, features, strict=True)
        ],
    )
    return z @ head.score_weights + head.score_bias


def test_two_refits_of_one_base_have_versions_that_name_their_heads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: both wrote version "2" (different heads), so `quality_mos:2` in a result could be either."""
    from serving.repository import version_config
    from tooling.quality_mos.calibrate_mos import calibrate_mos

    n = 40
    served = _given_features(monkeypatch, n)
    mos = np.clip((np.argsort(np.argsort(served)) + 0.5) / n + np.random.default_rng(2).normal(0, 0.1, n), 0, 1)
    rated = _ratings(tmp_path / "rated", "image,mos\n" + "".join(f"p{i}.jpg,{m:.4f}\n" for i, m in enumerate(mos)), n)
    versions = []
    for method in ("correction", "scratch"):
        out = tmp_path / method / "quality_mos"  # a repository of one's own
        result = calibrate_mos(rated, out, method=method, force=True)
        digest = hashlib.sha256((out / "head.npz").read_bytes()).hexdigest()
        assert result["version"] == f"2+{digest[:8]}"
        config = load_model_config(out / "config.yaml")
        assert config.version == result["version"] and config.weights.sha256 == digest
        assert version_config(out, out, None).version == result["version"]  # served flat, as it is
        assert (
            (out / "MODEL_CARD.md")
            .read_text(encoding="utf-8")
            .startswith(f"# quality_mos version {result['version']}:")
        )
        versions.append(result["version"])
    assert versions[0] != versions[1]
    # calibrating a calibrated model counts on from its number
    again = calibrate_mos(rated, tmp_path / "again" / "quality_mos", source=tmp_path / "scratch" / "quality_mos",
                          force=True)  # fmt: skip
    assert again["version"].startswith("3+") and again["calibrated_from"]["version"] == versions[1]


# 3. no calibration over the packaged files


def test_the_packaged_thresholds_file_is_not_an_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: `--out pipelines/quality/thresholds.yaml` replaced the packaged thresholds (their history lost). Here
    nothing is measured or written whatever the code does: calibrate and dump_thresholds are stand-ins."""
    import tooling.quality.calibrate as calibrate_module

    written: list[Path] = []
    monkeypatch.setattr(calibrate_module, "calibrate", lambda folder, base, negatives: (default_thresholds(), []))
    monkeypatch.setattr(calibrate_module, "dump_thresholds", lambda thresholds, path: written.append(Path(path)))
    link = tmp_path / "mine.yaml"
    link.symlink_to(DEFAULT_THRESHOLDS_PATH)
    for out in (DEFAULT_THRESHOLDS_PATH, link):
        assert calibrate_module.main([str(tmp_path), "--out", str(out)]) == 2
        said = capsys.readouterr().err.strip()
        assert said.startswith("error: ") and "\n" not in said
        assert "packaged thresholds" in said and "IMGSERVE_QUALITY_THRESHOLDS" in said
    assert written == []
    assert calibrate_module.main([str(tmp_path), "--out", str(tmp_path / "ok.yaml")]) == 0
    assert written == [tmp_path / "ok.yaml"]


def test_the_packaged_model_folder_is_not_an_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: `--out models/quality_mos --force` rewrote the packaged head in place. Refused before the photos are
    measured (measure_all must not be reached; the old code stopped there too, so nothing is written here)."""
    from tooling.quality_mos.calibrate_mos import calibrate_mos

    def measured(items: list, workers: int = 2) -> list:
        raise AssertionError("measured: the --out was not refused first")

    monkeypatch.setattr("tooling.quality_mos.calibrate_mos.measure_all", measured)
    rated = _ratings(tmp_path / "rated", "image,mos\n" + "".join(_rows()))
    link = tmp_path / "link"
    link.symlink_to(QUALITY_MODEL_DIR)
    for out in (QUALITY_MODEL_DIR, link, QUALITY_MODEL_DIR / "sub"):
        with pytest.raises(ValueError, match="packaged model folder.*IMGSERVE_MODEL_REPOSITORY"):
            calibrate_mos(rated, out, force=True)
    copy = tmp_path / "repo" / "quality_mos"  # a source of one's own is not rewritten in place either
    with pytest.raises(ValueError, match="packaged model folder"):
        calibrate_mos(rated, copy, source=copy, force=True)


def test_the_cli_refuses_the_packaged_model_folder_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from serving.cli import main

    monkeypatch.setattr("tooling.quality_mos.calibrate_mos.measure_all", lambda items, workers=2: 1 / 0)
    rated = _ratings(tmp_path / "rated", "image,mos\n" + "".join(_rows()))
    assert main(["quality", "calibrate", str(rated), "--out", str(QUALITY_MODEL_DIR), "--force"]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("imgserve: error: --out") and "\n" not in said


# 4. a calibrated thresholds file edited by hand


def _calibrated_file(tmp_path: Path) -> Path:
    thresholds = default_thresholds()
    calibrated = thresholds.model_copy(update={"version": thresholds.calibrated_version()})
    path = tmp_path / "calibrated.yaml"
    dump_thresholds(calibrated, path)
    return path


def test_a_calibrated_file_edited_by_hand_is_refused(tmp_path: Path) -> None:
    """Before: it loaded, and its results named the calibrated thresholds (`6+653ef004`) that no longer decided
    them."""
    path = _calibrated_file(tmp_path)
    calibrated = load_thresholds(path)
    raw = yaml.safe_load(path.read_text())
    raw["tags"]["blurry"]["conditions"][0]["threshold"] = 0.99
    raw["description"] = "edited"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    named = str(calibrated.version).split("+")[1]
    actual = Thresholds.model_validate(raw).content_digest()
    assert actual != named
    with pytest.raises(ValueError) as error:
        load_thresholds(path)
    said = str(error.value)
    assert said.startswith(f"{path}: version {calibrated.version}") and "\n" not in said
    assert f"digest {named}" in said and f"digest to {actual}" in said
    assert "bump the version" in said and "calibrate again" in said


def test_the_start_check_refuses_an_edited_calibrated_file(tmp_path: Path) -> None:
    """`imgserve serve` refuses IMGSERVE_QUALITY_THRESHOLDS it cannot load: an edited calibrated file is one."""
    from serving.start_checks import StartRefused, check_thresholds

    path = _calibrated_file(tmp_path)
    check_thresholds(str(path))
    raw = yaml.safe_load(path.read_text())
    raw["score"]["levels"]["ULTRA"] = 90.0
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(StartRefused, match="IMGSERVE_QUALITY_THRESHOLDS.*not a thresholds file.*digest"):
        check_thresholds(str(path))


def test_calibrated_descriptions_and_plain_versions_stay_editable(tmp_path: Path) -> None:
    """The digest covers what decides a verdict: a new description keeps it; a plain number is not checked."""
    path = _calibrated_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["description"] = "my notes"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_thresholds(path).version == default_thresholds().calibrated_version()
    raw["tags"]["blurry"]["conditions"][0]["threshold"] = 0.99
    raw["version"] = default_thresholds().version_number + 2  # bumped by hand, as the refusal says
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_thresholds(path).tags["blurry"].conditions[0].threshold == 0.99


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for root in ("pipelines", "tests", "tooling", "models", "docs")
        for p in (Path(__file__).resolve().parents[2] / root).rglob("*.yaml")
        if "working_max_side" in p.read_text(errors="replace") and "tags:" in p.read_text(errors="replace")
    )
    or [DEFAULT_THRESHOLDS_PATH],
    ids=str,
)
def test_every_thresholds_file_in_the_repository_loads(path: Path) -> None:
    assert load_thresholds(path).version_number >= 1


# 5. a labelled folder with nothing to tune


@pytest.mark.parametrize("empty_tag", [False, True])
def test_a_folder_with_only_good_photos_is_refused(tmp_path: Path, empty_tag: bool) -> None:
    """Before: a new version (`6+<digest>`) was written with nothing tuned, and nothing said so."""
    from tooling.quality.calibrate import main

    (tmp_path / "good").mkdir()
    Image.fromarray(dead_leaves_texture(seed=3)).save(tmp_path / "good" / "g.png")
    if empty_tag:
        (tmp_path / "noisy").mkdir()
    out = tmp_path / "out.yaml"
    assert main([str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()
