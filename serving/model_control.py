"""Model control without a restart (Triton's model-control extension): load, reload and unload a model.

`load` reads the model's folder again (its version policy picks the version), builds the backend beside the one
serving, and switches in one step: requests already holding the old version finish on it. A model that fails to
load (missing or corrupt weights, a config error, a backend that cannot open the graph) is refused with the reason
and whatever was served before stays served. Only the local placement, where the models live in the Ingress
replica, can swap a model in place; the graph placement changes its model deployments by redeploying
(`serve deploy`), and says so.

Who may control which model (`controlled_versions`, for every transport and for deletion): a trained model is the
tenant's that trained it, another tenant's is unknown (404, the refusal audited by the edge); a repository model is
shared by every tenant, and only the server's own tenant (`default`) may control it (403).
"""

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from serving.config.settings import ServerSettings
from serving.errors import BadRequestError, ServiceError
from serving.metrics import KNOWN_MODELS
from serving.model_versions import (
    VersionPolicy,
    model_state,
    policy_bytes,
    read_metrics,
    restore_policy,
    write_policy,
)
from serving.repository import UnknownModelError, is_folder_name
from serving.security.errors import PermissionDeniedError
from serving.security.principal import DEFAULT_TENANT
from serving.service import InferenceService

logger = logging.getLogger("imgserve.models")


class ModelControlUnsupportedError(ServiceError):
    http_status = 501
    grpc_code = "UNIMPLEMENTED"
    kind = "unsupported"


class ModelLoadError(ServiceError):
    """The model could not be loaded; what was served before is untouched."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    kind = "model_load_failed"


class TrainedVersions(Protocol):
    """The job store's record of each trained model's versions and the tenant that trained each
    (`serving.training.store.TrainingStore`)."""

    def versions(self, model: str) -> list[dict[str, Any]]: ...


class HiddenModelError(UnknownModelError):
    """Another tenant's trained model, answered as an unknown one (404 `unknown model 'm'`, deletion's words for a
    name no model has). `refusal` is what it is, for the audit log: the edge that answers it passes it to the
    gate's `audit_refusal` (`auth.permission_denied` with the caller's key, tenant and role, as a 403 is)."""

    def __init__(self, model: str):
        super().__init__(f"unknown model '{model}'")
        self.refusal = PermissionDeniedError(f"model '{model}' was trained by another tenant")


async def owned_versions(
    store: TrainedVersions, model: str, tenant: str, refusal: Exception | None = None
) -> list[dict[str, Any]]:
    """The model's recorded versions; `refusal` raised when another tenant trained any (default 403: a new version
    would replace what the owner's requests are answered by; model control passes a `HiddenModelError`)."""
    recorded = await asyncio.to_thread(store.versions, model)
    if {str(row["tenant"]) for row in recorded} - {tenant}:
        raise refusal or PermissionDeniedError(
            f"model '{model}' was trained by another tenant; train yours under another name"
        )
    return recorded


async def controlled_versions(
    settings: ServerSettings, store: TrainedVersions | None, model: str, tenant: str
) -> list[dict[str, Any]]:
    """The tenant rule of every model-control action (load, unload, promote, canary, deleting a version or the
    model) for a caller of `tenant`; returns the model's recorded versions. A trained model is its tenant's:
    another tenant's is a `HiddenModelError`. A repository model (the default classifier among them) is shared by
    every tenant: only the server's own tenant (`default`: keys made without a tenant, and every caller with auth
    off) may control it, a 403 for the others. `store`: None where the application has no job store (nothing was
    trained through it). A trained model's folder no row records (put there by hand) is shared as a repository
    model is (`check_unrecorded_folder`)."""
    shared = is_folder_name(model) and (settings.model_repository / model).is_dir()
    if shared and tenant != DEFAULT_TENANT:
        raise PermissionDeniedError(
            f"'{model}' is a repository model, shared by every tenant: only the server's operators (tenant "
            f"'{DEFAULT_TENANT}') may load, unload, promote or try versions of it"
        )
    recorded = await owned_versions(store, model, tenant, HiddenModelError(model)) if store is not None else []
    check_unrecorded_folder(settings, model, recorded, tenant)
    return recorded


def check_unrecorded_folder(settings: ServerSettings, model: str, recorded: list[dict[str, Any]], tenant: str) -> None:
    """A trained-models folder of versions no training job made (copied there by hand: no version names a job in
    its metrics) and no row records has no owning tenant: every tenant is served it, so it is the server's operators'
    (tenant `default`) to control or to train new versions of, as a repository model is (403 for the others; any
    admin's before). A folder a job made is never taken for one: one whose registration failed before any version
    (only its policy file), or whose version is written and not yet recorded (a registration under way, or resumed
    after a restart), stays its tenant's to train again, as before."""
    if recorded or tenant == DEFAULT_TENANT or not is_folder_name(model):
        return
    root = settings.trained_models / model
    versions = [child for child in root.iterdir() if child.name.isdecimal()] if root.is_dir() else []
    if versions and not any((read_metrics(folder) or {}).get("job_id") for folder in versions):
        raise PermissionDeniedError(
            f"trained model '{model}' has no recorded owner (its versions were not made by a training job): only "
            f"the server's operators (tenant '{DEFAULT_TENANT}') may control it or train versions of it"
        )


