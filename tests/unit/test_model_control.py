"""One tenant rule for model control (`serving.model_control.controlled_versions`), over HTTP and gRPC.

Were: another tenant's admin could load, unload, promote and canary a tenant's trained model (200, audited as done
by it), while deleting it was a 404 `unknown model` and training it a 403; and any tenant's admin could unload a
repository model every tenant is served. Now another tenant's trained model is unknown to every model-control
action, as to deletion (404 with the same body, audited as `auth.permission_denied`), and a repository model is
the server's own tenant's (`default`) to control (403 for the others). Over the real HTTP app with keys and the
job store of tests/unit/test_training_delete.py (tiny models, no Ray); gRPC in a subprocess (the generated OIP
modules stay out of the test process)."""

# ruff: noqa: F811 - `world`, the fixture of test_training_delete, is imported and named by each test
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.model_versions import read_policy
from serving.security.keys import KeyStore
from tests.paths import PROJECT_ROOT
from tests.unit.test_training_delete import _as, world  # noqa: F401 - a fixture
from tests.unit.tiny_models import versioned_copy

pytestmark = pytest.mark.unit
HIDDEN = {"error": "unknown model 'parcels'", "kind": "unknown_model"}
# every model-control call on acme's `parcels` (versions 1, 2 served, 3): method, path, JSON body
CONTROL_CALLS: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("POST", "/v1/models/parcels/canary", {"version": "3", "percent": 50}),
    ("POST", "/v1/models/parcels/canary", {"version": "3"}),  # a bad body: still unknown, not a 400
    ("DELETE", "/v1/models/parcels/canary", None),
    ("POST", "/v1/models/parcels/versions/3/promote", None),
    ("POST", "/v1/models/parcels/versions/9/promote", None),
    ("POST", "/v1/models/parcels/unload", None),
    ("POST", "/v2/repository/models/parcels/unload", None),
    ("POST", "/v1/models/parcels/load", None),
    ("POST", "/v2/repository/models/parcels/load", {"parameters": {"config": "{}"}}),
    ("DELETE", "/v1/models/parcels/versions/3", None),
    ("DELETE", "/v1/models/parcels", None),
)


def _entries(world_: dict[str, Any], **query: str) -> list[dict[str, Any]]:
    """Every tenant's audit entries: read by the server's own admin (a tenant's admin reads its own tenant's)."""
    http, admin = world_["http"], _as(world_, _default_admin(world_))
    return http.get("/v1/audit", params={"limit": "500", **query}, headers=admin).json()["entries"]


def _default_admin(world_: dict[str, Any]) -> str:
    if "d_admin" not in world_["keys"]:
        world_["keys"]["d_admin"] = KeyStore(world_["engine"]).create("d_admin", "admin", "default")[1]
    return "d_admin"


def test_another_tenants_trained_model_is_unknown_to_every_model_control_action(world: dict[str, Any]) -> None:
    http, service, root = world["http"], world["service"], world["root"]
    for method, path, body in CONTROL_CALLS:
        answer = http.request(method, path, json=body, headers=_as(world, "b_admin"))
        assert (answer.status_code, answer.json()) == (404, HIDDEN), (method, path, answer.text)
    # acme's model is served as before: the same version, no canary, the same policy, every version there
    assert service.served_entry("parcels").version == "2" and "parcels" not in service.repository.canaries
    assert read_policy(root).versions == ["2"] and read_policy(root).canary is None
    assert all((root / v).is_dir() for v in ("1", "2", "3")) and len(world["store"].versions("parcels")) == 3
    # nothing was done by globex; each refusal is audited as a service's 403 is, with the caller
    assert [e for e in _entries(world, tenant="globex") if e["action"].startswith("model.")] == []
    refusals = _entries(world, tenant="globex", action="auth.*")
    assert len(refusals) == len(CONTROL_CALLS)
    assert {(e["action"], e["outcome"], e["role"]) for e in refusals} == {("auth.permission_denied", "denied", "admin")}
    assert sorted({e["target"] for e in refusals}) == sorted({path for _, path, _ in CONTROL_CALLS})


def test_another_tenants_model_answers_as_a_name_no_model_has(world: dict[str, Any]) -> None:
    """On the routes that answer a missing model with deletion's words (canary, promote, delete), another tenant's
    model answers as one. Not load and unload, whose missing-model answers name what is missing (the folder; the
    models there are, as `/v1/models` lists them to every tenant), nor a malformed body (a missing model's is a 400;
    another tenant's model is refused before its body is read)."""
    http = world["http"]
    for method, path, body in CONTROL_CALLS:
        if "load" in path or "versions/9" in path or body == {"version": "3"}:
            continue
        mine = http.request(method, path, json=body, headers=_as(world, "b_admin"))
        missing = http.request(method, path.replace("parcels", "nothing"), json=body, headers=_as(world, "b_admin"))
        assert mine.status_code == missing.status_code == 404, (path, missing.text)
        assert mine.json()["error"].replace("parcels", "nothing") == missing.json()["error"], path


