"""The model repository: one folder per model with `config.yaml`, labels and a model card.

`ModelRepository.scan` validates every config and resolves each model's artefacts. A model whose
weights are missing, or that no preferred backend can load here, stays listed with the reason, so
`/v1/models` can say why it is not served instead of silently hiding it.
"""

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from serving.config.model_config import ModelConfig, load_model_config
from serving.config.model_entry import ModelArtifacts, ModelEntry
from serving.config.settings import ServerSettings
from serving.feature_head import GRAPH_VERSION, save_atomically, write_quality_graph
from serving.model_versions import (
    POLICY_FILE,
    is_folder_name,
    model_roots,
    scan_model_folder,
    without_repository_path,
)
from serving.quantize import served_int8
from serving.trained_head import HEAD_GRAPH_VERSION, ClassifierHead, classifier_graph, embedding_graph
from serving.weights import WeightsError, locate_weights, logged_weights_error, sha256_of, weights_problems_kept

logger = logging.getLogger(__name__)
__all__ = ["ModelArtifacts", "ModelEntry", "ModelRepository", "UnknownModelError", "exported_onnx_path"]


class UnknownModelError(KeyError):
    """No model of that name in the repository (HTTP 404 / gRPC NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


def exported_onnx_path(config: ModelConfig, settings: ServerSettings) -> Path:
    """Cache location of a build-time ONNX export (a build output, never committed)."""
    return (
        settings.cache_dir
        / "onnx"
        / f"{config.name}-{config.weights.sha256[:8]}-opset{config.export.opset if config.export else 0}.onnx"
    )


def shown_path(path: Path, model: str) -> str:
    """`path` from its model's folder on (`parcels/2/labels.txt`): what a reason listed to API callers may name of
    the server's files."""
    parts = path.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == model:
            return "/".join(parts[i:])
    return path.name


