"""Deleting one version of a trained model (`DELETE /v1/models/{m}/versions/{v}`, `imgserve models delete-version`).

A version is its folder under the trained-models folder and its `model_versions` row; both go. Refused (409) for a
version the model serves or tries as a canary, by its version policy or in this replica (promote another version
first), and for one whose training job has not finished (its rerun would register it again). The check and the
removal run under the replica's model lock, as a promotion, a canary call, the model poll and a training job's
registration do, so none of them can serve the version while it goes, and under the trained-models folder's lock
(`serving.trained_models_lock`), as another replica's promotions and registrations are; a promotion that takes
neither (an operator's edit of `versions.yaml`) is caught by a second check once the folder is out of reach. Its
number is retired before its folder goes (`serving.model_versions.retire_version`): the model's next version never
takes it. A model left with no version
loses its folder, as in tenant erasure (`remove_versions`): this replica drops it from its listing at once, the
others at their next model poll; the highest number the folder gave stays in the trained-models folder
(`serving.model_versions.record_removed_model`), so a model trained later under that name never takes a number a
client has already seen. Tenant-scoped: a model another tenant trained is unknown (404), like a name or version that
does not exist (`serving.model_control.controlled_versions`, model control's tenant rule; the edge audits the
refusal).

Deleting a whole trained model (`DELETE /v1/models/{m}`, `imgserve models delete`) is the same under the same locks:
refused (409) while a training job of the caller's tenant for the model has not finished; this replica stops serving
it at once (its served version and canary unloaded, the model out of its listing), then its folder is renamed out of
every scan and removed with every version (the other replicas unload it at their next model poll, as for a folder
removed by hand), and its rows deleted; its numbers stay retired. Only trained models: a repository model (the
default classifier among them) is unknown here (404).
"""

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import BadRequestError, ServiceError
from serving.jobs.tables import TRAINING_FINAL_STATES
from serving.jobs.tenant_erasure import remove_versions
from serving.model_control import controlled_versions, unload_unlocked
from serving.model_versions import VERSION_NAME, read_metrics, record_removed_model, retire_version, scan_model_folder
from serving.repository import UnknownModelError, is_folder_name
from serving.service import InferenceService
from serving.trained_models_lock import TrainedModelsLock
from serving.training.registry import model_policy
from serving.training.store import TrainingJobNotFoundError, TrainingStore

VERSION_PATTERN = re.compile(VERSION_NAME)  # a version folder's name, as a canary's version is checked
DELETING_PREFIX = ".deleting-"  # a version folder on its way out: hidden from every scan while it is removed


class VersionInUseError(ServiceError):
    """The version is served, a canary, or still being registered: it cannot be deleted now (what to do first is in
    the message)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    kind = "version_in_use"


@dataclass(frozen=True)
class DeletedVersion:
    model: str
    version: str
    model_removed: bool  # it was the model's last version: the model's folder went too

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.model, "version": self.version, "deleted": True, "model_removed": self.model_removed}


@dataclass(frozen=True)
class DeletedModel:
    model: str
    versions: list[str]  # every version it had (folders and rows), oldest first

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.model, "deleted": True, "versions": self.versions}


def _trained_model_name(service: InferenceService, model: str) -> bool:
    """Whether `model` can name a trained model: one folder name, not hidden, not a repository model's."""
    settings = service.repository.settings
    return is_folder_name(model) and not model.startswith(".") and not (settings.model_repository / model).is_dir()


