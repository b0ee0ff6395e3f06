"""Model versions on disk and which of them a server serves (Triton's layout and version policies).

Two layouts are read, in the repository (`models/`) and in the trained-models folder alike:

- **flat**: `<name>/config.yaml` (+ labels, card, committed weights): one version, the config's `version`;
- **versioned**: `<name>/<version>/config.yaml` for every version (a positive integer, as in Triton), and an
  optional `<name>/versions.yaml` holding the version policy:

      policy: latest      # serve the highest `count` versions (the default, count 1)
      count: 1
      # or
      policy: specific    # serve exactly these versions (none: the model is registered, not served)
      versions: ["3"]
      canary:             # optional: another version takes this share of the model's requests
        version: "4"
        percent: 5

A training job writes a new version folder; promoting a version writes `specific: [that version]`. Deleting a version
(`DELETE /v1/models/{m}/versions/{v}`) adds its number to `<name>/.deleted_versions`: it is never given again. A model
folder removed by a deletion (its last version, or the whole model) leaves the highest number it gave in
`<trained models>/.retired-models/<name>` (one JSON line per removal, with the tenant that removed it): a model
trained later under that name goes on from there. The folder is hidden: never listed, scanned or polled as a model;
tenant erasure removes the tenant's lines.
"""

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from serving.trained_models_lock import TrainedModelsLock

if TYPE_CHECKING:
    from serving.config.settings import ServerSettings

POLICY_FILE = "versions.yaml"
METRICS_FILE = "metrics.json"  # what a training job measured for the version (serving.training.registry)
RETIRED_FILE = ".deleted_versions"  # numbers of the versions deleted from a model folder, one a line
RETIRED_MODELS_DIR = ".retired-models"  # beside the model folders: the highest number of each removed model folder
RECORDS_LOCK = ".lock"  # in RETIRED_MODELS_DIR: appends and erasure's rewrites one at a time
# a version a client names (a canary to start, a version to delete): a version folder's name, 1 to 999,999,999
VERSION_NAME = r"^[1-9][0-9]{0,8}$"


class CanarySplit(BaseModel):
    """A second version answering `percent` of the model's requests (the rest go to the served version)."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[1-9][0-9]*$")
    percent: float = Field(gt=0, lt=100)


class VersionPolicy(BaseModel):
    """Which versions are served: the newest `count`, or a `specific` list; optionally a canary split."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["latest", "specific"] = "latest"
    count: int = Field(default=1, ge=1, le=16)
    versions: list[str] = Field(default_factory=list)
    canary: CanarySplit | None = None

    def served(self, available: list[str]) -> list[str]:
        """The versions to serve among `available`, newest first."""
        ordered = sorted(available, key=int, reverse=True)
        if self.policy == "latest":
            return ordered[: self.count]
        return [v for v in ordered if v in self.versions]


@dataclass(frozen=True)
class ModelFolder:
    """One model's folder: its versions' config files and its policy."""

    name: str
    root: Path  # <repository>/<name>
    versions: dict[str, Path] = field(default_factory=dict)  # version -> its folder (flat: the model folder)
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    versioned: bool = False

    @property
    def served_versions(self) -> list[str]:
        if not self.versioned:
            return list(self.versions)
        return self.policy.served(list(self.versions))


def read_policy(root: Path) -> VersionPolicy:
    path = root / POLICY_FILE
    if not path.is_file():
        return VersionPolicy()
    try:
        return VersionPolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_policy(root: Path, policy: VersionPolicy) -> None:
    """Replace `<name>/versions.yaml` atomically."""
    _replace_policy(root, yaml.safe_dump(policy.model_dump(exclude_none=True), sort_keys=False).encode())


