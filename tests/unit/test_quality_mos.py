"""The learned quality model's parts: the ridge head, the logistic heads, the grafted ONNX graph (checked against
the numpy heads on the real classifier, skipped when ../shared/models is absent) and the committed head."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving.feature_head import FeatureHead, feature_graph, quality_graph
from serving.repository import ModelRepository
from tooling.quality_mos.features import LAYERS, classifier
from tooling.quality_mos.heads import Projection, fit_logistic
from tooling.quality_mos.ridge import cross_validate, fit_ridge

pytestmark = pytest.mark.unit


def test_ridge_recovers_a_linear_signal_and_cv_prefers_some_shrinkage() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 60)) * rng.uniform(0.1, 10, size=60)  # scales differ: standardised inside
    truth = rng.normal(size=60)
    targets = ((features / features.std(axis=0)) @ truth) * 0.01 + 0.5 + rng.normal(scale=0.05, size=400)
    head = fit_ridge(features[:300], targets[:300], alpha=1.0)
    assert np.corrcoef(head.predict(features[300:]), targets[300:])[0, 1] > 0.7
    scores = cross_validate(features[:300], targets[:300], alphas=(1.0, 1e6))
    assert scores[1.0] > scores[1e6]  # a signal this clear is not best explained by a constant


def test_logistic_heads_learn_separable_tags_and_ignore_unlabelled_rows() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 40))
    targets = np.stack([features[:, 0] > 0.5, features[:, 1] < -0.5], axis=1).astype(float)
    mask = np.ones_like(targets)
    mask[:100, 0] = 0
    targets[:100, 0] = 1 - targets[:100, 0]  # wrong labels, but masked out: must not matter
    projection = Projection.fit(features[:500], components=40)  # all of them: isotropic data has no "top" ones
    heads = fit_logistic(projection, projection(features[:500]), targets[:500], mask[:500], l2=1e-3)
    accuracy = ((heads.predict(features[500:]) > 0.5) == (targets[500:] > 0.5)).mean(axis=0)
    assert (accuracy > 0.9).all(), accuracy


def _base() -> onnx.ModelProto:
    entry = classifier()
    if entry.artifacts.onnx is None:
        pytest.skip(f"{entry.name} is not available ({entry.unavailable_reason}): weights come from ../shared/models")
    return onnx.load(str(entry.artifacts.onnx))


def test_grafted_graph_computes_the_numpy_heads() -> None:
    """Graph arithmetic only (arbitrary head values, nothing served): pooling, folded standardisation, clip, sigmoid."""
    base = _base()
    features_session = ort.InferenceSession(feature_graph(base, LAYERS, 128).SerializeToString())
    images = np.random.default_rng(2).normal(size=(3, 3, 128, 128)).astype(np.float32)
    features = features_session.run(None, {"input": images})[0]
    assert features.shape == (3, 7136)
    rng = np.random.default_rng(3)
    head = FeatureHead(
        LAYERS, features.mean(0), features.std(0) + 0.1, rng.normal(size=7136) * 0.01, 0.5,
        rng.normal(size=(7136, 4)) * 0.01, rng.normal(size=4), ("a", "b", "c", "d"),
    )  # fmt: skip
    session = ort.InferenceSession(quality_graph(base, head, 128, "score", "probs").SerializeToString())
    score, probs = session.run(["score", "probs"], {"input": images})
    want_score, want_probs = head.predict(features.astype(np.float64))
    assert score.shape == (3, 1) and probs.shape == (3, 4)
    assert np.allclose(score[:, 0], want_score, atol=1e-4) and np.allclose(probs, want_probs, atol=1e-4)


def test_repository_builds_the_served_quality_model_from_the_committed_head(tmp_path) -> None:  # noqa: ANN001
    from serving.config.settings import ServerSettings

    _base()
    settings = ServerSettings.from_env().model_copy(update={"cache_dir": tmp_path})
    entry = ModelRepository.scan(settings, check_backends=False).get("quality_mos")
    assert entry.available, entry.unavailable_reason
    assert entry.artifacts.onnx is not None and entry.artifacts.onnx.parent == tmp_path / "onnx"
    head = FeatureHead.load(entry.artifacts.state_dict)
    assert head.labels == entry.labels and head.layers == LAYERS
    session = ort.InferenceSession(str(entry.artifacts.onnx))
    score, probs = session.run(["score", "probs"], {"input": np.zeros((2, 3, 256, 256), np.float32)})
    assert score.shape == (2, 1) and probs.shape == (2, len(entry.labels))
    assert ((0 <= score) & (score <= 1)).all() and ((0 <= probs) & (probs <= 1)).all()


def test_calibrate_on_rated_photos_writes_a_new_model_version(tmp_path) -> None:  # noqa: ANN001
    """`imgserve quality calibrate RATED --out DIR` with a mos.csv: the score head is re-fitted on those photos, the
    tag heads are kept, the copy's version is bumped and its sha256 matches the new head (results name it)."""
    import hashlib

    import yaml
    from PIL import Image, ImageFilter

    from serving.cli import main
    from tests.unit.textures import dead_leaves_texture
    from tooling.quality_mos.features import QUALITY_MODEL_DIR

    _base()
    rated = tmp_path / "rated"
    rated.mkdir()
    rows = ["image,mos"]
    for i in range(24):  # sharper photos rated higher: something a score can learn
        sigma = 0.3 + 0.25 * i
        image = Image.fromarray(dead_leaves_texture(seed=i)).filter(ImageFilter.GaussianBlur(sigma))
        image.save(rated / f"p{i}.jpg", quality=92)
        rows.append(f"p{i}.jpg,{1 - i / 30:.3f}")
    (rated / "mos.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "quality_mos"
    assert main(["quality", "calibrate", str(rated), "--out", str(out), "--force"]) == 0  # how it writes, not whether
    old = yaml.safe_load((QUALITY_MODEL_DIR / "config.yaml").read_text())
    new = yaml.safe_load((out / "config.yaml").read_text())
    number, digest = new["version"].split("+")  # a re-fit names its head (its sha256's first 8 hex digits)
    assert int(number) == int(old["version"]) + 1 and new["weights"]["sha256"].startswith(digest)
    assert new["weights"]["sha256"] == hashlib.sha256((out / "head.npz").read_bytes()).hexdigest()
    before, after = FeatureHead.load(QUALITY_MODEL_DIR / "head.npz"), FeatureHead.load(out / "head.npz")
    assert np.array_equal(before.tag_weights, after.tag_weights)  # tags untouched
    assert not np.array_equal(before.score_weights, after.score_weights)


def _rated(folder: Path, rows: list[tuple[str, str]], header: str = "image,mos", bom: bool = False) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, _ in rows:
        Image.new("RGB", (8, 8), (len(name) * 9 % 255, 40, 40)).save(folder / name)
    text = header + "\n" + "".join(f"{name},{mos}\n" for name, mos in rows)
    (folder / "mos.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("bad", "said"),
    [("nan", "not a number from 0 to 1"), ("3.5", "1-5 as (r - 1) / 4"), ("-0.1", "from 0 to 1"), ("good", "'good'")],
)
def test_ratings_that_would_break_the_served_score_are_refused(tmp_path: Path, bad: str, said: str) -> None:
    """A NaN rating fitted a head whose every score was NaN (every quality request then failed with 500); a 1-5
    scale gave one score for every photo."""
    from tooling.quality_mos.calibrate_mos import read_ratings

    rows = [(f"p{i}.png", f"{i / 30:.3f}") for i in range(24)]
    rows[5] = ("p5.png", bad)
    with pytest.raises(ValueError, match="line 7") as error:
        read_ratings(_rated(tmp_path / "rated", rows))
    assert said in str(error.value)


def test_ratings_files_as_spreadsheets_write_them_are_read_and_repeats_refused(tmp_path: Path) -> None:
    from tooling.quality_mos.calibrate_mos import read_ratings

    rows = [(f"p{i}.png", f"{i / 30:.3f}") for i in range(24)]
    assert len(read_ratings(_rated(tmp_path / "a", rows, header="Image,MOS", bom=True))) == 24
    with pytest.raises(ValueError, match="rated twice"):
        read_ratings(_rated(tmp_path / "b", [*rows, rows[0]]))
    with pytest.raises(ValueError, match="same rating"):
        read_ratings(_rated(tmp_path / "c", [(name, "0.5") for name, _ in rows]))


def test_a_model_answering_nan_leaves_the_classical_verdict(tmp_path: Path) -> None:
    import numpy as np

    from pipelines.quality import learned_quality

    labels = ("blurry", "noisy")
    assert learned_quality({"score": np.array([np.nan]), "probs": np.array([0.1, 0.2])}, labels, "q:9") is None
    assert learned_quality({"score": np.array([0.5]), "probs": np.array([np.inf, 0.2])}, labels, "q:9") is None
    assert learned_quality({"score": np.array([0.5]), "probs": np.array([0.1, 0.2])}, labels, "q:9") is not None