def read_labels(config: ModelConfig, folder: Path) -> tuple[str, ...]:
    """Labels, one per output index; empty when the model has none."""
    if not config.labels:
        return ()
    shown = shown_path(folder / config.labels, config.name)  # reasons are listed to callers: no server paths
    try:
        # one label per "\n"-ended line: str.splitlines also splits at U+2028, \x1c-\x1e and others a label may hold
        lines = (folder / config.labels).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise ValueError(f"{shown}: cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if lines and lines[-1] == "":
        lines.pop()
    expected = config.outputs[0].shape[-1]
    if len(lines) != expected:
        raise ValueError(f"{shown}: {len(lines)} labels but output '{config.outputs[0].name}' has {expected}")
    return tuple(line.strip() for line in lines)


def scan_entry(config: ModelConfig, folder: Path, settings: ServerSettings, check_backends: bool) -> ModelEntry:
    """One version's entry: labels and verified artefacts, or the reason it cannot be served here."""
    from serving.backends.registry import backend_plan  # local import: backends import this module

    labels = read_labels(config, folder)
    try:
        artifacts = resolve_artifacts(config, folder, settings)
    except WeightsError as exc:
        return ModelEntry(config, folder, labels, unavailable_reason=str(exc))
    entry = ModelEntry(config, folder, labels, artifacts)
    if check_backends:
        chosen, reasons = backend_plan(entry)
        if chosen is None:
            return ModelEntry(config, folder, labels, artifacts, "no backend can run it here: " + "; ".join(reasons))
    return entry


@dataclass(frozen=True)
class ScannedModel:
    """One model folder as read: the served version, a canary version and its share, every version's entry."""

    served: ModelEntry | None
    versions: dict[str, ModelEntry]
    canary: ModelEntry | None = None  # keyed "<name>@<version>" (ModelEntry.key)
    canary_percent: float = 0.0


def scan_model(root: Path, settings: ServerSettings, check_backends: bool) -> ScannedModel | None:
    """The model folder `root`, or None when no model is there. Versions the policy does not serve are listed with
    that reason and their artefacts are not built."""
    folder = scan_model_folder(root)
    if folder is None:
        return None
    split = folder.policy.canary if folder.versioned else None
    wanted = set(folder.served_versions[:1]) | ({split.version} if split is not None else set())
    configs: dict[str, tuple[ModelConfig, Path]] = {}
    unreadable: dict[str, tuple[Path, str]] = {}  # versions not served whose config cannot be read (a copy going on)
    for version, path in folder.versions.items():
        try:
            config = version_config(root, path, version if folder.versioned else None)
        except (OSError, ValueError) as exc:
            if not folder.versioned or version in wanted:
                raise
            unreadable[version] = (path, without_repository_path(str(exc), root.parent))  # listed: no server paths
            continue
        configs[config.version] = (config, path)
    served = folder.served_versions[:1] if folder.versioned else list(configs)
    if split is not None and (split.version not in configs or split.version in served or not served):
        raise ValueError(f"{root / POLICY_FILE}: canary version {split.version} must exist and differ from {served}")
    entries: dict[str, ModelEntry] = {}
    for version, (config, path) in configs.items():
        if version in served or (split is not None and version == split.version):
            entries[version] = scan_entry(config, path, settings, check_backends)
        else:
            reason = f"version {version} is not served: {POLICY_FILE} serves {served or 'none'}"
            try:
                labels = read_labels(config, path)
            except (OSError, ValueError) as exc:  # a broken version that is not served must not stop the others
                labels, reason = (), f"{reason}; its labels cannot be read: {exc}"
            entries[version] = ModelEntry(config, path, labels, unavailable_reason=reason)
    template = next(iter(configs.values()), None)
    for version, (path, problem) in unreadable.items():  # listed, never loaded: a readable version's config stands in
        if template is not None:
            reason = f"version {version} is not served and its config.yaml cannot be read: {problem}"
            stand_in = template[0].model_copy(update={"version": version})
            entries[version] = ModelEntry(stand_in, path, (), unavailable_reason=reason)
    if split is None:
        return ScannedModel(entries[served[0]] if served else None, entries)
    canary = dataclasses.replace(entries[split.version], stage_key=f"{root.name}@{split.version}")
    return ScannedModel(entries[served[0]], entries, canary, split.percent)


def version_config(root: Path, path: Path, version: str | None) -> ModelConfig:
    """A version folder's config, checked against its model folder's name and (versioned) its folder's version."""
    config = load_model_config(path / "config.yaml")
    if config.name != root.name:
        raise ValueError(f"{path / 'config.yaml'}: name '{config.name}' must equal the folder name '{root.name}'")
    if version is not None and config.version != version:
        raise ValueError(f"{path / 'config.yaml'}: version '{config.version}' must equal its folder '{version}'")
    return config


def resolve_artifacts(config: ModelConfig, folder: Path, settings: ServerSettings) -> ModelArtifacts:
    """Verified weights -> artefacts; raises `WeightsError` when the weights are missing or wrong."""
    weights = locate_weights(config.name, config.weights, folder, settings.weights_dir)
    if config.weights.format == "onnx":
        return ModelArtifacts(onnx=weights, onnx_int8=served_int8(config, settings))
    if config.weights.format == "torchscript":
        return ModelArtifacts(torchscript=weights)
    if config.weights.format in ("feature_head", "classifier_head"):
        return ModelArtifacts(onnx=grafted_onnx(config, weights, settings), state_dict=weights)
    if config.weights.format == "embedding":
        return ModelArtifacts(onnx=embedding_onnx(config, weights, settings))
    exported = exported_onnx_path(config, settings)
    return ModelArtifacts(onnx=exported if exported.is_file() else None, state_dict=weights)


def embedding_onnx(config: ModelConfig, classifier: Path, settings: ServerSettings) -> Path:
    """The embedding model's ONNX (the verified classifier cut to its penultimate layer), built when absent."""
    target = settings.cache_dir / "onnx" / f"{config.name}-{config.weights.sha256[:8]}-e{HEAD_GRAPH_VERSION}.onnx"
    if not target.is_file():
        logger.info("building %s from %s", target.name, classifier.name)
        save_atomically(embedding_graph(onnx.load(str(classifier)), config.input.size[0]), target)
    return target


def grafted_onnx(config: ModelConfig, head: Path, settings: ServerSettings) -> Path:
    """A head model's ONNX (feature head or trained classifier head) in the cache directory, built here (in about a
    second) when absent.

    The graph is a build output keyed by the head's sha256 and `GRAPH_VERSION`; the base model's weights are
    located and verified like any other (a missing base raises `WeightsError`: the model is listed unavailable).
    """
    assert config.export is not None and config.export.base
    version = GRAPH_VERSION if config.weights.format == "feature_head" else f"c{HEAD_GRAPH_VERSION}"
    target = settings.cache_dir / "onnx" / f"{config.name}-{config.weights.sha256[:8]}-g{version}.onnx"
    if target.is_file():
        return target
    base_folder = settings.model_repository / config.export.base
    try:
        base = load_model_config(base_folder / "config.yaml")
    except (OSError, ValueError) as exc:
        raise logged_weights_error(  # the answer names no server path; the log has the error's own text
            config.name,
            f"base model '{config.export.base}' of '{config.name}' is not usable: its config.yaml cannot be read"
            f" ({_reason(exc)}; the server log says more)",
            f"base model '{config.export.base}' of '{config.name}' is not usable: {exc}",
        ) from exc
    base_weights = locate_weights(base.name, base.weights, base_folder, settings.weights_dir)
    if config.weights.format == "classifier_head":
        logger.info("building %s from %s + %s", target.name, base_weights.name, head.name)
        try:
            trained = ClassifierHead.load(head)
        except (OSError, ValueError, KeyError) as exc:
            raise logged_weights_error(
                config.name,
                f"'{config.name}' version {config.version}: head {head.name} is unreadable ({_reason(exc)}; the server"
                " log says more)",
                f"'{config.name}' version {config.version}: head {head.name} is unreadable: {exc}",
            ) from exc
        if len(trained.labels) != config.outputs[0].shape[-1]:
            raise WeightsError(
                f"'{config.name}': the head has {len(trained.labels)} classes, the config's output "
                f"{config.outputs[0].shape[-1]}"
            )
        graph = classifier_graph(onnx.load(str(base_weights)), trained, config.input.size[0], config.outputs[0].name)
        return save_atomically(graph, target)
    if not {"score", "probs"} <= {o.name for o in config.outputs}:
        raise WeightsError(f"'{config.name}': a feature-head model's outputs are 'score' and 'probs'")
    logger.info("building %s from %s + %s", target.name, base_weights.name, head.name)
    return write_quality_graph(base_weights, head, config.input.size[0], "score", "probs", target)


class ModelRepository:
    """All models under `settings.model_repository` and `settings.trained_models`, keyed by name.

    `entries` holds each model's served version (the newest its version policy allows); `versions` every version
    found, with the reason a version is not served.
    """

    def __init__(
        self,
        entries: dict[str, ModelEntry],
        settings: ServerSettings,
        versions: dict[str, dict[str, ModelEntry]] | None = None,
        canaries: dict[str, tuple[ModelEntry, float]] | None = None,
    ):
        self.entries = entries
        self.settings = settings
        self.versions = versions if versions is not None else {n: {e.version: e} for n, e in entries.items()}
        self.canaries = canaries or {}  # name -> (canary version's entry, percent of the model's requests)

    @classmethod
    def scan(cls, settings: ServerSettings | None = None, check_backends: bool = True) -> "ModelRepository":
        """Read every model folder; invalid configs raise, missing weights mark the model unavailable."""
        settings = settings or ServerSettings.from_env()
        repository = cls({}, settings, {})
        for root in (settings.model_repository, settings.trained_models):
            for folder_path in model_roots(root):
                try:
                    scanned = scan_model(folder_path, settings, check_backends)
                except (OSError, ValueError):
                    if root != settings.trained_models:
                        raise  # the operator's repository: a configuration error, said at start
                    # a trained model made through the API: the others serve; loading this one says why it cannot
                    logger.exception("trained model %s cannot be read; the other models are served", folder_path.name)
                    continue
                if scanned is None:
                    continue
                if folder_path.name in repository.versions:
                    raise ValueError(f"model '{folder_path.name}' is in both {settings.model_repository} and {root}")
                repository.replace(folder_path.name, scanned)
        return repository

    def _scan_one(self, name: str, check_backends: bool) -> ScannedModel | None:
        """The model folder `name` in the repository or the trained-models folder, read again; None: neither, or a
        name that is not a folder name (model control's text from a client: `/elsewhere/m` or `../../m` would load
        a folder outside both, whose config says it is `m`, into the stage of the model `m`)."""
        if not is_folder_name(name):
            return None
        for root in (self.settings.model_repository, self.settings.trained_models):
            scanned = scan_model(root / name, self.settings, check_backends) if (root / name).is_dir() else None
            if scanned is not None:
                return scanned
        return None

    def rescan(self, name: str) -> ScannedModel:
        """One model read again from disk (model control). `UnknownModelError` when no folder of that name holds a
        config or its policy serves no version; invalid configs and policies raise `ValueError`."""
        scanned = self._scan_one(name, check_backends=True)
        if scanned is None:
            raise UnknownModelError(f"unknown model '{name}': no folder of that name holds a config.yaml")
        if scanned.served is None:
            raise UnknownModelError(f"model '{name}': its version policy serves no version")
        return scanned

    def refresh_versions(self, name: str) -> None:
        """Read which versions `name` has on disk again (a training job registered one), leaving what is served."""
        scanned = self._scan_one(name, check_backends=False)
        if scanned is not None:
            self._list_versions(name, scanned)

    def replace(self, name: str, scanned: ScannedModel | None) -> None:
        """Record a (re)scanned model; None: unloaded (still listed with its versions)."""
        self.canaries.pop(name, None)
        if scanned is None or scanned.served is None:
            self.entries.pop(name, None)
        else:
            self.entries[name] = scanned.served
        if scanned is not None:
            self._list_versions(name, scanned)
            if scanned.canary is not None:
                self.canaries[name] = (scanned.canary, scanned.canary_percent)

    def _list_versions(self, name: str, scanned: ScannedModel) -> None:
        """List the versions `scanned` found; a model none of whose versions could be read (a folder being copied) is
        not listed: an empty listing answered `/v1/models` and the repository index 500 for every caller."""
        if scanned.versions:
            self.versions[name] = scanned.versions
        else:
            self.versions.pop(name, None)

    def forget(self, name: str) -> None:
        """Drop `name` from the listing: its folder is gone (the poll loop, as Triton's poll mode does)."""
        self.entries.pop(name, None)
        self.versions.pop(name, None)
        self.canaries.pop(name, None)

    def get(self, name: str) -> ModelEntry:
        """The served entry, or `UnknownModelError` listing the known names (or saying the model is not loaded)."""
        try:
            return self.entries[name]
        except KeyError:
            if name in self.versions:
                raise UnknownModelError(  # 404, as Triton answers a model with no loaded version
                    f"model '{name}' is not loaded: an admin serves it again with `imgserve models load {name}` "
                    f"(POST /v1/models/{name}/load) or by promoting one of its versions"
                ) from None
            raise UnknownModelError(
                f"unknown model '{name}'; known models: {', '.join(sorted(self.entries))}"
            ) from None

    def servable(self) -> list[ModelEntry]:
        """Entries that can be served on this machine."""
        return [entry for entry in self.entries.values() if entry.available]

    def onnx_digest(self, entry: ModelEntry) -> str:
        """sha256 of the ONNX artefact (keys TensorRT engine caches)."""
        if entry.artifacts.onnx is None:
            raise ValueError(f"model '{entry.name}' has no ONNX artefact")
        return sha256_of(entry.artifacts.onnx)


def _reason(exc: BaseException) -> str:
    """An error's reason without the paths an OSError's text names (answers reach API clients)."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def scan_for_one(name: str, settings: ServerSettings | None = None, check_backends: bool = True) -> ModelEntry:
    """The repository's entry for `name`, scanned for a command that uses that model alone and serves nothing
    (`imgserve enhance --auto`, the quality tools): the other models' weights problems are debug lines, not the
    server's warnings with their paths (resnet50's missing file was printed by every such run); this model's, and
    those of the models its graph is built on (a head's `export.base`), are logged as the server would."""
    with weights_problems_kept() as details:
        repository = ModelRepository.scan(settings, check_backends)
    entry, needed = repository.get(name), name
    seen: set[str] = set()
    while needed and needed not in seen:
        seen.add(needed)
        if needed in details:
            logger.warning("%s", details.pop(needed))
        config = repository.entries[needed].config if needed in repository.entries else None
        needed = config.export.base if config is not None and config.export is not None else ""
    return entry
