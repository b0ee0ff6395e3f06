"""`GET /v1/audit` (admin): the audit log, filtered and paged (serving.security.audit; an admin of another tenant than
`default` reads its own tenant's entries only); `GET /v1/whoami` (any
key): the caller as the server sees it (what the web UI shows and which of its controls a role gets)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from serving.errors import ModelUnavailableError
from serving.http.dependencies import reject_unknown_query
from serving.security.audit import query_audit
from serving.security.gate import current_principal

router = APIRouter(prefix="/v1", tags=["security"], dependencies=[Depends(reject_unknown_query)])


@router.get("/audit")
async def audit(
    request: Request,
    tenant: str | None = Query(default=None, max_length=64, description="Only this tenant's entries."),
    action: str | None = Query(default=None, max_length=48, description="e.g. job.purge, or job.* / auth.*"),
    key_id: str | None = Query(default=None, max_length=16),
    outcome: str | None = Query(default=None, pattern="^(ok|denied|failed)$"),
    since: float | None = Query(default=None, ge=0, le=1e11, description="UNIX seconds, inclusive."),
    until: float | None = Query(default=None, ge=0, le=1e11, description="UNIX seconds, exclusive."),
    after: int = Query(default=0, ge=0, le=2**62, description="Paging cursor: entries with a larger id (next_after)."),
    limit: int = Query(default=100, ge=1, le=1000),
    newest: bool = Query(default=False, description="The latest `limit` entries, newest first (no paging)."),
) -> dict[str, Any]:
    """Entries oldest first; pass `next_after` back as `after` for the next page (null: no more). With `newest`,
    the latest entries, newest first."""
    gate, jobs = request.app.state.gate, request.app.state.jobs
    engine = gate.engine or (jobs.engine if jobs is not None else None)  # auth off: job actions are still logged
    if engine is None:
        raise ModelUnavailableError("no audit log: auth is off and batch jobs are disabled")
    if jobs is not None:
        await jobs.ready()  # migrated
    if gate.audit_writer is not None:
        await gate.audit_writer.flush()  # this replica's refusals are in before it answers
    scope = current_principal().read_scope()  # another tenant's admin reads its own tenant's entries only
    if scope is not None and tenant not in (None, scope):
        return {"entries": [], "next_after": None}
    entries = await asyncio.to_thread(
        query_audit, engine, scope or tenant, action, key_id, outcome, since, until, after, limit, newest
    )
    more = len(entries) == limit and not newest
    return {"entries": entries, "next_after": entries[-1]["id"] if more else None}


@router.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    principal = current_principal()
    return {
        "key_id": principal.key_id,
        "tenant": principal.tenant,
        "role": principal.role,
        "auth": request.app.state.gate.mode,
    }
