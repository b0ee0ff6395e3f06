"""Training pieces without a server: the dataset split, the softmax head and its report, the served graphs (ONNX
Runtime against numpy), version policies, and the training-job store."""

import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sqlalchemy as sa
from onnx import TensorProto, helper, numpy_helper

from serving.errors import BadRequestError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import JobStateError
from serving.jobs.workers import HOST, WorkerIdentity
from serving.model_versions import VersionPolicy, next_version, read_policy, scan_model_folder, write_policy
from serving.trained_head import ClassifierHead, classifier_graph, embedding_graph
from serving.training.dataset import LabelledImage, check_classes, label_of, split, usable_images
from serving.training.service import decide_promotion
from serving.training.softmax import train_head, validation_report
from serving.training.store import RUNNER_STALE_S, THIS_PROCESS, TrainingJobNotFoundError, TrainingStore


def _images(counts: dict[str, int]) -> list[LabelledImage]:
    return [
        LabelledImage(f"{label}/{i}.jpg", label, f"/d/{label}/{i}.jpg") for label, n in counts.items() for i in range(n)
    ]


def test_labels_come_from_the_first_folder() -> None:
    assert label_of("dogs/beagle.jpg") == "dogs" and label_of("dogs/sub/x.png") == "dogs"
    assert label_of("loose.jpg") is None


def test_split_is_fixed_stratified_and_a_cap_keeps_the_validation_images() -> None:
    images = _images({"a": 20, "b": 7, "c": 2})
    train, validation = split(images, 0.2)
    assert {i.label for i in validation} == {"a", "b", "c"}
    assert sum(i.label == "a" for i in validation) == 4 and sum(i.label == "c" for i in validation) == 1
    assert not {i.name for i in train} & {i.name for i in validation}
    again_train, again_validation = split(list(reversed(images)), 0.2)  # order of listing does not matter
    assert {i.name for i in again_validation} == {i.name for i in validation}
    capped_train, capped_validation = split(images, 0.2, max_train_per_class=3)
    assert capped_validation == validation and sum(i.label == "a" for i in capped_train) == 3
    assert {i.name for i in capped_train} <= {i.name for i in train}


def test_datasets_too_small_to_split_are_refused() -> None:
    with pytest.raises(BadRequestError, match="two categories"):
        check_classes(_images({"a": 5}))
    with pytest.raises(BadRequestError, match="fewer than 2"):
        check_classes(_images({"a": 5, "b": 1}))
    assert check_classes(_images({"b": 2, "a": 3})) == ["a", "b"]


def test_unreadable_images_are_left_out_and_a_category_left_without_examples_is_named() -> None:
    train, validation = split(_images({"a": 5, "b": 2, "c": 3}), 0.2)
    b_train = next(i.name for i in train if i.label == "b")
    a_train = next(i.name for i in train if i.label == "a")
    errors = {a_train: "InvalidImageError: truncated"}
    kept_train, kept_validation = usable_images(train, validation, ["a", "b", "c"], errors)
    assert a_train not in {i.name for i in kept_train} and len(kept_train) == len(train) - 1
    assert kept_validation == validation
    errors[b_train] = "InvalidImageError: image data is corrupt"
    with pytest.raises(BadRequestError, match=r"categories \['b'\] have no usable training image: 2 of 10 images") as e:
        usable_images(train, validation, ["a", "b", "c"], errors)
    assert "corrupt" in str(e.value)
    with pytest.raises(BadRequestError, match="no validation image is usable"):
        usable_images(train, validation, ["a", "b", "c"], {i.name: "unreadable" for i in validation})