def test_the_owner_still_controls_its_model(world: dict[str, Any]) -> None:
    http, service = world["http"], world["service"]
    owner = _as(world, "a_admin")
    split = http.post("/v1/models/parcels/canary", json={"version": "3", "percent": 50}, headers=owner)
    assert split.status_code == 200, split.text
    assert http.delete("/v1/models/parcels/canary", headers=owner).status_code == 200
    assert http.post("/v1/models/parcels/versions/3/promote", headers=owner).status_code == 200
    assert service.served_entry("parcels").version == "3"
    assert http.post("/v1/models/parcels/unload", headers=owner).status_code == 200
    assert http.post("/v2/repository/models/parcels/load", headers=owner).json()["version"] == "3"
    assert {e["action"] for e in _entries(world, tenant="acme")} >= {"model.promote", "model.unload", "model.load"}


def test_a_repository_model_is_controlled_by_the_servers_own_tenant_only(world: dict[str, Any]) -> None:
    """`quality_mos` (a repository model every tenant is served): a tenant's admin may not unload it for all."""
    http, service = world["http"], world["service"]
    for key in ("a_admin", "b_admin"):
        for path in ("/v1/models/quality_mos/unload", "/v2/repository/models/quality_mos/unload"):
            refused = http.post(path, headers=_as(world, key))
            assert refused.status_code == 403 and refused.json()["kind"] == "permission_denied", refused.text
            assert "is a repository model, shared by every tenant" in refused.json()["error"]
    assert "quality_mos" in service.pipeline.model_names and "quality_mos" in service.repository.entries
    assert len([e for e in _entries(world, action="auth.permission_denied") if "quality_mos" in e["target"]]) == 4
    server = _as(world, _default_admin(world))
    assert http.post("/v1/models/quality_mos/unload", headers=server).status_code == 200
    assert "quality_mos" not in service.repository.entries
    assert http.post("/v1/models/quality_mos/load", headers=server).status_code == 200
    assert http.post("/v1/models/nothing/unload", headers=_as(world, "b_admin")).status_code == 404  # still unknown
    # the server's tenant is no owner of a tenant's trained model either
    assert (http.post("/v1/models/parcels/unload", headers=server).json()) == HIDDEN


def test_a_trained_folder_no_job_recorded_is_the_servers_tenants(world: dict[str, Any]) -> None:
    """A trained-models folder put there by hand (no training row): every tenant is served it, so a tenant's admin
    may neither control it nor train versions of it (any admin could before); the server's tenant may."""
    http, service, root = world["http"], world["service"], world["root"]
    handmade = root.parent / "handmade"
    versioned_copy(service.repository.settings.model_repository / "tiny", handmade, "1")
    server = _as(world, _default_admin(world))
    assert http.post("/v1/models/handmade/load", headers=server).status_code == 200
    calls = [(m, p.replace("parcels", "handmade"), b) for m, p, b in CONTROL_CALLS if "versions/9" not in p]
    for key in ("a_admin", "b_admin"):
        for method, path, body in [*calls, ("POST", "/v1/training-jobs", {"model": "handmade", "dataset": "/x"})]:
            refused = http.request(method, path, json=body, headers=_as(world, key))
            assert refused.status_code == 403, (key, method, path, refused.text)
            assert "has no recorded owner" in refused.json()["error"]
    assert service.served_entry("handmade").version == "1" and (handmade / "1").is_dir()
    assert http.post("/v1/models/handmade/unload", headers=server).status_code == 200


