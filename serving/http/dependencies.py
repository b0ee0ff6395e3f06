"""FastAPI dependencies: the replica's service and job service, from `app.state` (set by `create_http_app`)."""

from typing import Any

from fastapi import Request

from serving.errors import ModelUnavailableError
from serving.jobs.service import JobService
from serving.security.audit import AuditEntry
from serving.security.gate import current_principal
from serving.security.principal import Principal
from serving.service import InferenceService


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_job_service(request: Request) -> JobService:
    jobs = request.app.state.jobs
    if jobs is None:
        raise ModelUnavailableError("batch jobs are not enabled in this application")
    return jobs


def get_principal() -> Principal:
    """The caller the auth middleware admitted (serving.http.auth); ANONYMOUS when auth is off."""
    return current_principal()


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


def audit(
    request: Request, principal: Principal, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """One audit entry for what `principal` just did, through the replica's gate (written in the background)."""
    request.app.state.gate.audit(AuditEntry.by(principal, action, client_host(request), target=target, detail=detail))
