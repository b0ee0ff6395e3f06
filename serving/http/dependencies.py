"""FastAPI dependencies: the replica's service and job service, from `app.state` (set by `create_http_app`).

Dependencies that do not block are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread
hand-off per request (with py-spy, ~16 % of the Ingress replica's GIL time on the web mix went to that hand-off
for `get_service`)."""

from typing import Any

from fastapi import Request

from serving.errors import ModelUnavailableError
from serving.jobs.service import JobService
from serving.security.audit import AuditEntry
from serving.security.gate import current_principal
from serving.security.principal import Principal
from serving.service import InferenceService


async def get_service(request: Request) -> InferenceService:
    return request.app.state.service


async def get_job_service(request: Request) -> JobService:
    jobs = request.app.state.jobs
    if jobs is None:
        raise ModelUnavailableError("batch jobs are not enabled in this application")
    return jobs


async def get_principal() -> Principal:
    """The caller the auth middleware admitted (serving.http.auth); ANONYMOUS when auth is off."""
    return current_principal()


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


def audit(
    request: Request, principal: Principal, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """One audit entry for what `principal` just did, through the replica's gate (written in the background)."""
    request.app.state.gate.audit(AuditEntry.by(principal, action, client_host(request), target=target, detail=detail))
