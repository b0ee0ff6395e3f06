"""A trained model's version numbers are never given twice, and a whole trained model can be deleted.

Were: deleting a model's last version removed its folder and with it `.deleted_versions` (and its rows went too), so
a model trained later under that name started at version 1 again: a number a client had seen (in answers, audit,
caches) named other weights. And no call made a trained model serve nothing (its served version's DELETE is 409):
now `DELETE /v1/models/{m}` (`imgserve models delete`, `client.training.delete_model`). Over the real HTTP app and
job store of tests/unit/test_training_delete.py, and real training jobs of tests/unit/test_training_runs.py."""

# ruff: noqa: F811 - `world`, the fixture of test_training_delete, is imported and named by each test
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import serving.training.deletion as deletion
from serving.jobs.tenant_erasure import erase_tenant, remove_versions
from serving.model_versions import (
    RETIRED_MODELS_DIR,
    VersionPolicy,
    model_roots,
    next_version,
    read_states,
    write_policy,
)
from serving.repository import UnknownModelError
from serving.security.audit import AuditEntry
from serving.security.keys import KeyStore
from serving.security.principal import http_role
from tests.unit.test_training_delete import _as, _audited, _job, _listed_versions, world  # noqa: F401 - a fixture
from tests.unit.tiny_models import versioned_copy

pytestmark = pytest.mark.unit


def _unserve(world_: dict[str, Any]) -> None:
    """`parcels` serves no version (its policy names none): every version may be deleted, one by one."""
    write_policy(world_["root"], VersionPolicy(policy="specific", versions=[]))
    assert world_["http"].post("/v1/models/parcels/unload", headers=_as(world_, "a_admin")).status_code == 200


def _names(world_: dict[str, Any]) -> set[str]:
    models = world_["http"].get("/v1/models", headers=_as(world_, "a_admin")).json()["models"]
    return {m["name"] for m in models}


# ---- 1. a removed model folder's numbers stay retired ------------------------------------------------------------
def test_deleting_the_last_version_keeps_the_names_numbers(world: dict[str, Any]) -> None:
    http, root = world["http"], world["root"]
    _unserve(world)
    for version in ("1", "3", "2"):
        answer = http.delete(f"/v1/models/parcels/versions/{version}", headers=_as(world, "a_admin"))
        assert answer.status_code == 200, answer.text
    assert answer.json()["model_removed"] is True and not root.exists() and world["store"].versions("parcels") == []
    assert next_version(root) == "4"  # was "1": the folder, its .deleted_versions and the rows had all gone
    trained = root.parent
    assert [p.name for p in model_roots(trained)] == [] and "parcels" not in read_states(
        world["service"].repository.settings, set()
    )  # the record is no model: not listed, not polled
    assert "parcels" not in _names(world)


def test_the_next_training_job_after_the_last_version_went_goes_on_from_its_number(tmp_path: Path) -> None:
    """A real job registers version 1; the model is deleted (and, after a second job, its last version): the next
    jobs register 2 and then 3, never a number given before."""
    from tests.unit.test_training_runs import World, _register_one

    world_ = World(tmp_path)
    world_.service.repository.settings.model_repository = tmp_path / "models"
    world_.service.repository.canaries, world_.service.model_states = {}, {}
    world_.service.repository.forget = lambda name: None
    assert asyncio.run(_register_one(world_)) == "1"
    deleted = asyncio.run(deletion.delete_model(world_.service, world_.store, "parcels", "acme"))  # type: ignore[arg-type]
    assert deleted.versions == ["1"] and not (world_.trained / "parcels").exists()
    assert world_.store.versions("parcels") == []
    assert asyncio.run(_register_one(world_)) == "2"
    write_policy(world_.trained / "parcels", VersionPolicy(policy="specific", versions=[]))
    asyncio.run(deletion.delete_version(world_.service, world_.store, "parcels", "2", "acme"))  # type: ignore[arg-type]
    assert not (world_.trained / "parcels").exists()
    assert asyncio.run(_register_one(world_)) == "3"


def test_tenant_erasure_removes_the_tenants_number_records(world: dict[str, Any]) -> None:
    service, store = world["service"], world["store"]
    trained = service.repository.settings.trained_models
    mine = asyncio.run(deletion.delete_model(service, store, "parcels", "acme"))
    assert mine.versions == ["1", "2", "3"]
    other = trained / "other"  # globex's model, deleted too: its record stays
    versioned_copy(service.repository.settings.model_repository / "tiny", other, "1")
    store.record_version("other", "1", _job(store, "globex", "other", "completed", "1"), ["a"], {}, False)
    asyncio.run(deletion.delete_model(service, store, "other", "globex"))
    assert sorted(p.name for p in (trained / RETIRED_MODELS_DIR).iterdir() if not p.name.startswith(".")) == [
        "other",
        "parcels",
    ]
    report = erase_tenant(world["engine"], None, trained, "acme", AuditEntry(action="tenant.erase"))
    assert report.retired_model_records == 1
    assert sorted(p.name for p in (trained / RETIRED_MODELS_DIR).iterdir() if not p.name.startswith(".")) == ["other"]
    assert "acme" not in (trained / RETIRED_MODELS_DIR / "other").read_text()
    assert next_version(trained / "parcels") == "1" and next_version(trained / "other") == "2"