async def delete_version(
    service: InferenceService, store: TrainingStore, model: str, version: str, tenant: str
) -> DeletedVersion:
    """Delete `version` of the trained model `model` for a caller of `tenant` (see the module docstring)."""
    settings = service.repository.settings
    if not is_folder_name(model) or model.startswith("."):
        raise UnknownModelError(f"unknown model '{model}'")
    if (settings.model_repository / model).is_dir():
        raise BadRequestError(
            f"'{model}' is a repository model: its versions are the operator's files (only trained models' versions "
            "are deleted here)"
        )
    async with service.model_lock, TrainedModelsLock(settings.trained_models):
        rows = await controlled_versions(settings, store, model, tenant)  # model control's tenant rule
        root = settings.trained_models / model
        on_disk = bool(VERSION_PATTERN.fullmatch(version)) and (root / version).is_dir()
        row = next((r for r in rows if str(r["version"]) == version), None)
        if not on_disk and row is None:
            if not rows and not root.is_dir():
                raise UnknownModelError(f"unknown model '{model}'")
            raise UnknownModelError(f"model '{model}' has no version {version}")
        entry, canary = service.repository.entries.get(model), service.repository.canaries.get(model)
        loaded = (entry.version if entry else None, canary[0].version if canary else None)
        _refuse_served(settings.trained_models, model, version, *loaded)
        job_id = (read_metrics(root / version) or {}).get("job_id") if on_disk else None
        await _refuse_unfinished_job(store, model, version, job_id or (row or {}).get("training_job"))
        taken = [str(row["version"]) for row in rows]
        remove = (_remove_folder, settings.trained_models, model, version, tenant, taken)
        model_removed = await asyncio.to_thread(*remove)
        await asyncio.to_thread(store.delete_version, model, version)
        repository = service.repository
        if model_removed and model not in repository.entries:  # what the model poll does for a removed folder
            await forget_unlocked(service, model)
        elif model in repository.versions:
            await asyncio.to_thread(repository.refresh_versions, model)
    return DeletedVersion(model, version, model_removed)


async def delete_model(service: InferenceService, store: TrainingStore, model: str, tenant: str) -> DeletedModel:
    """Delete the trained model `model` of `tenant` with every version (see the module docstring)."""
    if not _trained_model_name(service, model):
        raise UnknownModelError(f"unknown model '{model}'")
    trained_models = service.repository.settings.trained_models
    async with service.model_lock, TrainedModelsLock(trained_models):
        rows = await controlled_versions(service.repository.settings, store, model, tenant)
        root = trained_models / model
        folder = scan_model_folder(root, None, False) if root.is_dir() else None
        if not rows and folder is None:
            raise UnknownModelError(f"unknown model '{model}'")
        unfinished = await asyncio.to_thread(store.unfinished_for_model, model, tenant)
        if unfinished:
            raise VersionInUseError(
                f"model '{model}' has a training job that has not finished ({unfinished[0].id}, {unfinished[0].status}"
                f"): cancel it (POST /v1/training-jobs/{unfinished[0].id}/cancel) or wait until it has finished, "
                "then delete the model"
            )
        taken = [str(row["version"]) for row in rows]
        versions = sorted({*taken, *(folder.versions if folder is not None else ())}, key=int)
        # out of service here first (no request is routed to it from now on); refused before anything goes for the
        # default model and where this placement cannot unload (the graph: 501)
        await forget_unlocked(service, model)
        await asyncio.to_thread(_remove_model_folder, trained_models, model, tenant, taken)
        await asyncio.to_thread(store.delete_model_versions, model, tenant)
    return DeletedModel(model, versions)


async def forget_unlocked(service: InferenceService, model: str) -> None:
    """This replica stops serving `model` (its served version and canary) and drops it from its listing, as its
    model poll does for a removed folder; for a caller holding `service.model_lock`."""
    repository = service.repository
    if model not in repository.versions and model not in repository.entries:
        return
    if model in repository.entries:
        with contextlib.suppress(UnknownModelError):
            await unload_unlocked(service, model)
    repository.forget(model)
    service.model_states.pop(model, None)


async def forget_if_removed(service: InferenceService, model: str) -> None:
    """`forget_unlocked` under the model lock when the model's folder is gone (a training job whose tenant was
    erased while it registered removes the version it had promoted: this replica stops serving it at once rather
    than at its next model poll)."""
    async with service.model_lock:
        if not (service.repository.settings.trained_models / model).is_dir():
            await forget_unlocked(service, model)