GRPC_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from tests.unit.test_model_control import grpc_scenario
print("@answer " + json.dumps(asyncio.run(grpc_scenario(Path(sys.argv[1])))))
"""


async def grpc_scenario(root: Path) -> dict[str, Any]:
    """Run in a subprocess: acme's trained `parcels`, gRPC RepositoryModelUnload/Load by each tenant's admin, through
    the methods the Ingress registers (the gate, the edge's status mapping), over the tiny models."""
    from fastapi import FastAPI

    from serving.grpc.image_methods import ImageGrpcMethods
    from serving.grpc.oip_codec import pb
    from serving.grpc.oip_methods import OipGrpcMethods
    from serving.jobs.database import create_store_engine, migrate
    from serving.jobs.service import JobService
    from serving.jobs.settings import JobSettings
    from serving.model_control import load_model
    from serving.model_versions import VersionPolicy, write_policy
    from serving.security.audit import query_audit
    from serving.security.gate import SecurityGate, set_replica_gate
    from serving.security.settings import SecuritySettings
    from serving.training.service import TrainingService
    from serving.training.store import TrainingStore
    from tests.unit.tiny_models import tiny_local_service, versioned_copy

    service, settings = tiny_local_service(root)
    job_settings = JobSettings(database_url=f"sqlite:///{root / 'jobs.sqlite3'}", object_store=str(root / "o"))
    engine = create_store_engine(job_settings.database_url)
    migrate(engine)
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))
    set_replica_gate(gate)
    keys = {t: KeyStore(engine).create(t, "admin", t)[1] for t in ("acme", "globex", "default")}
    store = TrainingStore(engine)
    model_root = settings.trained_models / "parcels"
    versioned_copy(settings.model_repository / "tiny", model_root, "1")
    job = store.create("acme", None, "parcels", {})
    store.record_version("parcels", "1", job, ["a", "b"], {}, True)
    write_policy(model_root, VersionPolicy(policy="specific", versions=["1"]))
    await load_model(service, "parcels")
    jobs = JobService(service, job_settings, None, gate)

    class Servicer(OipGrpcMethods, ImageGrpcMethods):
        def __init__(self) -> None:
            self.service, self.http_app = service, FastAPI()
            self.http_app.state.training = TrainingService(service, jobs)

    class Context:
        def __init__(self, tenant: str) -> None:
            self.metadata, self.code = [("authorization", f"Bearer {keys[tenant]}")], "OK"
            self.details, self.trailing = "", []

        def invocation_metadata(self) -> list[tuple[str, str]]:
            return self.metadata

        def peer(self) -> str:
            return "ipv4:127.0.0.1:5000"

        def set_code(self, code: Any) -> None:
            self.code = code.name

        def set_details(self, details: str) -> None:
            self.details = details

        def set_trailing_metadata(self, trailing: list[tuple[str, str]]) -> None:
            self.trailing = trailing

    servicer, answers = Servicer(), []
    for tenant, method, model in (
        ("globex", "RepositoryModelUnload", "parcels"),
        ("globex", "RepositoryModelLoad", "parcels"),
        ("globex", "RepositoryModelUnload", "quality_mos"),
        ("acme", "RepositoryModelUnload", "quality_mos"),
        ("default", "RepositoryModelUnload", "parcels"),
        ("acme", "RepositoryModelUnload", "parcels"),
        ("acme", "RepositoryModelLoad", "parcels"),
        ("default", "RepositoryModelUnload", "quality_mos"),
    ):
        context = Context(tenant)
        request = getattr(pb, f"{method}Request")(model_name=model)
        await getattr(servicer, method)(request, context)
        answers.append([tenant, method, model, context.code, context.details])
    await gate.audit_writer.flush()  # refusals are written in the background
    entries = query_audit(engine, limit=100)
    audited = [[e["tenant"], e["action"], e["outcome"], e["target"]] for e in entries]
    clients = sorted({str(e["client"]) for e in entries if e["action"].startswith("model.")})
    return {"answers": answers, "audited": audited, "served": sorted(service.repository.entries), "clients": clients}


def test_grpc_repository_load_and_unload_follow_the_same_rule(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GRPC_SCRIPT, str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("@answer ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("@answer "))
    hidden = ["NOT_FOUND", "unknown model 'parcels'"]
    assert [a[3:] for a in result["answers"]] == [
        hidden,  # globex: acme's model is unknown
        hidden,
        ["PERMISSION_DENIED", result["answers"][2][4]],  # a repository model: the server's tenant's
        ["PERMISSION_DENIED", result["answers"][3][4]],
        hidden,  # nor is the server's tenant acme's model's owner
        ["OK", ""],  # acme controls its own
        ["OK", ""],
        ["OK", ""],  # and the server's tenant the repository's
    ], result["answers"]
    assert "is a repository model, shared by every tenant" in result["answers"][2][4]
    audited = result["audited"]
    assert ["globex", "model.unload", "ok", "parcels"] not in audited
    denied = [a for a in audited if a[1] == "auth.permission_denied"]
    assert sorted((a[0], a[2], a[3]) for a in denied) == sorted(
        [
            ("globex", "denied", "RepositoryModelUnload"),
            ("globex", "denied", "RepositoryModelLoad"),
            ("globex", "denied", "RepositoryModelUnload"),
            ("acme", "denied", "RepositoryModelUnload"),
            ("default", "denied", "RepositoryModelUnload"),
        ]
    ), audited
    assert ["acme", "model.unload", "ok", "parcels"] in audited and "quality_mos" not in result["served"]
    assert result["clients"] == ["127.0.0.1"]  # the caller's address, as over HTTP (it was None)
