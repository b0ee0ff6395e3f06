"""Model control over HTTP (admin): Triton's `/v2/repository/models/{m}/load|unload` (so `tritonclient.http`'s
`load_model` / `unload_model` work unchanged) and the `/v1` equivalents, plus promoting, trying (canary) and deleting
a version or a whole trained model. Every action passes one tenant rule (`serving.model_control.controlled_versions`):
a trained model is its tenant's (another tenant's is unknown, 404, and the refusal audited),
a repository model is the server's own tenant's (`default`; 403 for the others)."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.errors import BadRequestError
from serving.http.dependencies import audit, client_host, get_principal, get_service
from serving.http.training_routes import get_training
from serving.model_control import (
    HiddenModelError,
    apply_policy_unlocked,
    check_control_parameters,
    controlled_versions,
    load_model,
    unload_model,
)
from serving.model_versions import (
    VERSION_NAME,
    CanarySplit,
    VersionPolicy,
    scan_model_folder,
)
from serving.repository import UnknownModelError
from serving.requests import loads_client_json
from serving.security.principal import Principal
from serving.service import InferenceService
from serving.trained_models_lock import TrainedModelsLock
from serving.training.deletion import delete_model as delete_trained_model
from serving.training.deletion import delete_version as delete_trained_version
from serving.training.service import TrainingService

router = APIRouter(tags=["model control"])
logger = logging.getLogger("imgserve.models")


async def refuse_parameters(request: Request) -> None:
    """The body: empty or `{"parameters": {...}}` without config overrides or files (`check_control_parameters`)."""
    body = await request.body()
    if not body.strip():
        return
    try:
        parameters = loads_client_json(body).get("parameters") or {}
        names = set(parameters)
    except (ValueError, AttributeError, TypeError):
        raise BadRequestError("the body must be empty or a JSON object with an object of parameters") from None
    check_control_parameters(names)


@contextlib.contextmanager
def refusal_audited(request: Request) -> Iterator[None]:
    """Another tenant's model answers as an unknown one (404) and is audited as the refusal it is, as a 403 is."""
    try:
        yield
    except HiddenModelError as exc:
        request.app.state.gate.audit_refusal(exc.refusal, client_host(request), request.url.path[:128])
        raise


async def tenant_rule(model: str, request: Request, principal: Principal = Depends(get_principal)) -> None:
    """Model control's tenant rule, checked before anything is read from the body or the model's folder."""
    training: TrainingService | None = getattr(request.app.state, "training", None)
    store = await training.store() if training is not None else None
    with refusal_audited(request):
        await controlled_versions(request.app.state.service.repository.settings, store, model, principal.tenant)


