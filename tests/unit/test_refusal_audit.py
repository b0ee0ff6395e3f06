"""Every refusal of a known key is in the audit log once, with its key id and tenant (docs/SECURITY.md, Abuse): the
role refusals raised inside a service (purging a job needs an admin, a model name another tenant trained) never
passed the security gate, which writes `auth.<kind>`, so they were not audited at all; and a revoked key's refusals
were written with tenant null although the key's tenant is known. Over the real FastAPI app and job store (SQLite in
a temporary folder) with tiny generated models, and over the gRPC edge's `attempt`: no Ray cluster."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.http.app import create_http_app
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.tables import model_versions
from serving.security.errors import PermissionDeniedError
from serving.security.gate import SecurityGate, set_replica_gate
from serving.security.keys import KeyStore
from serving.security.settings import SecuritySettings
from serving.security.tables import audit_log
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("refusal_audit")
    service, settings = tiny_local_service(root)
    job_settings = JobSettings(database_url=f"sqlite:///{root / 'jobs.sqlite3'}", object_store=str(root / "objects"))
    engine = create_store_engine(job_settings.database_url)
    migrate(engine)
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))
    service.gate = gate
    jobs = JobService(service, job_settings, None, gate)
    keys = KeyStore(engine)
    made = {
        name: keys.create(name, role, tenant)
        for name, role, tenant in (
            ("a_viewer", "viewer", "a"),
            ("a_analyst", "analyst", "a"),
            ("a_operator", "operator", "a"),
            ("a_admin", "admin", "a"),
        )
    }
    with TestClient(create_http_app(service, jobs, settings, gate)) as client:
        yield {"http": client, "keys": made, "engine": engine, "gate": gate}
    service.gate = None


def auth(world: dict[str, Any], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['keys'][name][1]}"}


def entries(world: dict[str, Any], since: float, **query: str) -> list[dict[str, Any]]:
    """The audit log since `since`, read as an admin reads it (GET /v1/audit writes what is pending first)."""
    params = "&".join(f"{k}={v}" for k, v in {"since": str(since), **query}.items())
    response = world["http"].get(f"/v1/audit?{params}", headers=auth(world, "a_admin"))
    assert response.status_code == 200, response.text
    return [e for e in response.json()["entries"] if e["action"] != "audit.read"]


def test_purging_a_job_without_the_admin_role_is_audited_with_the_key(world: dict[str, Any]) -> None:
    http = world["http"]
    files = [("image", ("x.jpg", jpeg(), "image/jpeg"))]
    submitted = http.post("/v1/batch", files=files, headers=auth(world, "a_analyst"))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["job_id"]
    since = time.time()
    refused = http.delete(f"/v1/jobs/{job}?purge=true", headers=auth(world, "a_analyst"))
    assert refused.status_code == 403 and refused.json()["kind"] == "permission_denied", refused.text
    analyst = world["keys"]["a_analyst"][0]
    written = entries(world, since, key_id=analyst.id)
    assert [(e["action"], e["outcome"], e["tenant"], e["role"], e["target"]) for e in written] == [
        ("auth.permission_denied", "denied", "a", "analyst", f"/v1/jobs/{job}")
    ], written
    assert written[0]["client"] == "testclient"


def test_training_another_tenants_model_name_is_audited_with_the_key(world: dict[str, Any]) -> None:
    with world["engine"].begin() as conn:
        conn.execute(
            model_versions.insert().values(
                model="theirs", version="1", tenant="b", labels=["x", "y"], created_at=time.time()
            )
        )
    since = time.time()
    refused = world["http"].post(
        "/v1/training-jobs", json={"model": "theirs", "dataset": "file:///nowhere"}, headers=auth(world, "a_operator")
    )
    assert refused.status_code == 403 and "another tenant" in refused.json()["error"], refused.text
    written = entries(world, since, key_id=world["keys"]["a_operator"][0].id)
    assert [(e["action"], e["tenant"], e["role"], e["target"]) for e in written] == [
        ("auth.permission_denied", "a", "operator", "/v1/training-jobs")
    ], written


def test_a_refusal_of_the_gate_is_still_written_once(world: dict[str, Any]) -> None:
    since = time.time()
    refused = world["http"].post("/v1/classify", content=jpeg(), headers=auth(world, "a_viewer"))
    assert refused.status_code == 403
    written = entries(world, since, key_id=world["keys"]["a_viewer"][0].id)
    assert [(e["action"], e["tenant"], e["target"]) for e in written] == [
        ("auth.permission_denied", "a", "/v1/classify")
    ]


def test_a_revoked_keys_and_a_wrong_secrets_refusals_carry_the_keys_tenant(world: dict[str, Any]) -> None:
    store = KeyStore(world["engine"])
    record, key = store.create("soon-revoked", "analyst", "a")
    wrong_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    since = time.time()
    for credentials in (wrong_secret, key):
        if credentials == key:
            store.revoke(record.id)
        refused = world["http"].get("/v1/models", headers={"Authorization": f"Bearer {credentials}"})
        assert refused.status_code == 401
    written = entries(world, since, tenant="a", action="auth.unauthenticated")
    assert [(e["key_id"], e["tenant"], e["target"]) for e in written] == [(record.id, "a", "/v1/models")] * 2


class FakeContext:
    """What the gRPC edge reads of a call's context: its metadata and peer."""

    def __init__(self, key: str):
        self.metadata = (("authorization", f"Bearer {key}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:10.1.2.3:5555"


def test_a_services_refusal_over_grpc_is_audited_once_and_the_gates_too(world: dict[str, Any]) -> None:
    """Over gRPC the gate's refusal and the service's reach the same `except` (serving.grpc.edge.attempt): each is
    written once, the service's with the caller's key."""
    from serving.grpc.edge import attempt

    async def refused_inside() -> None:
        raise PermissionDeniedError("this needs another role")

    async def scenario() -> list[str | None]:
        answers = []
        for name in ("a_analyst", "a_viewer"):  # the analyst passes the gate; the viewer is refused by it
            _, error = await attempt("Classify", "", refused_inside, None, FakeContext(world["keys"][name][1]))
            answers.append(error.grpc_code if error else None)
        return answers

    since = time.time()
    set_replica_gate(world["gate"])
    try:
        assert asyncio.run(scenario()) == ["PERMISSION_DENIED", "PERMISSION_DENIED"]
    finally:
        set_replica_gate(SecurityGate("off", None, SecuritySettings(auth="off")))
    for name, role in (("a_analyst", "analyst"), ("a_viewer", "viewer")):
        written = entries(world, since, key_id=world["keys"][name][0].id)
        assert [(e["action"], e["tenant"], e["role"], e["client"], e["target"]) for e in written] == [
            ("auth.permission_denied", "a", role, "10.1.2.3", "Classify")
        ], (name, written)


def test_the_audit_rows_name_no_secret(world: dict[str, Any]) -> None:
    with world["engine"].begin() as conn:
        text = str([dict(r._mapping) for r in conn.execute(sa.select(audit_log))])
    assert all(key not in text for _, key in world["keys"].values())