def _replace_policy(root: Path, data: bytes) -> None:
    """Write through a temporary file of this writer's own (a shared name let two writers replace each other's
    half-written file, or find it gone), its bytes on disk before the rename: after a power loss the policy is the
    old one or the new one, never an empty file (which reads as `policy: latest`: the newest version served)."""
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{POLICY_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, root / POLICY_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def policy_bytes(root: Path) -> bytes | None:
    """The policy file as it is (None: there is none), to put back with `restore_policy`, readable or not."""
    try:
        return (root / POLICY_FILE).read_bytes()
    except FileNotFoundError:
        return None


def restore_policy(root: Path, data: bytes | None) -> None:
    if data is None:
        (root / POLICY_FILE).unlink(missing_ok=True)
    else:
        _replace_policy(root, data)


def scan_model_folder(root: Path, flat_version: str | None = None, policy: bool = True) -> ModelFolder | None:
    """The model at `root`, or None when it holds no config. `flat_version`: the flat config's version string.
    `policy` False: the versions without reading the policy file (which raises ValueError when unreadable)."""
    if (root / "config.yaml").is_file():
        return ModelFolder(root.name, root, {flat_version or "1": root})
    versions = {
        child.name: child
        for child in root.iterdir()
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0 and (child / "config.yaml").is_file()
    }
    if not versions:
        return None
    return ModelFolder(root.name, root, versions, read_policy(root) if policy else VersionPolicy(), versioned=True)


def without_repository_path(text: str, repository: Path) -> str:
    """`text` (an error's) with the repository folder's path cut, so a file is named from its model's folder on
    (`parcels/2/config.yaml`): reasons and refusals are shown to API callers and operators' logs alike."""
    return text.replace(f"{repository}{os.sep}", "")


def model_roots(repository: Path) -> list[Path]:
    """Sub-folders of a repository that may hold a model, by name."""
    if not repository.is_dir():
        return []
    return sorted(child for child in repository.iterdir() if child.is_dir() and not child.name.startswith("."))


def next_version(root: Path) -> str:
    """The version a new folder under `root` gets: one more than the highest there or deleted from there
    (`retire_version`), or given by an earlier folder of that name a deletion removed (`record_removed_model`); 1 for
    a new name."""
    removed = removed_model_highest(root)
    if not root.is_dir():
        return str(removed + 1)
    existing = [int(c.name) for c in root.iterdir() if c.is_dir() and c.name.isdigit()]
    return str(max([*existing, *retired_versions(root), removed]) + 1)


def _removed_model_record(root: Path) -> Path:
    return root.parent / RETIRED_MODELS_DIR / root.name


def _removed_model_lines(record: Path) -> list[dict[str, Any]]:
    try:
        text = record.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the others still count
        if isinstance(entry, dict) and isinstance(entry.get("highest"), int):
            lines.append(entry)
    return lines


def removed_model_highest(root: Path) -> int:
    """The highest version number earlier folders at `root` gave before a deletion removed them (0: none)."""
    return max((int(entry["highest"]) for entry in _removed_model_lines(_removed_model_record(root))), default=0)


def record_removed_model(root: Path, tenant: str, taken: Iterable[str] = ()) -> None:
    """Before the model folder `root` is removed by a deletion: keep the highest number it gave (its versions, its
    retired numbers, `taken`: the numbers the job database recorded) where `next_version` reads it, so no number of
    the name is given twice. One appended line (replicas removing at once each add theirs)."""
    highest = max([int(next_version(root)) - 1, *(int(v) for v in taken if v.isdecimal())])
    if highest <= 0:
        return
    record = _removed_model_record(root)
    record.parent.mkdir(parents=True, exist_ok=True)
    with _records_lock(record.parent), open(record, "a", encoding="utf-8") as out:
        out.write(json.dumps({"highest": highest, "tenant": tenant}) + "\n")


def forget_removed_models(trained_models: Path, tenant: str) -> list[str]:
    """Tenant erasure: drop `tenant`'s lines from the removed models' records (a record left empty goes); returns
    the names whose record changed."""
    folder = trained_models / RETIRED_MODELS_DIR
    if not folder.is_dir():
        return []
    with _records_lock(folder):
        return _forget_tenant_lines(folder, tenant)


def _records_lock(folder: Path) -> TrainedModelsLock:
    """An exclusive `flock` on the removed models' records (`<folder>/.lock`), for an append (a deletion, on any
    replica) and for tenant erasure's rewrite, which would otherwise drop a line appended between its read and its
    replace. Its own lock, not the trained-models folder's: erasure (the CLI) never waits on a registration."""
    return TrainedModelsLock(folder, RECORDS_LOCK)


def _forget_tenant_lines(folder: Path, tenant: str) -> list[str]:
    changed = []
    for record in sorted(r for r in folder.iterdir() if not r.name.startswith(".")):
        lines = _removed_model_lines(record)
        kept = [entry for entry in lines if entry.get("tenant") != tenant]
        if len(kept) == len(lines):
            continue
        changed.append(record.name)
        if not kept:
            record.unlink(missing_ok=True)
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(json.dumps(entry) + "\n" for entry in kept))
        os.replace(tmp, record)
    return changed


def retired_versions(root: Path) -> list[int]:
    """The versions deleted from the model folder `root` (their numbers are never given again)."""
    try:
        text = (root / RETIRED_FILE).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split() if line.isdecimal()]