@router.post("/v2/repository/models/{model}/load", dependencies=[Depends(tenant_rule)])
@router.post("/v1/models/{model}/load", dependencies=[Depends(tenant_rule)])
async def load(
    model: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Load or reload `model` (the version its policy serves). 400 with the reason when it cannot be loaded; the
    version served before stays served."""
    await refuse_parameters(request)
    version = await load_model(service, model)
    audit(request, principal, "model.load", model, {"version": version})
    return {"name": model, "version": version, "state": "READY"}


@router.post("/v2/repository/models/{model}/unload", dependencies=[Depends(tenant_rule)])
@router.post("/v1/models/{model}/unload", dependencies=[Depends(tenant_rule)])
async def unload(
    model: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    await refuse_parameters(request)
    await unload_model(service, model)
    audit(request, principal, "model.unload", model, {})
    return {"name": model, "state": "UNAVAILABLE"}


async def _versioned_root(service: InferenceService, model: str, version: str) -> tuple[Path, VersionPolicy]:
    """The model's folder and current policy; 404 for an unknown model or version, 400 for a flat model."""
    if model not in service.repository.versions:
        raise UnknownModelError(f"unknown model '{model}'")
    root = next(iter(service.repository.versions[model].values())).folder.parent
    try:
        folder = await asyncio.to_thread(scan_model_folder, root)
    except ValueError as exc:  # an unreadable versions.yaml: the new policy replaces it (the API can repair it)
        logger.warning("model %s: replacing its unreadable version policy: %s", model, exc)
        folder = await asyncio.to_thread(scan_model_folder, root, None, False)
    if folder is None or not folder.versioned:
        raise BadRequestError(f"model '{model}' is not laid out in version folders (<name>/<version>/)")
    if version and version not in folder.versions:
        raise UnknownModelError(f"model '{model}' has no version {version}; versions: {sorted(folder.versions)}")
    return root, folder.policy


async def _apply_policy(
    service: InferenceService, model: str, root: Path, policy: Callable[[str | None], VersionPolicy]
) -> str:
    """Write the model's new policy, `policy(the version served now)` (None: the model serves none, unloaded or by
    its policy: a promotion serves one again), and load what it says; a policy whose versions cannot load is not
    kept (the file is put back as it was). Under the replica's model lock from the read of the served version to
    the load: two calls at once each load their own policy (they loaded each other's, restored each other's,
    answered 200 for a version that could not load, or a canary call undid a promotion). A trained model's policy is
    also written under the trained-models folder's lock (`TrainedModelsLock`): a training job registering a version
    on another replica meanwhile pinned the version it had read as served, undoing the promotion."""
    trained_models = service.repository.settings.trained_models
    async with contextlib.AsyncExitStack() as locks:
        await locks.enter_async_context(service.model_lock)
        if root.is_relative_to(trained_models):
            await locks.enter_async_context(TrainedModelsLock(trained_models))
        served = service.repository.entries.get(model)
        return await apply_policy_unlocked(service, model, root, policy(served.version if served else None))


def _served(model: str, served: str | None) -> str:
    """The version served now, which a canary splits traffic with; 404 when the model serves none."""
    if served is None:
        raise UnknownModelError(f"model '{model}' is not loaded: promote a version to serve it")
    return served


@router.post("/v1/models/{model}/versions/{version}/promote", dependencies=[Depends(tenant_rule)])
async def promote(
    model: str,
    version: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Serve exactly `version` of a versioned model from now on, ending any canary split (also how a promotion is
    rolled back: promote the older version). Writes the model's version policy, then loads it."""
    root, _ = await _versioned_root(service, model, version)
    served = await _apply_policy(service, model, root, lambda _: VersionPolicy(policy="specific", versions=[version]))
    audit(request, principal, "model.promote", model, {"version": served})
    return {"name": model, "version": served, "state": "READY"}


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_NAME, description="The version to try on part of the traffic.")
    percent: float = Field(gt=0, lt=100, description="Its share of the model's requests, e.g. 5.")


@router.post("/v1/models/{model}/canary", dependencies=[Depends(tenant_rule)])
async def start_canary(
    model: str,
    body: CanaryRequest,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Send `percent` of the model's requests to `version`, the rest to the version served now; per-version request
    counts in `imgserve_model_version_requests_total`. End it by promoting either version or with DELETE."""
    root, _ = await _versioned_root(service, model, body.version)
    split = CanarySplit(version=body.version, percent=body.percent)

    def canary_beside(now: str | None) -> VersionPolicy:
        served = _served(model, now)
        if body.version == served:
            raise BadRequestError(f"version {served} of '{model}' is the served one; a canary is another version")
        return VersionPolicy(policy="specific", versions=[served], canary=split)

    served = await _apply_policy(service, model, root, canary_beside)
    audit(request, principal, "model.canary", model, {"version": body.version, "percent": body.percent})
    return {"name": model, "version": served, "canary": split.model_dump()}


@router.delete("/v1/models/{model}/canary", dependencies=[Depends(tenant_rule)])
async def stop_canary(
    model: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """End the split: every request goes to the served version again (the canary version stays registered)."""
    root, _ = await _versioned_root(service, model, "")
    served = await _apply_policy(
        service, model, root, lambda now: VersionPolicy(policy="specific", versions=[_served(model, now)])
    )
    audit(request, principal, "model.canary_end", model, {"version": served})
    return {"name": model, "version": served, "canary": None}


@router.delete("/v1/models/{model}/versions/{version}")
async def delete_version(
    model: str,
    version: str,
    request: Request,
    training: TrainingService = Depends(get_training),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Delete a version of a trained model of the caller's tenant: its folder and its registry row (its training job
    stays). 409 for the version served or tried as a canary (promote another version first) or one a training job
    is still registering; 404 for an unknown model or version, or another tenant's model. Its number is never given
    again; a model left with no version is removed (its folder; every replica drops it at its next model poll)."""
    store = await training.store()
    with refusal_audited(request):
        deleted = await delete_trained_version(training.service, store, model, version, principal.tenant)
    audit(
        request, principal, "model.delete_version", model, {"version": version, "model_removed": deleted.model_removed}
    )
    return deleted.to_dict()


@router.delete("/v1/models/{model}")
async def delete_model(
    model: str,
    request: Request,
    training: TrainingService = Depends(get_training),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Delete a trained model of the caller's tenant with every version: this replica stops serving it at once, the
    others at their next model poll (IMGSERVE_MODEL_POLL_S); its folder and registry rows go (its training jobs
    stay), and its version numbers are never given again under that name. 409 while a training job of the tenant for
    the model has not finished (cancel it or wait); 404 for an unknown model, another tenant's, or a repository
    model (the default classifier among them)."""
    store = await training.store()
    with refusal_audited(request):
        deleted = await delete_trained_model(training.service, store, model, principal.tenant)
    audit(request, principal, "model.delete", model, {"versions": deleted.versions})
    return deleted.to_dict()
