"""A classifier named as a training backbone is the client's mistake (400), whether or not its weights are here:
`resnet50` without weights was a 503 `model_unavailable` (a server error) where a served classifier got the 400."""

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.errors import BadRequestError, ModelUnavailableError
from serving.http.dependencies import get_principal
from serving.http.training_routes import router
from serving.security.principal import Principal
from tests.unit.test_training_runs import World

pytestmark = pytest.mark.unit
OWNER = Principal(key_id="k1", tenant="acme", role="admin")


def _world(tmp_path: Path, available: bool) -> World:
    """The training world, its repository also listing `resnet50`: a classifier, servable only when `available`."""
    world = World(tmp_path)
    service = world.service
    classifier = service.repository.entries["tiny"]
    backbone = service.served_entry("mobilenet_v2_embedding")
    entries = {"resnet50": classifier, "mobilenet_v2_embedding": backbone, "tiny": classifier}

    def loaded_entry(name: str) -> object:
        return entries[name]

    def served_entry(name: str) -> object:
        if name == "resnet50" and not available:
            raise ModelUnavailableError("model 'resnet50' is not available: weights file is missing")
        return entries[name]

    service.loaded_entry, service.served_entry = loaded_entry, served_entry
    return world


def _submit(world: World, backbone: str) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.training = world.training
    app.dependency_overrides[get_principal] = lambda: OWNER
    body = {"model": "parcels", "dataset": f"file://{world.dataset}", "backbone": backbone}
    with TestClient(app) as client:  # no error handlers here: the service error itself comes out
        client.post("/v1/training-jobs", json=body)


@pytest.mark.parametrize("available", [False, True])
def test_a_classifier_as_backbone_is_a_400_whether_or_not_it_is_available(tmp_path: Path, available: bool) -> None:
    world = _world(tmp_path, available)
    with pytest.raises(BadRequestError, match="backbone 'resnet50' is not an embedding model"):
        _submit(world, "resnet50")


def test_an_unavailable_embedding_backbone_stays_a_503(tmp_path: Path) -> None:
    world = _world(tmp_path, available=True)
    world.service.served_entry = lambda name: (_ for _ in ()).throw(ModelUnavailableError("no weights"))
    with pytest.raises(ModelUnavailableError):
        _submit(world, "mobilenet_v2_embedding")
