"""Model control over HTTP (admin): Triton's `/v2/repository/models/{m}/load|unload` (so `tritonclient.http`'s
`load_model` / `unload_model` work unchanged) and the `/v1` equivalents, plus promoting a version."""

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Request

from serving.errors import BadRequestError
from serving.http.dependencies import client_host, get_principal, get_service
from serving.model_control import check_control_parameters, load_model, unload_model
from serving.model_versions import VersionPolicy, scan_model_folder, write_policy
from serving.repository import UnknownModelError
from serving.security.audit import AuditEntry
from serving.security.principal import Principal
from serving.service import InferenceService

router = APIRouter(tags=["model control"])


def _audit(request: Request, principal: Principal, action: str, model: str, detail: dict[str, Any]) -> None:
    entry = AuditEntry.by(principal, action, client_host(request), target=model, detail=detail)
    request.app.state.gate.audit(entry)


async def refuse_parameters(request: Request) -> None:
    """The body: empty or `{"parameters": {...}}` without config overrides or files (`check_control_parameters`)."""
    body = await request.body()
    if not body.strip():
        return
    try:
        parameters = json.loads(body).get("parameters") or {}
        names = set(parameters)
    except (ValueError, AttributeError, TypeError):
        raise BadRequestError("the body must be empty or a JSON object with an object of parameters") from None
    check_control_parameters(names)


@router.post("/v2/repository/models/{model}/load")
@router.post("/v1/models/{model}/load")
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
    _audit(request, principal, "model.load", model, {"version": version})
    return {"name": model, "version": version, "state": "READY"}


@router.post("/v2/repository/models/{model}/unload")
@router.post("/v1/models/{model}/unload")
async def unload(
    model: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    await refuse_parameters(request)
    await unload_model(service, model)
    _audit(request, principal, "model.unload", model, {})
    return {"name": model, "state": "UNAVAILABLE"}


@router.post("/v1/models/{model}/versions/{version}/promote")
async def promote(
    model: str,
    version: str,
    request: Request,
    service: InferenceService = Depends(get_service),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Serve exactly `version` of a versioned model from now on (also how a promotion is rolled back: promote the
    older version). Writes the model's version policy, then loads it."""
    if model not in service.repository.versions:
        raise UnknownModelError(f"unknown model '{model}'")
    root = service.repository.versions[model][next(iter(service.repository.versions[model]))].folder.parent
    folder = await asyncio.to_thread(scan_model_folder, root)
    if folder is None or not folder.versioned:
        raise BadRequestError(f"model '{model}' is not laid out in version folders (<name>/<version>/)")
    if version not in folder.versions:
        raise UnknownModelError(f"model '{model}' has no version {version}; versions: {sorted(folder.versions)}")
    previous = folder.policy
    await asyncio.to_thread(write_policy, root, VersionPolicy(policy="specific", versions=[version]))
    try:
        served = await load_model(service, model)
    except Exception:
        await asyncio.to_thread(write_policy, root, previous)  # a version that cannot load is not promoted
        raise
    _audit(request, principal, "model.promote", model, {"version": served})
    return {"name": model, "version": served, "state": "READY"}
