"""Training jobs over HTTP: `POST /v1/training-jobs` (202 + the job), list, one, cancel, delete. Tenant-scoped like
batch jobs; submitting and cancelling need the operator role (a trained version may be served to everyone), reading
the viewer role; deleting a finished job's record needs the admin role (routes not listed in
`serving.security.principal` are admin's)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from serving.errors import ModelUnavailableError
from serving.http.dependencies import audit, get_principal, reject_unknown_query
from serving.security.principal import Principal
from serving.training.request import TrainingRequest
from serving.training.service import TrainingService

router = APIRouter(prefix="/v1", tags=["training jobs"], dependencies=[Depends(reject_unknown_query)])


async def get_training(request: Request) -> TrainingService:
    training = getattr(request.app.state, "training", None)
    if training is None:
        raise ModelUnavailableError("training jobs need the job store, which is not enabled in this application")
    return training


@router.post("/training-jobs", status_code=202)
async def submit(
    body: TrainingRequest,
    request: Request,
    training: TrainingService = Depends(get_training),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    """Train a classifier on a labelled dataset (one folder per category); the result is a new version of
    `model`, served when it is promoted (see `promote`). Poll the returned `status_url`."""
    job = await training.submit(body, principal)
    audit(request, principal, "training.create", job.id, {"model": body.model, "dataset": body.dataset})
    return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/v1/training-jobs/{job.id}"})


@router.get("/training-jobs")
async def list_jobs(
    training: TrainingService = Depends(get_training), principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    return {"training_jobs": [job.to_dict() for job in await training.list_jobs(principal)]}


@router.get("/training-jobs/{job_id}")
async def get_job(
    job_id: str, training: TrainingService = Depends(get_training), principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    return (await training.get(job_id, principal)).to_dict()


@router.post("/training-jobs/{job_id}/cancel")
async def cancel(
    job_id: str,
    request: Request,
    training: TrainingService = Depends(get_training),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    job = await training.cancel(job_id, principal)
    audit(request, principal, "training.cancel", job_id)
    return job.to_dict()


@router.delete("/training-jobs/{job_id}")
async def delete(
    job_id: str,
    request: Request,
    training: TrainingService = Depends(get_training),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Delete a finished (completed, failed or cancelled) training job of the caller's tenant; the version it
    registered stays (`DELETE /v1/models/{model}/versions/{version}` deletes that). 409 for a queued or running job
    (cancel it first), 404 for an unknown job or another tenant's."""
    store = await training.store()
    job = await asyncio.to_thread(store.delete, job_id, principal.tenant)
    audit(request, principal, "training.delete", job_id, {"model": job.model, "status": job.status})
    return {"id": job.id, "model": job.model, "status": job.status, "deleted": True}