def _refuse_served(
    trained_models: Path, model: str, version: str, serving: str | None = None, trying: str | None = None
) -> None:
    """409 when the model's version policy, or this replica (`serving`, and `trying` as a canary), serves `version`
    or tries it as a canary; the policy's own 409 (`invalid_version_policy`) when it cannot be read (which version
    it serves is unknown)."""
    root = trained_models / model
    policy = model_policy(trained_models, model)
    folder = scan_model_folder(root, None, False) if root.is_dir() else None
    if folder is not None and not folder.versioned:
        raise BadRequestError(f"model '{model}' is not laid out in version folders (<name>/<version>/)")
    available = list(folder.versions) if folder is not None else []
    served = set(policy.served(available)) | (set(policy.versions) if policy.policy == "specific" else set())
    if version in served | {serving}:
        others = sorted((v for v in available if v != version), key=int)
        first = (
            f"promote another version first (`imgserve models promote {model} VERSION`; versions: {', '.join(others)})"
            if others
            else "it is the model's only version: train and promote another one first"
        )
        raise VersionInUseError(f"version {version} of '{model}' is the version it serves: {first}, then delete it")
    if version in {policy.canary.version if policy.canary else None, trying}:
        raise VersionInUseError(
            f"version {version} of '{model}' is its canary: end the split first (`imgserve models canary {model} "
            f"--stop`, DELETE /v1/models/{model}/canary) or promote another version, then delete it"
        )


async def _refuse_unfinished_job(store: TrainingStore, model: str, version: str, job_id: str | None) -> None:
    """409 while the training job that registered `version` has not finished: a rerun of it (its server stopped)
    finishes that very version, and would find it gone."""
    if not job_id:
        return
    try:
        job = await asyncio.to_thread(store.get, str(job_id))
    except TrainingJobNotFoundError:  # deleted, or erased: nothing will register the version again
        return
    if job.status not in TRAINING_FINAL_STATES:
        raise VersionInUseError(
            f"version {version} of '{model}' is still being registered by training job {job.id} ({job.status}): "
            "wait until the job has finished, then delete it"
        )


def _remove_folder(trained_models: Path, model: str, version: str, tenant: str, taken: list[str]) -> bool:
    """Retire the number, then remove the version's folder: renamed out of every scan first (no replica reads it
    half-removed or loads it from then on), the policy read again (another replica, whose model lock is its own, may
    have promoted it since the check: then it is put back and refused), then removed. The model's folder goes when
    no version is left, its highest number recorded first (`taken`: the model's recorded numbers). True when the
    model's folder went."""
    root = trained_models / model
    if not root.is_dir():  # a version whose folder was removed by hand: only its row is left, and its number
        record_removed_model(root, tenant, taken)
        return False
    retire_version(root, version)
    doomed = root / f"{DELETING_PREFIX}{version}"
    shutil.rmtree(doomed, ignore_errors=True)  # left by a removal that failed half-way (the call is repeated)
    if VERSION_PATTERN.fullmatch(version) and (root / version).is_dir():
        (root / version).rename(doomed)
        try:  # checked again, now that no promotion can load it: another replica (its own lock) may have since
            _refuse_served(trained_models, model, version)
        except ServiceError:
            doomed.rename(root / version)  # back: the version stays served (its retired number is never reused)
            raise
        shutil.rmtree(doomed)
    if not any(child.is_dir() and child.name.isdigit() for child in root.iterdir()):
        record_removed_model(root, tenant, taken)  # before the folder (and its retired numbers) goes
    return bool(remove_versions(trained_models, [(model, version)]))


def _remove_model_folder(trained_models: Path, model: str, tenant: str, taken: list[str]) -> None:
    """Record the model's highest number, rename its folder out of every scan (every replica's poll sees it gone at
    once, none reads it half-removed), then remove it. A removal that failed half-way left the renamed folder: it
    goes when the call is repeated."""
    doomed = trained_models / f"{DELETING_PREFIX}{model}"
    shutil.rmtree(doomed, ignore_errors=True)
    root = trained_models / model
    record_removed_model(root, tenant, taken)
    if not root.is_dir():  # removed by hand, or by a call that stopped before its rows went: only rows are left
        return
    root.rename(doomed)
    shutil.rmtree(doomed)