# ---- 2. DELETE /v1/models/{m} ------------------------------------------------------------------------------------
def test_a_trained_model_is_deleted_with_every_version_and_stops_being_served(world: dict[str, Any]) -> None:
    http, root, service = world["http"], world["root"], world["service"]
    assert service.served_entry("parcels").version == "2" and _listed_versions(world, "parcels") == ["1", "2", "3"]
    answer = http.delete("/v1/models/parcels", headers=_as(world, "a_admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "parcels", "deleted": True, "versions": ["1", "2", "3"]}
    assert not root.exists() and world["store"].versions("parcels") == []
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".deleting")]
    with pytest.raises(UnknownModelError):  # out of service on this replica at once
        service.served_entry("parcels")
    assert "parcels" not in _names(world) and "parcels" not in service.model_states
    assert _audited(world, "model.delete") == [
        {"target": "parcels", "tenant": "acme", "detail": {"versions": ["1", "2", "3"]}}
    ]
    assert next_version(root) == "4"  # its numbers stay retired
    assert world["store"].get(world["store"].list_jobs("acme")[0].id).status == "completed"  # its jobs stay
    again = http.delete("/v1/models/parcels", headers=_as(world, "a_admin"))
    assert again.status_code == 404


def test_another_tenants_a_repository_or_an_unknown_model_is_not_found(world: dict[str, Any]) -> None:
    http = world["http"]
    for name, key in (
        ("parcels", "b_admin"),
        ("tiny", "a_admin"),
        ("nothing", "a_admin"),
        (".retired-models", "a_admin"),
    ):
        answer = http.delete(f"/v1/models/{name}", headers=_as(world, key))
        assert answer.status_code == 404, (name, answer.text)
    assert http.delete("/v1/models/parcels", headers=_as(world, "b_admin")).json()["error"] == "unknown model 'parcels'"
    assert http.delete("/v1/models/parcels", headers=_as(world, "a_operator")).status_code == 403
    assert http_role("DELETE", "/v1/models/parcels") == "admin"
    assert world["service"].served_entry("tiny").version and world["service"].served_entry("parcels").version == "2"
    assert (world["root"] / "3").is_dir() and len(world["store"].versions("parcels")) == 3


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_model_with_an_unfinished_training_job_is_refused(world: dict[str, Any], status: str) -> None:
    http, store = world["http"], world["store"]
    job = _job(store, "acme", "parcels", status)
    refused = http.delete("/v1/models/parcels", headers=_as(world, "a_admin"))
    assert refused.status_code == 409 and job.id in refused.json()["error"], refused.text
    assert world["service"].served_entry("parcels").version == "2" and (world["root"] / "2").is_dir()
    assert len(store.versions("parcels")) == 3
    assert http.post(f"/v1/training-jobs/{job.id}/cancel", headers=_as(world, "a_admin")).status_code == 200
    assert http.delete("/v1/models/parcels", headers=_as(world, "a_admin")).status_code == 200


def test_the_cli_and_the_sdk_delete_a_model(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx
    from fastapi.testclient import TestClient

    from serving.cli import main
    from serving.client import Client

    app = world["http"].app
    monkeypatch.setattr(httpx, "Client", lambda **kw: TestClient(app, headers=kw.get("headers")))
    key = ["--api-key", world["keys"]["a_admin"], "--url", "http://testserver"]
    assert main(["models", "delete", "parcels", *key]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "parcels", "deleted": True, "versions": ["1", "2", "3"]}
    assert main(["models", "delete", "parcels", *key]) == 1
    assert "unknown model 'parcels'" in capsys.readouterr().err
    fresh = world["service"].repository.settings.trained_models / "fresh"  # put there by hand: the server's tenant's
    versioned_copy(world["service"].repository.settings.model_repository / "tiny", fresh, "1")
    server_admin = KeyStore(world["engine"]).create("d_admin", "admin", "default")[1]
    with Client("http://testserver", api_key=server_admin) as client:
        assert client.training.delete_model("fresh") == {"name": "fresh", "deleted": True, "versions": ["1"]}
    assert not fresh.exists()


# ---- a tenant erased while its job registers a promoted version ------------------------------------------------
def test_a_version_removed_by_an_erasure_stops_being_served_here_at_once(world: dict[str, Any]) -> None:
    """The job's path when its row cannot be recorded (tenant erased): it removes the version it promoted, and this
    replica stops serving it now, not at its next model poll."""
    service, root = world["service"], world["root"]
    remove_versions(root.parent, [("parcels", v) for v in ("1", "2", "3")])
    assert not root.exists() and service.served_entry("parcels").version == "2"  # what the job left before
    asyncio.run(deletion.forget_if_removed(service, "parcels"))
    with pytest.raises(UnknownModelError):
        service.served_entry("parcels")
    assert "parcels" not in _names(world)


def test_erasure_rewrite_and_a_deletions_append_of_the_records_take_turns(tmp_path: Path) -> None:
    """Tenant erasure rewrites `.retired-models/<name>` (read, filter, replace): a line another replica appended in
    between was lost, and that name's numbers could be given again. Both hold the records' own lock."""
    import threading

    from serving.model_versions import RETIRED_MODELS_DIR, _records_lock, forget_removed_models, record_removed_model

    (tmp_path / "cats" / "3").mkdir(parents=True)
    record_removed_model(tmp_path / "cats", "tenant-a")
    appended = threading.Event()
    with _records_lock(tmp_path / RETIRED_MODELS_DIR):  # as erasure between its read and its replace
        worker = threading.Thread(target=lambda: (record_removed_model(tmp_path / "cats", "tenant-b"), appended.set()))
        worker.start()
        assert not appended.wait(0.3)  # the append waits for the lock
    worker.join(5)
    assert appended.is_set()
    assert forget_removed_models(tmp_path, "tenant-a") == ["cats"]
    lines = (tmp_path / RETIRED_MODELS_DIR / "cats").read_text().splitlines()
    assert [json.loads(line)["tenant"] for line in lines] == ["tenant-b"]
