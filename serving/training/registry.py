"""A trained head becomes a model version: `<trained models>/<name>/<version>/` with config.yaml, labels.txt, the
head, metrics.json and a model card written from what the job did. Versions are never overwritten; which one is
served is the model's version policy (serving.model_versions)."""

import errno
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.config.model_config import load_model_config
from serving.config.model_entry import ModelEntry
from serving.errors import BadRequestError, ServiceError
from serving.model_versions import (
    METRICS_FILE,
    POLICY_FILE,
    VersionPolicy,
    next_version,
    read_metrics,
    read_policy,
    scan_model_folder,
    write_policy,
)
from serving.repository import ModelRepository
from serving.service import IMAGE_MODEL_NAME
from serving.trained_head import ClassifierHead
from serving.training.softmax import ValidationReport
from serving.weights import sha256_of

HEAD_FILE = "head.npz"
TRAINED_ON_FILE = "trained_on.txt"  # the sha256 of each training image's bytes, one a line (serving.training.compare)
VERSION_ATTEMPTS = 20  # version numbers tried when other replicas register versions of the same model at once


class VersionPolicyError(ServiceError):
    """A trained model's `versions.yaml` cannot be read: a file for its operator to repair, not a server fault."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    kind = "invalid_version_policy"


def _policy_error(name: str, exc: Exception) -> VersionPolicyError:
    """What is wrong with model `name`'s policy file and how to repair it, naming the file by its place in the
    trained-models folder (never the server's path)."""
    cause = exc.__cause__ or exc
    mark = getattr(cause, "problem_mark", None)
    if isinstance(cause, yaml.MarkedYAMLError) and mark is not None:
        wrong = f"it is not valid YAML ({cause.problem} at line {mark.line + 1}, column {mark.column + 1})"
    elif isinstance(cause, yaml.YAMLError):
        wrong = f"it is not valid YAML ({str(cause).splitlines()[0]})"
    elif isinstance(cause, UnicodeDecodeError):
        wrong = "it is not UTF-8 text"
    elif isinstance(cause, ValidationError):
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in cause.errors()[:3])
        wrong = f"it is not a version policy ({fields})"
    else:
        wrong = f"it cannot be read ({type(cause).__name__})"
    return VersionPolicyError(
        f"model '{name}': its version policy {name}/{POLICY_FILE} (in the trained-models folder) is unusable: {wrong}."
        f" Repair it, then try again: `imgserve models promote {name} VERSION` (admin) rewrites it, or"
        f' correct it (policy: latest | specific, versions: ["N"]), or delete it to serve the newest version'
    )


def model_policy(root: Path, name: str) -> VersionPolicy:
    """The version policy of `<root>/<name>`; `VersionPolicyError` when its file is not one (an OSError is the
    disk's, a server fault)."""
    try:
        return read_policy(root / name)
    except ValueError as exc:
        raise _policy_error(name, exc) from exc


@dataclass(frozen=True)
class TrainingRecipe:
    """What a model card says about how a version was made."""

    job_id: str
    dataset: str
    backbone: str  # the embedding model the features came from
    base: str  # the classifier whose graph carries the head
    train_images: int
    validation_images: int
    skipped_images: int
    validation_fraction: float
    max_train_per_class: int | None
    l2: float
    seconds: float
    created_by: str
    tenant: str


def version_config(name: str, version: str, base: ModelEntry, labels: list[str], head_sha: str) -> dict[str, Any]:
    """The new version's config.yaml: the base classifier's input and preprocessing, K probabilities out."""
    base_config = base.config
    return {
        "name": name,
        "version": version,
        "task": "classification",
        "description": f"{len(labels)} categories trained on {base_config.name}'s penultimate layer",
        "input": base_config.input.model_dump(),
        "preprocessing": base_config.preprocessing.model_dump(),
        "outputs": [{"name": "probs", "dtype": "FP32", "shape": [len(labels)], "kind": "probabilities"}],
        "labels": "labels.txt",
        "batching": base_config.batching.model_dump(),
        "backends": ["onnxruntime"],
        "weights": {"file": HEAD_FILE, "format": "classifier_head", "sha256": head_sha, "committed": True},
        "export": {"source": "classifier_head", "base": base_config.name, "opset": 13},
    }


def model_card(name: str, version: str, recipe: TrainingRecipe, report: ValidationReport) -> str:
    rows = "\n".join(f"| {m.label} | {m.support} | {m.precision:.3f} | {m.recall:.3f} |" for m in report.per_class)
    return f"""# {name}, version {version}

Trained by imgserve training job `{recipe.job_id}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
by `{recipe.created_by}` (tenant `{recipe.tenant}`).

## Data

- Dataset: `{recipe.dataset}`, one folder per category ({len(report.labels)} categories: {", ".join(report.labels)}).
- Split: {recipe.train_images} training and {recipe.validation_images} validation images; validation is a fixed
  {recipe.validation_fraction:.0%} of each category chosen by a salted hash of the image name (the same images for
  every version trained on this dataset){
        f"; training capped at {recipe.max_train_per_class} images per category" if recipe.max_train_per_class else ""
    }.
- {recipe.skipped_images} images were left out: they could not be read or decoded, or the same image is in two
  categories.

## Recipe

- Features: `{recipe.backbone}` (the penultimate layer of `{recipe.base}`), computed by the server's own decode and
  batched model stage, cached per image content.
- Head: multinomial logistic regression on standardised features, class-balanced, L2 {recipe.l2:g} (chosen by 3-fold
  cross-validation on the training images only). Served as `{recipe.base}`'s graph cut at that layer + the head +
  softmax.
- Training took {recipe.seconds:.1f} s.

## Results on the validation images

Accuracy {report.accuracy:.3f}, balanced accuracy {report.balanced_accuracy:.3f} on {report.images} images.

| category | images | precision | recall |
| --- | ---: | ---: | ---: |
{rows}

Confusion matrix (rows: true category, columns: predicted, in the order above) is in `{METRICS_FILE}`.
"""


