"""Model control and metadata over the tiny local service: a model name is a folder name, never a path; a load that
fails leaves `imgserve_model_info` as it was; the image-level model's version 1 answers its config whatever version
the default classifier serves; a model that serves no version can have one promoted."""

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.metrics import MODEL_INFO
from serving.model_control import ModelLoadError, load_model
from serving.model_versions import CanarySplit, VersionPolicy, read_policy, write_policy
from serving.oip import inference as oip
from serving.placement import build_service, compose
from serving.repository import UnknownModelError
from tests.unit.tiny_models import tiny_local_service, tiny_settings, versioned_copy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_a_path_is_not_a_model_name(tmp_path: Path, form: str) -> None:
    """gRPC RepositoryModelLoad took any text: `/elsewhere/tiny` loaded that folder's model into the stage `tiny`
    (its config names it so) while the repository still described the old one, and listed a model '/elsewhere/tiny'."""
    service, settings = tiny_local_service(tmp_path / "served")
    outside = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(settings.model_repository / "tiny", outside)
    before = service.pipeline.models["tiny"]
    name = str(outside) if form == "absolute" else f"../../elsewhere/{outside.name}"
    with pytest.raises(UnknownModelError):
        asyncio.run(load_model(service, name))
    assert service.pipeline.models["tiny"] is before
    assert sorted(service.repository.entries) == ["quality_mos", "tiny"]


def _model_info(model: str, version: str) -> float:
    return sum(
        sample.value
        for metric in MODEL_INFO.collect()
        for sample in metric.samples
        if sample.labels.get("model") == model and sample.labels.get("version") == version
    )


def test_a_load_that_fails_leaves_the_model_info_gauge_as_it_was(tmp_path: Path) -> None:
    """The served version's new stage was built and counted, then the canary's backend failed: the stage was dropped
    but never counted off, so `imgserve_model_info` said two replicas of version 1 (or a version never served)."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "review-parcels"  # a name no other test's (never retired) stages count under
    for version in ("1", "2"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    config = yaml.safe_load((root / "2" / "config.yaml").read_text())
    config["input"]["name"] = "not_a_graph_input"  # verified weights, but the backend refuses the graph
    (root / "2" / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "versions.yaml").write_text("policy: specific\nversions: ['1']\n")
    before = _model_info("review-parcels", "1")
    assert asyncio.run(load_model(service, "review-parcels")) == "1"
    assert _model_info("review-parcels", "1") == before + 1
    (root / "versions.yaml").write_text("policy: specific\nversions: ['1']\ncanary: {version: '2', percent: 10}\n")
    with pytest.raises(ModelLoadError, match="not_a_graph_input"):
        asyncio.run(load_model(service, "review-parcels"))
    assert _model_info("review-parcels", "1") == before + 1
    assert _model_info("review-parcels", "2") == 0
    served = service.served_entry("review-parcels")
    assert served.version == "1" and "review-parcels" not in service.repository.canaries


def test_the_image_model_config_answers_its_version_1_whatever_the_classifier_serves(tmp_path: Path) -> None:
    """/v2/models/classify/versions/1/config looked for version 1 of the default classifier: a 404 once that
    classifier served version 2, though the metadata lists version 1 of `classify`."""
    settings = tiny_settings(tmp_path)
    flat = settings.model_repository / "tiny"
    staged = tmp_path / "tiny_flat"
    flat.rename(staged)
    versioned_copy(staged, flat, "2")
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    assert service.served_entry("tiny").version == "2"
    with TestClient(create_http_app(service, settings=settings), raise_server_exceptions=False) as http:
        assert http.get("/v2/models/classify").json()["versions"] == ["1"]
        unversioned = http.get("/v2/models/classify/config")
        versioned = http.get("/v2/models/classify/versions/1/config")
        assert unversioned.status_code == 200, unversioned.text
        assert versioned.status_code == 200, versioned.text
        assert versioned.json() == unversioned.json()
        assert http.get("/v2/models/classify/versions/2/config").status_code == 404


def test_a_version_of_a_model_that_serves_none_can_be_promoted(tmp_path: Path) -> None:
    """A training job that did not promote its model's first version writes `specific: []` and lists the model
    "until someone promotes it"; the CLI then says `imgserve models promote <model> 1` serves it. The promotion read
    the served version first, and answered 404 "not loaded": the model could only be served by editing its folder.
    The same after an unload: promoting a version to serve it again was a 404."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "fresh"
    versioned_copy(settings.model_repository / "tiny", root, "1")
    versioned_copy(settings.model_repository / "tiny", root, "2")
    write_policy(root, VersionPolicy(policy="specific", versions=[]))
    service.repository.refresh_versions("fresh")  # as the training job does for a version it did not promote
    with TestClient(create_http_app(service, settings=settings), raise_server_exceptions=False) as http:
        promoted = http.post("/v1/models/fresh/versions/1/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["version"] == "1" and service.served_entry("fresh").version == "1"
        assert http.post("/v1/models/fresh/unload").status_code == 200
        again = http.post("/v1/models/fresh/versions/2/promote")
        assert again.status_code == 200, again.text
        assert service.served_entry("fresh").version == "2"
        assert http.post("/v1/models/fresh/unload").status_code == 200
        canary = http.post("/v1/models/fresh/canary", json={"version": "1", "percent": 10})
        assert canary.status_code == 404 and "not loaded" in canary.json()["error"]  # a split needs a served version
        assert read_policy(root).versions == ["2"] and read_policy(root).canary is None


def test_the_repository_index_ready_flag_is_a_boolean(tmp_path: Path) -> None:
    """`{"ready": "false"}` was read as true (a non-empty string): the index left out every version not loaded."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "listed"
    versioned_copy(settings.model_repository / "tiny", root, "1")
    write_policy(root, VersionPolicy(policy="specific", versions=[]))
    service.repository.refresh_versions("listed")
    with TestClient(create_http_app(service, settings=settings), raise_server_exceptions=False) as http:
        every = http.post("/v2/repository/index", json={"ready": False}).json()
        ready = http.post("/v2/repository/index", json={"ready": True}).json()
        assert {"name": "listed", "version": "1"}.items() <= next(r for r in every if r["name"] == "listed").items()
        assert "listed" not in [row["name"] for row in ready]
        assert http.post("/v2/repository/index").json() == every
        refused = http.post("/v2/repository/index", json={"ready": "false"})
        assert refused.status_code == 400, refused.text
        assert "ready" in refused.json()["error"]


def test_a_canary_versions_metadata_reports_its_own_stage(tmp_path: Path) -> None:
    """The metadata of version 2 (the canary) asked the backend report of the served version's stage (`m`, not
    `m@2`): its platform was the other version's when the two versions prefer different backends."""
    service, settings = tiny_local_service(tmp_path)
    root = settings.trained_models / "split"
    for version in ("1", "2"):
        versioned_copy(settings.model_repository / "tiny", root, version)
    write_policy(root, VersionPolicy(policy="specific", versions=["1"], canary=CanarySplit(version="2", percent=10)))
    asked: list[str] = []
    report = service.backend_info

    async def recorded(key: str) -> dict:
        asked.append(key)
        return await report(key)

    service.backend_info = recorded  # type: ignore[method-assign]

    async def scenario() -> tuple[dict, dict]:
        await load_model(service, "split")
        return await oip.model_metadata(service, "split", "2"), await oip.model_metadata(service, "split")

    canary, served = asyncio.run(scenario())
    assert asked == ["split@2", "split"]
    assert canary["versions"] == served["versions"] == ["1", "2"]
