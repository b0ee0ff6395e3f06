"""What a training job may ask, by its caller (security review). Its dataset counts against the caller's daily image
quotas, as a batch job's images do: a tenant frozen with a quota of 0 got 429 on /v1/batch and /v1/classify but
could still train, embedding every dataset image through the server's models (charged once, when the job is
accepted). And `promote: always`, a promotion whatever the new version's accuracy, takes the admin role as
promoting does: an operator's job promoted its version that way."""

from typing import Any

import pytest

import serving.training.service as training_service
from serving.security.tenants import TenantStore
from tests.unit.test_edges_in_process import jpeg
from tests.unit.test_security_in_process import auth, world  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.unit


@pytest.fixture
def trainable(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """The tiny model as the embedding backbone (the tiny world has no embedding model), jobs accepted but not run;
    a dataset of 2 x 3 images in tenant ops' folder. Returns its URI."""
    monkeypatch.setattr(
        training_service, "embedding_backbone", lambda service, name: service.repository.entries["tiny"]
    )
    monkeypatch.setattr(training_service, "base_classifier", lambda service, backbone: backbone)
    monkeypatch.setattr(training_service.TrainingService, "schedule", lambda self, job_id: None)
    for tenant in ("ops", "default"):
        for category in ("cat", "dog"):
            (world["root"] / "in" / tenant / category).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                (world["root"] / "in" / tenant / category / f"{i}.jpg").write_bytes(jpeg((i * 50, 20, 20)))
    return f"file://{world['root'] / 'in' / 'ops'}"


def test_a_frozen_tenant_cannot_train_and_a_training_job_is_charged(world: dict[str, Any], trainable: str) -> None:  # noqa: F811
    http, tenants = world["http"], TenantStore(world["engine"])
    body = {"model": "parcels", "dataset": trainable}
    tenants.update("ops", quota_images_per_day=6)
    accepted = http.post("/v1/training-jobs", json=body, headers=auth(world, "op"))
    assert accepted.status_code == 202, accepted.text
    refused = http.post("/v1/training-jobs", json=body, headers=auth(world, "op"))  # the 6 images used the day's 6
    assert refused.status_code == 429 and refused.json()["kind"] == "quota_exceeded", refused.text
    tenants.update("ops", quota_images_per_day=0)
    frozen = http.post("/v1/training-jobs", json=body, headers=auth(world, "op"))
    assert frozen.status_code == 429 and frozen.json()["kind"] == "quota_exceeded", frozen.text  # 202 before


def test_promote_always_takes_the_admin_role(world: dict[str, Any], trainable: str) -> None:  # noqa: F811
    http, dataset = world["http"], trainable.replace("/in/ops", "/in/default")
    body = {"model": "parcels", "dataset": dataset, "promote": "always"}
    refused = http.post("/v1/training-jobs", json=body, headers=auth(world, "d_op"))
    assert refused.status_code == 403 and refused.json()["kind"] == "permission_denied", refused.text  # 202 before
    assert "promote=always needs the admin role" in refused.json()["error"]
    assert http.post("/v1/training-jobs", json=body, headers=auth(world, "d_admin")).status_code == 202
    body["promote"] = "if_better"
    assert http.post("/v1/training-jobs", json=body, headers=auth(world, "d_op")).status_code == 202
