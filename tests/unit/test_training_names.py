"""Training refuses every name the server already answers as a model other than a trained one.

Were: `POST /v1/training-jobs {"model": "classify"}` was accepted (202) and the job registered version 1 of a
trained `classify`; once promoted, `/v1/classify?model=classify` answered with the trained head while
`/v2/models/classify` (and gRPC ModelInfer) still answered the OIP image-level model: one name, two models. Repository
models' names were refused (400) already, in the same words. Real job database (SQLite), tiny models, no Ray."""

import asyncio
from pathlib import Path

import pytest

from serving.errors import BadRequestError
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.security.principal import Principal
from serving.service import IMAGE_MODEL_NAME
from serving.training.service import TrainingRequest, TrainingService
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit
OPERATOR = Principal(key_id="k1", tenant="acme", role="operator")


def _training(tmp_path: Path) -> TrainingService:
    service, _ = tiny_local_service(tmp_path)
    settings = JobSettings(database_url=f"sqlite:///{tmp_path}/jobs.sqlite3", object_store=str(tmp_path / "o"))
    return TrainingService(service, JobService(service, settings))


def _refusal(training: TrainingService, model: str) -> str:
    request = TrainingRequest(model=model, dataset="file:///nowhere")
    with pytest.raises(BadRequestError) as refused:
        asyncio.run(training.submit(request, OPERATOR))
    return str(refused.value)


def test_the_oip_image_level_model_name_is_refused_for_training(tmp_path: Path) -> None:
    training = _training(tmp_path)
    assert IMAGE_MODEL_NAME == "classify"
    message = _refusal(training, "classify")
    assert message == "'classify' is the OIP image-level model; training adds versions to trained models"
    store = asyncio.run(training.store())
    assert store.list_jobs("acme") == []  # no job was made


def test_repository_names_are_still_refused(tmp_path: Path) -> None:
    training = _training(tmp_path)
    for name in ("tiny", "quality_mos"):  # the default classifier and another repository model
        assert _refusal(training, name) == f"'{name}' is a repository model; training adds versions to trained models"


def test_a_job_queued_for_such_a_name_fails_with_the_reason_when_it_runs(tmp_path: Path) -> None:
    """A job submitted before the name was refused (or by a replica that did not refuse it) registers nothing."""
    training = _training(tmp_path)
    store = asyncio.run(training.store())
    body = TrainingRequest(model="classify", dataset="file:///nowhere").model_dump()
    job = store.create("acme", "k1", "classify", body)
    asyncio.run(training.run(job.id))
    done = store.get(job.id)
    assert done.status == "failed" and "OIP image-level model" in (done.error or ""), done
    assert not (training.settings.trained_models / "classify").exists()


def test_a_trained_models_own_name_still_trains(tmp_path: Path) -> None:
    """The owner gets past the name check (to the next one: the tiny repository has no embedding backbone)."""
    training = _training(tmp_path)
    request = TrainingRequest(model="parcels", dataset="file:///nowhere")
    with pytest.raises(Exception) as later:
        asyncio.run(training.submit(request, OPERATOR))
    assert "training adds versions to trained models" not in str(later.value)