def retire_version(root: Path, version: str) -> None:
    """Record that `version` is deleted from the model folder `root` before its folder goes, so `next_version`
    never gives its number again. One appended line: replicas deleting versions of one model at once each add
    theirs (a file replaced whole could lose one)."""
    with open(root / RETIRED_FILE, "a", encoding="ascii") as marker:
        marker.write(f"{int(version)}\n")


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """A version's recorded metrics (training jobs write them), or None."""
    try:
        return json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recorded_accuracy(folder: Path) -> float | None:
    """The validation accuracy a training job recorded for the version in `folder`, or None."""
    metrics = read_metrics(folder) or {}
    accuracy = (metrics.get("validation") or {}).get("accuracy")
    return float(accuracy) if isinstance(accuracy, (int, float)) else None


# ---- what the poll loop compares (serving.model_poll) --------------------------------------------------------
@dataclass(frozen=True)
class FolderState:
    """What a model folder says is served, and the files that serving would read (a change in any reloads)."""

    served: tuple[str, ...]  # the served version (empty: none), then the canary version if any
    canary_percent: float
    files: tuple[tuple[str, int, int], ...]  # (path, mtime_ns, size) of the served versions' files
    versions: tuple[str, ...]  # every version folder (a new unserved one only changes the listing)
    error: str = ""  # the folder cannot be read (an invalid policy): loading says why

    def same_serving(self, other: "FolderState | None") -> bool:
        """Whether `other` serves the same versions from the same files (only the listing may differ)."""
        return other is not None and (self.served, self.canary_percent, self.files, self.error) == (
            other.served,
            other.canary_percent,
            other.files,
            other.error,
        )


def _file_stats(folders: list[Path]) -> tuple[tuple[str, int, int], ...]:
    stats = []
    for folder in folders:
        for child in sorted(folder.iterdir()):
            if child.is_file() and not child.name.startswith("."):
                info = child.stat()
                stats.append((str(child), info.st_mtime_ns, info.st_size))
    return tuple(stats)


def folder_state(root: Path) -> FolderState | None:
    """The state of the model folder `root`; None when no model is there (removed, or no config)."""
    try:
        folder: ModelFolder | None = scan_model_folder(root) if root.is_dir() else None
    except ValueError as exc:  # an invalid versions.yaml
        return FolderState((), 0.0, (), (), error=str(exc))
    except OSError:
        return None
    if folder is None:
        return None
    served = folder.served_versions[:1]
    canary = folder.policy.canary if folder.versioned else None
    if canary is not None:
        served = [*served, canary.version]
    try:
        files = _file_stats([folder.versions[v] for v in served if v in folder.versions])
    except OSError:  # a version folder went away while it was read: the next poll sees the result
        return None
    return FolderState(
        tuple(served),
        canary.percent if canary is not None else 0.0,
        files,
        tuple(sorted(folder.versions, key=lambda v: int(v) if v.isdigit() else 0)),
    )


MAX_FOLDER_NAME_BYTES = 255  # NAME_MAX: a longer name is no folder (Path.is_dir raises ENAMETOOLONG for it)


def is_folder_name(name: str) -> bool:
    """Whether `name` names a folder inside a repository rather than a path (`..`, `a/b`, `/abs`), and could be one:
    a name of more than 255 bytes (or with a NUL) made the model-control routes' `is_dir()` raise, a 500."""
    if name in ("", ".", "..") or "\x00" in name or len(os.fsencode(name)) > MAX_FOLDER_NAME_BYTES:
        return False
    return Path(name).name == name


def model_folder(settings: "ServerSettings", name: str) -> Path | None:
    """The folder holding model `name`: the repository's, else the trained-models folder's; None: neither (or a name
    that can be no folder: a client's text)."""
    if not is_folder_name(name):
        return None
    for root in (settings.model_repository, settings.trained_models):
        if (root / name).is_dir():
            return root / name
    return None


def read_states(settings: "ServerSettings", names: set[str]) -> dict[str, FolderState | None]:
    """The state of every model in `names` and of every model folder in the trained-models folder (a model a
    training job made on another replica is new here)."""
    wanted = set(names) | {root.name for root in model_roots(settings.trained_models)}
    states: dict[str, FolderState | None] = {}
    for name in sorted(wanted):
        folder = model_folder(settings, name)
        states[name] = folder_state(folder) if folder is not None else None
    return states


def model_state(settings: "ServerSettings", name: str) -> FolderState | None:
    folder = model_folder(settings, name)
    return folder_state(folder) if folder is not None else None