IGNORED_PARAMETERS = frozenset({"unload_dependents"})  # tritonclient sends it; imgserve has no ensembles to unload


def check_control_parameters(names: set[str]) -> None:
    """Triton's load can carry config overrides and model files; imgserve loads what its folders hold, and refuses
    them rather than ignoring them."""
    refused = sorted(names - IGNORED_PARAMETERS)
    if refused:
        raise BadRequestError(f"load/unload parameters {refused} are not supported (config overrides, model files)")


def _pipeline(service: InferenceService):  # noqa: ANN202 - LocalPipeline, without importing the local stages here
    pipeline = service.pipeline
    if not hasattr(pipeline, "swap_models"):
        raise ModelControlUnsupportedError(
            "model control (load/unload) needs the local placement; the graph placement's model deployments "
            "change by redeploying the application (serve deploy)"
        )
    return pipeline


async def load_model(service: InferenceService, name: str) -> str:
    """Load (or reload) `name` as its version policy says, with its canary version when the policy splits traffic;
    returns the version now served. Nothing changes unless every version it needs loads. One load or unload at a
    time per replica: the API, training jobs and the poll loop (`serving.model_poll`) share `service.model_lock`."""
    async with service.model_lock:
        return await load_unlocked(service, name)


async def unload_model(service: InferenceService, name: str) -> None:
    """Stop serving `name` and its canary (it stays listed, UNAVAILABLE, and can be loaded again)."""
    async with service.model_lock:
        await unload_unlocked(service, name)


async def load_unlocked(service: InferenceService, name: str) -> str:
    """`load_model` for a caller that holds `service.model_lock`."""
    # The folder's state is read before the folder itself: a change made in between is seen by the next poll.
    state = await asyncio.to_thread(model_state, service.repository.settings, name)
    try:
        scanned = await asyncio.to_thread(service.repository.rescan, name)
    except UnknownModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"failed to load '{name}': {exc}") from None
    wanted = [e for e in (scanned.served, scanned.canary) if e is not None]
    for entry in wanted:
        if not entry.available:
            raise ModelLoadError(f"failed to load '{name}' version {entry.version}: {entry.unavailable_reason}")
    pipeline = _pipeline(service)  # after the request's own errors (404, 400), which every placement answers alike
    old_canary = service.repository.canaries.get(name)
    stale = (old_canary[0].key,) if old_canary and old_canary[0].key not in {e.key for e in wanted} else ()
    try:
        await pipeline.swap_models(wanted, stale)
    except Exception as exc:  # noqa: BLE001 - any backend failure (a corrupt graph, an unsupported op) is the reason
        logger.warning("model %s failed to load: %s", name, exc)
        raise ModelLoadError(
            f"failed to load '{name}' version {scanned.served.version}: {type(exc).__name__}: "  # type: ignore[union-attr]
            f"{str(exc)[:500]}"
        ) from None
    service.repository.replace(name, scanned)
    service.model_states[name] = state
    for key in {name, *stale, *(e.key for e in wanted)}:  # canary versions' stages are reported under their keys
        service.forget_backend_info(key)
    KNOWN_MODELS.add(name)
    served = scanned.served
    assert served is not None
    canary = f" (+ version {scanned.canary.version} on {scanned.canary_percent:g} %)" if scanned.canary else ""
    logger.info("model %s version %s loaded%s", name, served.version, canary)
    return served.version


async def apply_policy_unlocked(service: InferenceService, name: str, root: Path, policy: VersionPolicy) -> str:
    """Write `policy` to the folder `root` of model `name` and load what it says; returns the version now served.
    For a caller that holds `service.model_lock` from its read of what is served to here. A policy whose versions
    cannot load is not kept: the file is put back byte for byte (or removed when there was none) and the load's
    error raised, so the folder never names a version that does not load (every replica's poll would try it, and a
    replica starting later would leave the model out). A placement that cannot load models here (the graph: its
    model deployments change by redeploying) is refused before the file is touched."""
    _pipeline(service)
    previous = await asyncio.to_thread(policy_bytes, root)
    await asyncio.to_thread(write_policy, root, policy)
    try:
        return await load_unlocked(service, name)
    except Exception:
        await asyncio.to_thread(restore_policy, root, previous)
        raise


async def unload_unlocked(service: InferenceService, name: str) -> None:
    """`unload_model` for a caller that holds `service.model_lock`. The unload lasts until the model's folder
    changes (the poll loop compares the folder with the state recorded here)."""
    entry = service.repository.get(name)  # 404 for unknown or already unloaded models
    if entry.name == service.default_model:
        raise BadRequestError(f"'{name}' is the default model and cannot be unloaded")
    pipeline = _pipeline(service)  # after the request's own errors, as in load_unlocked
    state = await asyncio.to_thread(model_state, service.repository.settings, name)
    canary = service.repository.canaries.get(name)
    await pipeline.swap_models([], (name, *((canary[0].key,) if canary else ())))
    service.repository.replace(name, None)
    service.model_states[name] = state
    for key in (name, *((canary[0].key,) if canary else ())):
        service.forget_backend_info(key)
    logger.info("model %s unloaded", name)