def register_version(
    root: Path,
    name: str,
    base: ModelEntry,
    head: ClassifierHead,
    recipe: TrainingRecipe,
    report: ValidationReport,
    taken: Iterable[str] = (),
    trained_on: Iterable[str] = (),
) -> str:
    """Write the next version of `name` under `root` (a temporary folder renamed into place: a scan never sees half
    a version) and return its version string. The config is validated before the rename. Replicas sharing the
    trained-models volume may register a version of the same model at once: the rename is what allocates the number
    (it fails when that version's folder exists), so the one that loses writes its files for the next number and
    tries again. `taken`: numbers the job database has recorded for the model, whose folders may have been removed
    since (a number is never given twice: its row would collide). `trained_on`: the training images' sha256. The
    temporary folder never stays behind."""
    model_root = root / name
    model_root.mkdir(parents=True, exist_ok=True)
    staging = model_root / f".staging-{recipe.job_id}"
    first_free = 1 + max((int(v) for v in taken if v.isdecimal()), default=0)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        head.save(staging / HEAD_FILE)
        head_sha = sha256_of(staging / HEAD_FILE)
        (staging / "labels.txt").write_text("".join(f"{label}\n" for label in head.labels), encoding="utf-8")
        (staging / TRAINED_ON_FILE).write_text("".join(f"{d}\n" for d in sorted(set(trained_on))), encoding="ascii")
        for _ in range(VERSION_ATTEMPTS):
            version = str(max(int(next_version(model_root)), first_free))
            _write_version_files(staging, name, version, base, list(head.labels), head_sha, recipe, report)
            try:
                staging.rename(model_root / version)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue  # another replica took this number meanwhile
            return version
        raise RuntimeError(f"model '{name}': no free version number after {VERSION_ATTEMPTS} attempts")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_version_files(
    staging: Path,
    name: str,
    version: str,
    base: ModelEntry,
    labels: list[str],
    head_sha: str,
    recipe: TrainingRecipe,
    report: ValidationReport,
) -> None:
    """The files of `staging` that name its version: config.yaml (validated as the server will read it), metrics,
    model card."""
    config = version_config(name, version, base, labels, head_sha)
    (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    load_model_config(staging / "config.yaml")  # what the server will read: refuse to register an invalid one
    metrics = {"version": version, "job_id": recipe.job_id, "validation": report.to_dict(), "recipe": recipe.__dict__}
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (staging / "MODEL_CARD.md").write_text(model_card(name, version, recipe, report), encoding="utf-8")


def version_of_job(model_root: Path, job_id: str) -> str | None:
    """The version a run of `job_id` registered, or None. A server that stopped after the rename (while it loaded the
    version, or before the job was recorded completed) runs the job again: that run finishes this version rather than
    adding a copy of it."""
    if not model_root.is_dir():
        return None
    for child in sorted(model_root.iterdir()):
        if child.name.isdecimal() and (read_metrics(child) or {}).get("job_id") == job_id:
            return child.name
    return None


def promote(root: Path, name: str, version: str) -> None:
    """Serve exactly `version` of `name` from now on (the policy file; model control loads it)."""
    if not (root / name / version / "config.yaml").is_file():
        raise FileNotFoundError(f"model '{name}' has no version {version}")
    write_policy(root / name, VersionPolicy(policy="specific", versions=[version]))


def served_version(root: Path, name: str) -> str | None:
    """The version the policy serves now (before this job's new one is considered), or None for a new model;
    `VersionPolicyError` when the policy file cannot be read."""
    try:
        folder = scan_model_folder(root / name) if (root / name).is_dir() else None
    except ValueError as exc:  # only the policy raises it (an OSError is the disk's, a server fault)
        raise _policy_error(name, exc) from exc
    served = folder.served_versions if folder is not None else []
    return served[0] if served else None


def check_trainable_name(repository: ModelRepository, model: str) -> None:
    """400 for a name the server already answers as a model other than a trained one: a repository model or the OIP
    image-level model (`classify`). A trained model of that name would be a second model under one name, each route
    answering one of them (`/v1/classify?model=classify` the trained head, `/v2/models/classify` the image model)."""
    if model == IMAGE_MODEL_NAME:
        raise BadRequestError(f"'{model}' is the OIP image-level model; training adds versions to trained models")
    listed = repository.versions.get(model)
    if listed and not any(e.folder.is_relative_to(repository.settings.trained_models) for e in listed.values()):
        raise BadRequestError(f"'{model}' is a repository model; training adds versions to trained models")
