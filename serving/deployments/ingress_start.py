"""What an Ingress replica does about its security gate and its `server.start` audit entry as it starts (kept out of
serving.deployments.ingress, which imports the gRPC methods, so that it is testable without them)."""

import asyncio
from typing import TYPE_CHECKING, Any

from serving.jobs.database import open_job_database
from serving.security.audit import write_server_start, write_server_start_when_reachable
from serving.security.gate import SecurityGate, build_gate
from serving.security.settings import SecuritySettings

if TYPE_CHECKING:
    from serving.placement import IngressConfig


def ingress_gate(config: "IngressConfig") -> SecurityGate:
    """The replica's security gate. `imgserve serve` resolves IMGSERVE_AUTH before Ray starts; left at `auto`
    (a hand-made `serve deploy`), auth is required unless the replica's own listeners bind loopback only. With auth
    required, the replica's `server.start` is written here, through the gate's database."""

    settings = SecuritySettings.from_env()
    gate = build_gate(settings, open_job_database, listener_hosts(config))
    if gate.engine is not None:
        write_server_start(gate.engine, server_start_detail(config, gate))
    return gate


def audit_start_without_auth(config: "IngressConfig", gate: SecurityGate) -> "asyncio.Task[None] | None":
    """With auth off the gate opens no database, but a server with batch jobs has one (the same database): its
    `server.start` is written there, in the background as soon as the database answers (the replica does not wait
    for it, as its job loop does not). Called on the replica's event loop; None when nothing is to be written."""
    if gate.engine is not None or not config.batch_jobs:
        return None
    detail = server_start_detail(config, gate)
    return asyncio.get_running_loop().create_task(write_server_start_when_reachable(open_job_database, detail))


def listener_hosts(config: "IngressConfig") -> list[str]:
    return [config.direct_ingress.host] if config.direct_ingress is not None else ["(Ray Serve proxy)"]


def server_start_detail(config: "IngressConfig", gate: SecurityGate) -> dict[str, Any]:
    """The configuration this replica serves with, as its `server.start` audit entry holds it (no secrets in it)."""
    settings = gate.settings
    return {
        "placement": config.placement,
        "default_model": config.default_model,
        "listeners": listener_hosts(config),
        "auth": gate.mode,
        "tls": bool(config.direct_ingress and config.direct_ingress.tls),
        "cors_origins": settings.cors_origins,
        "retention_days": settings.retention_days,
        "jwt": bool(settings.jwt_public_key_file or settings.jwks_file),
    }
