"""A repository model whose backend fails to load when the replica starts (its config names an output its graph does
not have) is listed unavailable with the reason, and the rest of the repository is served: it stopped the whole
server ("application(s) ['imgserve'] failed to deploy"), where a failed load at runtime leaves what was served."""

import shutil
from pathlib import Path

import pytest
import yaml

from serving.config.app_args import AppArgs
from serving.errors import classify_error
from serving.placement import build_service, compose
from serving.requests import ImageOptions
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit


def _contradicting_copy(models: Path, name: str) -> None:
    shutil.copytree(models / "tiny", models / name)
    config = yaml.safe_load((models / name / "config.yaml").read_text())
    config["name"] = name
    config["outputs"][0]["name"] = "prob"  # the graph's output is `logits`
    (models / name / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_model_whose_graph_contradicts_its_config_is_unavailable_and_the_rest_served(tmp_path: Path) -> None:
    import asyncio

    settings = tiny_settings(tmp_path)
    _contradicting_copy(settings.model_repository, "broken")
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    entry = service.repository.entries["broken"]
    assert not entry.available and "prob" in (entry.unavailable_reason or "")
    row = service.repository.versions["broken"][entry.version]  # what the repository index and versions list read
    assert row.unavailable_reason == entry.unavailable_reason  # "not deployed in this application" before
    assert str(tmp_path) not in (entry.unavailable_reason or "")  # listed to every caller: no server paths
    results = asyncio.run(service.classify([jpeg()], ImageOptions.parse()))
    assert results[0].predictions  # the default model is served
    with pytest.raises(Exception) as refused:
        asyncio.run(service.classify([jpeg()], ImageOptions.parse(model="broken")))
    info = classify_error(refused.value)
    assert info.http_status == 503 and info.kind == "model_unavailable", info


def test_the_graph_placement_does_not_deploy_a_model_whose_graph_contradicts_its_config(tmp_path: Path) -> None:
    """The graph placement deployed `model-broken` (one deployment per model of `stages.models`), whose replica
    failed three times and took the application down."""
    settings = tiny_settings(tmp_path)
    _contradicting_copy(settings.model_repository, "broken")
    config = compose(AppArgs(placement="graph", default_model="tiny"), settings)
    assert "broken" not in config.stages.models and "tiny" in config.stages.models
    assert "output 'prob' is not a graph output" in (config.repository.entries["broken"].unavailable_reason or "")


def test_a_default_model_that_does_not_build_still_refuses_the_start(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path)
    _contradicting_copy(settings.model_repository, "broken")
    with pytest.raises(RuntimeError, match="default model 'broken' cannot be served"):
        build_service(compose(AppArgs(placement="local", default_model="broken"), settings))


def test_a_version_whose_labels_cannot_be_read_is_listed_without_server_paths(tmp_path: Path) -> None:
    """/v1/models (any viewer) listed "...its labels cannot be read: /srv/models/m/1/labels.txt: 5 labels but ..."."""
    from serving.config.model_config import load_model_config
    from serving.repository import read_labels
    from tests.unit.tiny_models import versioned_copy

    settings = tiny_settings(tmp_path)
    models = settings.model_repository
    for version in ("1", "2"):
        versioned_copy(models / "tiny", models / "parcels", version)
    (models / "parcels" / "1" / "labels.txt").write_text("a\nb\n")  # not served (2 is the newest), and broken
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    reason = service.repository.versions["parcels"]["1"].unavailable_reason or ""
    assert "parcels/1/labels.txt: 2 labels" in reason and str(tmp_path) not in reason, reason

    shutil.copytree(models / "tiny", tmp_path / "nolabels")
    config = load_model_config(tmp_path / "nolabels" / "config.yaml").model_copy(
        update={"name": "nolabels", "labels": "missing.txt"}
    )
    with pytest.raises(ValueError) as unreadable:
        read_labels(config, tmp_path / "nolabels")
    said = str(unreadable.value)
    assert "nolabels/missing.txt: cannot be read" in said and str(tmp_path) not in said, said


def test_a_canary_whose_graph_contradicts_its_config_is_not_deployed(tmp_path: Path) -> None:
    """The graph placement deployed `model-parcels@2` for a canary version whose config names an output its graph
    lacks: its replica failed and took the application down. The split ends; version 1 answers every request."""
    from tests.unit.test_canary_restart import canary_repository

    settings = canary_repository(tmp_path)
    canary_config = settings.trained_models / "parcels" / "2" / "config.yaml"
    raw = yaml.safe_load(canary_config.read_text())
    raw["outputs"][0]["name"] = "prob"
    canary_config.write_text(yaml.safe_dump(raw))
    config = compose(AppArgs(placement="graph", default_model="tiny"), settings)
    assert "parcels@2" not in config.stages.models and "parcels" in config.stages.models
    assert "parcels" not in config.repository.canaries
