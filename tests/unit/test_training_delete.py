"""Model versions and training jobs are deleted one by one (`DELETE /v1/models/{m}/versions/{v}`,
`DELETE /v1/training-jobs/{id}`, `imgserve models delete-version`, `imgserve training-jobs delete`): before, only
`imgserve tenants erase` removed them, all of a tenant's at once. Over the real HTTP app with keys (auth required),
the real job store (SQLite), the tiny models served from a temporary trained-models folder: no Ray."""

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import serving.training.deletion as deletion
from serving.http.app import create_http_app
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.model_control import ModelLoadError, apply_policy_unlocked, load_model
from serving.model_versions import (
    METRICS_FILE,
    VersionPolicy,
    next_version,
    read_policy,
    retire_version,
    retired_versions,
    write_policy,
)
from serving.repository import UnknownModelError
from serving.security.gate import SecurityGate
from serving.security.keys import KeyStore
from serving.security.principal import http_role
from serving.security.settings import SecuritySettings
from serving.training.store import TrainingJob, TrainingStore
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit
KEYS = (("a_admin", "admin", "acme"), ("a_operator", "operator", "acme"), ("b_admin", "admin", "globex"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`parcels` (tenant acme): versions 1, 2 (served) and 3, each recorded by one completed training job."""
    service, settings = tiny_local_service(tmp_path)
    job_settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    engine = create_store_engine(job_settings.database_url)
    migrate(engine)
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))
    service.gate = gate
    keys = {name: KeyStore(engine).create(name, role, tenant)[1] for name, role, tenant in KEYS}
    store = TrainingStore(engine)
    root = settings.trained_models / "parcels"
    for version in ("1", "2", "3"):
        versioned_copy(settings.model_repository / "tiny", root, version)
        job = _job(store, "acme", "parcels", "completed", version)
        (root / version / METRICS_FILE).write_text(json.dumps({"version": version, "job_id": job.id}))
        store.record_version("parcels", version, job, ["a", "b"], {}, version == "2")
    write_policy(root, VersionPolicy(policy="specific", versions=["2"]))
    asyncio.run(load_model(service, "parcels"))
    app = create_http_app(service, JobService(service, job_settings, None, gate), settings, gate)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield {"http": http, "keys": keys, "store": store, "root": root, "service": service, "engine": engine}
    service.gate = None


def _job(store: TrainingStore, tenant: str, model: str, status: str, version: str | None = None) -> TrainingJob:
    job = store.create(tenant, None, model, {})
    if status == "running":
        assert store.claim(job.id) is not None
    elif status != "queued":
        store.finish(job.id, status, {"model": model, "version": version} if version else None)
    return store.get(job.id)


def _as(world: dict[str, Any], key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['keys'][key]}"}


def _listed_versions(world: dict[str, Any], model: str) -> list[str]:
    models = world["http"].get("/v1/models", headers=_as(world, "a_admin")).json()["models"]
    return sorted(str(v["version"]) for m in models if m["name"] == model for v in m.get("versions", []))


def _audited(world: dict[str, Any], action: str) -> list[dict[str, Any]]:
    entries = world["http"].get(f"/v1/audit?action={action}", headers=_as(world, "a_admin")).json()["entries"]
    return [{"target": e["target"], "tenant": e["tenant"], "detail": e.get("detail")} for e in entries]


def test_a_version_goes_with_its_row_and_its_number_is_never_given_again(world: dict[str, Any]) -> None:
    http, root, store = world["http"], world["root"], world["store"]
    assert _listed_versions(world, "parcels") == ["1", "2", "3"]
    answer = http.delete("/v1/models/parcels/versions/3", headers=_as(world, "a_admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "parcels", "version": "3", "deleted": True, "model_removed": False}
    assert not (root / "3").exists() and sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "1",
        "2",
        "versions.yaml",
    ]
    assert [row["version"] for row in store.versions("parcels")] == ["1", "2"]
    assert next_version(root) == "4"  # neither a folder nor a row holds 3 now: the retired number does
    assert _listed_versions(world, "parcels") == ["1", "2"]  # this replica's listing, at once
    assert world["service"].served_entry("parcels").version == "2"
    assert _audited(world, "model.delete_version") == [
        {"target": "parcels", "tenant": "acme", "detail": {"version": "3", "model_removed": False}}
    ]
    again = http.delete("/v1/models/parcels/versions/3", headers=_as(world, "a_admin"))
    assert again.status_code == 404 and "no version 3" in again.json()["error"]


def test_the_served_version_and_a_canary_are_refused_with_what_to_do(world: dict[str, Any]) -> None:
    http, root = world["http"], world["root"]
    served = http.delete("/v1/models/parcels/versions/2", headers=_as(world, "a_admin"))
    assert served.status_code == 409 and served.json()["kind"] == "version_in_use"
    assert "imgserve models promote parcels VERSION" in served.json()["error"]
    split = http.post("/v1/models/parcels/canary", json={"version": "1", "percent": 5}, headers=_as(world, "a_admin"))
    assert split.status_code == 200, split.text
    canary = http.delete("/v1/models/parcels/versions/1", headers=_as(world, "a_admin"))
    assert canary.status_code == 409 and "canary" in canary.json()["error"] and "--stop" in canary.json()["error"]
    assert (root / "1").is_dir() and (root / "2").is_dir()
    assert [row["version"] for row in world["store"].versions("parcels")] == ["1", "2", "3"]
    assert read_policy(root).versions == ["2"] and read_policy(root).canary is not None


def test_a_version_the_replica_still_serves_is_refused_though_the_policy_moved_on(world: dict[str, Any]) -> None:
    """Another replica's promotion this one has not followed yet (or could not load): its stage still answers."""
    write_policy(world["root"], VersionPolicy(policy="specific", versions=["1"]))
    answer = world["http"].delete("/v1/models/parcels/versions/2", headers=_as(world, "a_admin"))
    assert answer.status_code == 409 and (world["root"] / "2").is_dir()


def test_another_tenants_model_is_not_found_and_an_operator_may_not_delete(world: dict[str, Any]) -> None:
    http = world["http"]
    other = http.delete("/v1/models/parcels/versions/3", headers=_as(world, "b_admin"))
    unknown = http.delete("/v1/models/nothing/versions/3", headers=_as(world, "b_admin"))
    assert other.status_code == unknown.status_code == 404
    assert other.json() == {"error": "unknown model 'parcels'", "kind": unknown.json()["kind"]}
    assert http.delete("/v1/models/parcels/versions/9", headers=_as(world, "a_admin")).status_code == 404
    assert http.delete("/v1/models/parcels/versions/x", headers=_as(world, "a_admin")).status_code == 404
    assert http.delete("/v1/models/parcels/versions/3", headers=_as(world, "a_operator")).status_code == 403
    assert http_role("DELETE", "/v1/models/parcels/versions/3") == "admin"  # as the other model-control routes
    repository_model = http.delete("/v1/models/tiny/versions/1", headers=_as(world, "a_admin"))
    assert repository_model.status_code == 400 and "repository model" in repository_model.json()["error"]
    assert (world["root"] / "3").is_dir() and len(world["store"].versions("parcels")) == 3


def test_a_version_whose_job_is_still_registering_it_is_refused(world: dict[str, Any]) -> None:
    """A job whose server stopped while it registered reruns and finishes that very version: not deleted under it."""
    store, root = world["store"], world["root"]
    versioned_copy(root / "1", root, "4")
    running = _job(store, "acme", "parcels", "running")
    (root / "4" / METRICS_FILE).write_text(json.dumps({"version": "4", "job_id": running.id}))
    answer = world["http"].delete("/v1/models/parcels/versions/4", headers=_as(world, "a_admin"))
    assert answer.status_code == 409 and running.id in answer.json()["error"] and (root / "4").is_dir()


def test_an_unreadable_policy_refuses_with_its_own_message(world: dict[str, Any]) -> None:
    (world["root"] / "versions.yaml").write_text("policy: [\n")
    answer = world["http"].delete("/v1/models/parcels/versions/3", headers=_as(world, "a_admin"))
    assert answer.status_code == 409 and answer.json()["kind"] == "invalid_version_policy"
    assert (world["root"] / "3").is_dir()


def test_a_models_last_version_takes_its_folder_and_leaves_the_listing(world: dict[str, Any]) -> None:
    service, store = world["service"], world["store"]
    root = service.repository.settings.trained_models / "fresh"
    versioned_copy(service.repository.settings.model_repository / "tiny", root, "1")
    write_policy(root, VersionPolicy(policy="specific", versions=[]))  # registered, never promoted
    store.record_version("fresh", "1", _job(store, "acme", "fresh", "completed", "1"), ["a"], {}, False)
    service.repository.refresh_versions("fresh")
    assert _listed_versions(world, "fresh") == ["1"]
    answer = world["http"].delete("/v1/models/fresh/versions/1", headers=_as(world, "a_admin"))
    assert answer.status_code == 200 and answer.json()["model_removed"] is True
    assert not root.exists() and store.versions("fresh") == []
    assert "fresh" not in {
        m["name"] for m in world["http"].get("/v1/models", headers=_as(world, "a_admin")).json()["models"]
    }


def test_a_promotion_waiting_for_the_lock_cannot_serve_the_version_being_deleted(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check and the removal run under the model lock: a promotion of the version asked for in between waits,
    then finds it gone (refused, the policy put back), instead of serving a version whose folder then goes."""
    service, root, store = world["service"], world["root"], world["store"]
    remove = deletion._remove_folder
    removing: list[Callable[[], None]] = []  # tells the promotion the deletion has checked and is removing

    def remove_slowly(*args: Any) -> bool:
        removing[0]()
        time.sleep(0.3)  # the promotion is asked for meanwhile
        return remove(*args)

    async def promote_3(asked: asyncio.Event) -> str:
        await asked.wait()
        async with service.model_lock:
            policy = VersionPolicy(policy="specific", versions=["3"])
            return await apply_policy_unlocked(service, "parcels", root, policy)

    async def scenario() -> list[Any]:
        asked, loop = asyncio.Event(), asyncio.get_running_loop()
        removing.append(lambda: loop.call_soon_threadsafe(asked.set))
        deleting = deletion.delete_version(service, store, "parcels", "3", "acme")
        return await asyncio.gather(deleting, promote_3(asked), return_exceptions=True)

    monkeypatch.setattr(deletion, "_remove_folder", remove_slowly)
    deleted, promoted = asyncio.run(scenario())
    assert isinstance(deleted, deletion.DeletedVersion) and not (root / "3").exists()
    assert isinstance(promoted, (ModelLoadError, UnknownModelError)), promoted
    assert read_policy(root).versions == ["2"] and service.served_entry("parcels").version == "2"


def test_a_promotion_on_another_replica_meanwhile_keeps_the_version(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica's model lock is its own: its promotion of the version can land after this replica's check.
    The policy is read again once the folder is out of reach (nothing can load it from then on): the version is put
    back and the deletion refused, never a policy naming a version whose folder is gone."""
    service, root, store = world["service"], world["root"], world["store"]
    check = deletion._refuse_served
    checks: list[str] = []

    def promoted_elsewhere_after_the_first_check(*args: Any) -> None:
        checks.append(args[2])
        if len(checks) == 2:  # the folder is renamed away: the other replica's promotion wrote its policy before
            write_policy(root, VersionPolicy(policy="specific", versions=["3"]))
        check(*args)

    monkeypatch.setattr(deletion, "_refuse_served", promoted_elsewhere_after_the_first_check)
    with pytest.raises(deletion.VersionInUseError, match="promote another version first"):
        asyncio.run(deletion.delete_version(service, store, "parcels", "3", "acme"))
    assert checks == ["3", "3"] and (root / "3" / "config.yaml").is_file()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".deleting")) == []
    assert [row["version"] for row in store.versions("parcels")] == ["1", "2", "3"]


def test_the_next_training_job_after_a_deletion_registers_a_new_number(tmp_path: Path) -> None:
    """A real job registers versions 1 (served) and 2; version 2 deleted, the next job registers 3, not 2 again:
    neither a folder nor a row holds 2 any more, the retired number does."""
    from tests.unit.test_training_runs import World, _register_one

    world = World(tmp_path)
    world.service.repository.settings.model_repository = tmp_path / "models"
    world.service.repository.canaries, world.service.model_states = {}, {}
    world.service.repository.forget = lambda name: None
    assert asyncio.run(_register_one(world)) == "1" and asyncio.run(_register_one(world)) == "2"
    assert read_policy(world.trained / "parcels").versions == ["1"]  # 2 registered, not promoted (not better)
    asyncio.run(deletion.delete_version(world.service, world.store, "parcels", "2", "acme"))  # type: ignore[arg-type]
    assert [row["version"] for row in world.store.versions("parcels")] == ["1"]
    assert asyncio.run(_register_one(world)) == "3"
    assert [row["version"] for row in world.store.versions("parcels")] == ["1", "3"]


def test_retired_numbers_count_towards_the_next_version(tmp_path: Path) -> None:
    root = tmp_path / "parcels"
    assert next_version(root) == "1"
    root.mkdir()
    (root / "2").mkdir()
    retire_version(root, "5")
    retire_version(root, "3")
    with (root / ".deleted_versions").open("a") as marker:
        marker.write("not a number\n")
    assert retired_versions(root) == [5, 3] and next_version(root) == "6"


def test_a_finished_training_job_is_deleted_and_its_version_stays(world: dict[str, Any]) -> None:
    http, store = world["http"], world["store"]
    job_id = store.versions("parcels")[0]["training_job"]
    answer = http.delete(f"/v1/training-jobs/{job_id}", headers=_as(world, "a_admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": job_id, "model": "parcels", "status": "completed", "deleted": True}
    assert http.get(f"/v1/training-jobs/{job_id}", headers=_as(world, "a_admin")).status_code == 404
    assert [row["version"] for row in store.versions("parcels")] == ["1", "2", "3"] and (world["root"] / "1").is_dir()
    for status in ("failed", "cancelled"):
        ended = _job(store, "acme", "parcels", status)
        assert http.delete(f"/v1/training-jobs/{ended.id}", headers=_as(world, "a_admin")).status_code == 200
    assert [e["target"] for e in _audited(world, "training.delete")][:1] == [job_id]


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_queued_or_running_training_job_is_refused_until_cancelled(world: dict[str, Any], status: str) -> None:
    http, store = world["http"], world["store"]
    job = _job(store, "acme", "parcels", status)
    refused = http.delete(f"/v1/training-jobs/{job.id}", headers=_as(world, "a_admin"))
    assert refused.status_code == 409 and "cancel it first" in refused.json()["error"]
    assert store.get(job.id).status == status
    assert http.post(f"/v1/training-jobs/{job.id}/cancel", headers=_as(world, "a_admin")).status_code == 200
    assert http.delete(f"/v1/training-jobs/{job.id}", headers=_as(world, "a_admin")).status_code == 200


def test_another_tenants_or_an_unknown_training_job_is_not_found(world: dict[str, Any]) -> None:
    http, store = world["http"], world["store"]
    job = _job(store, "acme", "parcels", "completed")
    assert http.delete(f"/v1/training-jobs/{job.id}", headers=_as(world, "b_admin")).status_code == 404
    assert http.delete("/v1/training-jobs/0123", headers=_as(world, "a_admin")).status_code == 404
    assert http.delete(f"/v1/training-jobs/{job.id}", headers=_as(world, "a_operator")).status_code == 403
    assert store.get(job.id).status == "completed"


def test_the_cli_commands_send_the_deletes(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from serving.cli import main

    app = world["http"].app
    monkeypatch.setattr(httpx, "Client", lambda **kw: TestClient(app, headers=kw.get("headers")))
    key = ["--api-key", world["keys"]["a_admin"], "--url", "http://testserver"]
    assert main(["models", "delete-version", "parcels", "3", *key]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "3" and not (world["root"] / "3").exists()
    assert main(["models", "delete-version", "parcels", "2", *key]) == 1
    assert "promote another version first" in capsys.readouterr().err
    job_id = world["store"].versions("parcels")[0]["training_job"]
    assert main(["training-jobs", "delete", job_id, *key]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] is True