def test_the_head_separates_separable_classes_and_the_report_counts_right() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.normal(size=(90, 16))
    head, l2 = train_head(x, y, ["x", "y", "z"])
    assert l2 > 0 and head.labels == ("x", "y", "z")
    yv = np.repeat(np.arange(3), 10)
    xv = centres[yv] + rng.normal(size=(30, 16))
    report = validation_report(head.predict(xv), yv, ["x", "y", "z"])
    assert report.accuracy >= 0.9 and report.images == 30
    assert np.trace(np.array(report.confusion)) == round(report.accuracy * 30)
    # A deliberately wrong prediction shows up in precision and recall.
    probs = np.eye(3)[[0, 0, 1, 2]]
    wrong = validation_report(probs, np.array([0, 1, 1, 2]), ["x", "y", "z"])
    assert wrong.accuracy == 0.75 and wrong.per_class[0].precision == 0.5 and wrong.per_class[1].recall == 0.5
    assert wrong.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def _tiny_base() -> onnx.ModelProto:
    """Conv -> Clip -> Conv -> Clip -> pool -> logits: the shape of MobileNetV2's tail, in miniature."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(5, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(rng.normal(size=(5, 7)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["c2"]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_base",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_served_graphs_compute_what_training_computed(tmp_path: Path) -> None:
    base = _tiny_base()
    x = np.random.default_rng(2).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    reference = ort.InferenceSession(base.SerializeToString())
    base.graph.output.append(helper.make_tensor_value_info("a2", TensorProto.FLOAT, None))
    a2 = ort.InferenceSession(base.SerializeToString()).run(["a2"], {"input": x})[0]
    del base.graph.output[1:]
    embedding = ort.InferenceSession(embedding_graph(base, 8).SerializeToString()).run(None, {"input": x})[0]
    np.testing.assert_allclose(embedding, a2.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert reference.run(None, {"input": x})[0].shape == (4, 7)  # the base itself is untouched
    rng = np.random.default_rng(3)
    head = ClassifierHead(
        rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.normal(size=(5, 3)), rng.normal(size=3), ("p", "q", "r")
    )
    head.save(tmp_path / "head.npz")
    loaded = ClassifierHead.load(tmp_path / "head.npz")
    probs = ort.InferenceSession(classifier_graph(base, loaded, 8, "probs").SerializeToString()).run(None, {"input": x})
    np.testing.assert_allclose(probs[0], loaded.predict(embedding), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs[0].sum(axis=1), 1.0, rtol=1e-5)


def test_a_head_with_inconsistent_shapes_is_refused(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "bad.npz",
        mean=np.zeros(4),
        scale=np.ones(4),
        weights=np.zeros((5, 2)),
        bias=np.zeros(2),
        labels=np.array(["a", "b"]),
    )
    with pytest.raises(ValueError, match="inconsistent"):
        ClassifierHead.load(tmp_path / "bad.npz")


def test_version_policies_and_layouts(tmp_path: Path) -> None:
    model = tmp_path / "cats"
    for version in ("1", "2", "10"):
        (model / version).mkdir(parents=True)
        (model / version / "config.yaml").write_text("name: cats\n")
    (model / "notes").mkdir()
    folder = scan_model_folder(model)
    assert folder is not None and folder.versioned and sorted(folder.versions, key=int) == ["1", "2", "10"]
    assert folder.served_versions == ["10"]  # Triton's default: the latest one
    assert VersionPolicy(policy="latest", count=2).served(["1", "2", "10"]) == ["10", "2"]
    write_policy(model, VersionPolicy(policy="specific", versions=["2"]))
    assert read_policy(model).versions == ["2"] and scan_model_folder(model).served_versions == ["2"]  # type: ignore[union-attr]
    assert VersionPolicy(policy="specific", versions=[]).served(["1"]) == []
    assert next_version(model) == "11" and next_version(tmp_path / "new") == "1"
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "config.yaml").write_text("name: flat\n")
    flat = scan_model_folder(tmp_path / "flat")
    assert flat is not None and not flat.versioned
    (model / "versions.yaml").write_text("policy: sometimes\n")
    with pytest.raises(ValueError, match="versions.yaml"):
        read_policy(model)


def test_a_canary_policy_is_checked() -> None:
    policy = VersionPolicy.model_validate(
        {"policy": "specific", "versions": ["1"], "canary": {"version": "2", "percent": 5}}
    )
    assert policy.canary is not None and policy.canary.percent == 5
    for bad in ({"version": "2", "percent": 0}, {"version": "2", "percent": 100}, {"version": "x", "percent": 5}):
        with pytest.raises(ValueError):
            VersionPolicy.model_validate({"policy": "specific", "versions": ["1"], "canary": bad})


def test_promotion_rule() -> None:
    assert decide_promotion("if_better", None, None, 0.5)  # a new model is served
    assert decide_promotion("if_better", "1", 0.80, 0.85) and not decide_promotion("if_better", "1", 0.85, 0.85)
    assert not decide_promotion("if_better", "1", None, 0.99)  # other labels: not comparable
    assert decide_promotion("always", "1", 0.9, 0.1) and not decide_promotion("never", None, None, 1.0)


def test_a_training_job_runs_once_while_its_runner_lives_and_again_when_it_died(tmp_path: Path) -> None:
    """Two Ingress replicas: one runs a job; the other, starting meanwhile, resumes unfinished jobs and must not run
    it too. A job whose runner died (a stopped server) is taken over."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    store = TrainingStore(engine)
    other_replica = WorkerIdentity(host=HOST, pid=os.getppid())  # what matters is whether the holder lives
    job = store.create("acme", None, "parcels", {})
    assert store.start(job.id)  # this process runs it
    assert not store.start(job.id, other_replica) and not store.start(job.id)  # a live runner: nobody else, not twice
    dead = store.create("acme", None, "parcels", {})
    gone = WorkerIdentity(host=HOST, pid=4_000_000, process_started_at=1.0)  # no such process (pid_max is 4194304)
    assert store.start(dead.id, gone)
    assert store.start(dead.id, THIS_PROCESS) and not store.start(dead.id, gone)  # taken over once
    elsewhere = store.create("acme", None, "parcels", {})
    assert store.start(elsewhere.id, WorkerIdentity(host="another-host", pid=7, process_started_at=1.0))
    assert not store.start(elsewhere.id)  # another host's runner reported progress just now
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE training_jobs SET heartbeat_at = :at WHERE id = :id"),
            {"at": time.time() - RUNNER_STALE_S - 1, "id": elsewhere.id},
        )
    assert store.start(elsewhere.id)  # silent for longer than RUNNER_STALE_S: dead
    store.finish(job.id, "completed", {})
    assert not store.start(job.id) and set(store.unfinished()) == {dead.id, elsewhere.id}


def test_training_job_store_scopes_tenants_and_keeps_final_states(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    store = TrainingStore(engine)
    job = store.create("acme", "key1", "parcels", {"model": "parcels"})
    assert job.status == "queued" and store.get(job.id, "acme").model == "parcels"
    with pytest.raises(TrainingJobNotFoundError):
        store.get(job.id, "other")
    assert store.unfinished() == [job.id] and store.start(job.id)
    store.progress(job.id, "features", 3, 10)
    assert store.get(job.id).progress == {"phase": "features", "done": 3, "total": 10}
    cancelled = store.cancel(job.id, "acme")
    assert cancelled.status == "cancelled" and store.get(job.id).status == "cancelled"
    assert not store.finish(job.id, "completed", {"version": "1"})  # the runner stopping later changes nothing
    assert store.get(job.id).status == "cancelled" and store.unfinished() == []
    with pytest.raises(JobStateError):
        store.cancel(job.id, "acme")
    other = store.create("acme", None, "parcels", {})
    store.record_version("parcels", "1", other, ["a", "b"], {"validation": {"accuracy": 0.9}}, promoted=True)
    store.record_version("parcels", "2", other, ["a", "b"], {"validation": {"accuracy": 0.95}}, promoted=True)
    rows = store.versions("parcels")
    assert [(r["version"], r["promoted"]) for r in rows] == [("1", False), ("2", True)]
    with engine.begin() as conn:
        assert conn.execute(sa.text("select count(*) from training_jobs")).scalar() == 2


@pytest.mark.parametrize(
    "label, message",
    [
        ("dam\u2028aged", "line-break"),  # labels.txt split it in two: the model never loaded, nor did the server
        ("a\x1cb", "control"),
        ("dog ", "spaces"),
        (" ", "blank"),
    ],
)
def test_category_names_that_cannot_be_served_as_one_label_are_refused(label: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        check_classes(_images({"intact": 3, label: 3}))


def test_categories_in_two_unicode_forms_are_refused_and_real_names_are_not() -> None:
    """'caf\u00e9' composed and decomposed would be two outputs a reader cannot tell apart; names with emoji
    sequences (U+200D), Persian (U+200C), case pairs (A, a) or a space inside are categories like any other."""
    with pytest.raises(BadRequestError, match="two Unicode forms"):
        check_classes(_images({"caf\u00e9": 3, "cafe\u0301": 3}))
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    names = ["\U0001f469\u200d\U0001f373", persian, "A", "a", "golden retriever"]
    assert check_classes(_images({name: 3 for name in names})) == sorted(names)


def test_labels_files_split_only_at_newlines(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from serving.repository import read_labels

    (tmp_path / "labels.txt").write_text("caf\u00e9 \u00e0 la\x85carte\nintact\r\n", encoding="utf-8")
    config = SimpleNamespace(name="pets", labels="labels.txt", outputs=[SimpleNamespace(name="probs", shape=[1, 2])])
    assert read_labels(config, tmp_path) == ("caf\u00e9 \u00e0 la\x85carte", "intact")  # type: ignore[arg-type]


def test_a_validation_image_whose_bytes_are_in_training_is_left_out() -> None:
    """The split goes by name: a file stored twice ('IMG_7.jpg', 'IMG_7 (1).jpg') could sit on both sides, and the
    held-out accuracy was partly measured on training images (14 of 20 in the review's probe)."""
    from serving.training.dataset import without_copies_of_training

    train, validation = split(_images({"a": 10, "b": 10}), 0.2)
    digests = {image.name: f"{i:064x}" for i, image in enumerate(train + validation)}
    digests[validation[0].name] = digests[train[0].name]  # the same bytes under another name
    kept, copies = without_copies_of_training(train, validation, digests)
    assert copies == 1 and validation[0] not in kept and len(kept) == len(validation) - 1
    for image in validation:
        digests[image.name] = digests[train[0].name]
    with pytest.raises(BadRequestError, match="every one is a copy"):
        without_copies_of_training(train, validation, digests)


def test_labels_naming_images_the_collection_does_not_hold_are_refused() -> None:
    """A mistyped name was dropped in silence, and with it a whole category ('left out: 0')."""
    from pipelines.collections.record import ImageRecord
    from serving.collections.store import RecordedImage
    from serving.training.dataset import collection_dataset

    images = [RecordedImage(ImageRecord(name=f"{i}.jpg"), None, f"/d/{i}.jpg") for i in range(4)]
    images.append(RecordedImage(ImageRecord(name="failed.jpg", ok=False)))  # listed by the collection too
    labels = {"0.jpg": "box", "1.jpg": "box", "2.jpg": "envelope", "IMG_3.jpg": "damaged"}
    with pytest.raises(BadRequestError, match=r"1 labelled name\(s\) are not in the collection, e.g. \['IMG_3.jpg'\]"):
        collection_dataset(images, labels, {})
    labels = {k: v for k, v in labels.items() if k != "IMG_3.jpg"} | {"failed.jpg": "box"}
    used, left_out = collection_dataset(images, labels, {})
    assert [i.name for i in used] == ["0.jpg", "1.jpg", "2.jpg"] and left_out == 2  # 3.jpg unlabelled, failed.jpg
