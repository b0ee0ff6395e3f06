"""A trained model belongs to the tenant that trained it: another tenant cannot add (and promote) a version of it,
which would replace what the first tenant's requests are answered by. Real job database (SQLite), tiny models."""

import asyncio
from pathlib import Path

import pytest

from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.security.errors import PermissionDeniedError
from serving.security.principal import Principal
from serving.training.service import TrainingRequest, TrainingService
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def test_another_tenant_cannot_train_a_version_of_a_tenants_model(tmp_path: Path) -> None:
    service, _ = tiny_local_service(tmp_path)
    settings = JobSettings(database_url=f"sqlite:///{tmp_path}/jobs.sqlite3", object_store=str(tmp_path / "o"))
    training = TrainingService(service, JobService(service, settings))

    async def scenario() -> None:
        store = await training.store()
        job = await asyncio.to_thread(store.create, "acme", "k1", "parcels", {})
        await asyncio.to_thread(store.record_version, "parcels", "1", job, ["box", "envelope"], {}, True)
        request = TrainingRequest(model="parcels", dataset="file:///nowhere")
        with pytest.raises(PermissionDeniedError, match="another tenant"):
            await training.submit(request, Principal(key_id="k2", tenant="globex", role="operator"))
        # The owner gets past this check (to the next one: the tiny repository has no embedding backbone).
        with pytest.raises(Exception) as owner:
            await training.submit(request, Principal(key_id="k1", tenant="acme", role="operator"))
        assert not isinstance(owner.value, PermissionDeniedError)

    asyncio.run(scenario())


def test_a_tenant_cannot_train_on_a_bucket_it_may_not_name(tmp_path: Path) -> None:
    """Were: a training dataset s3:// / gs:// was listed and read with the server's credentials for any tenant,
    though batch jobs keep each tenant to IMGSERVE_BATCH_ALLOWED_REMOTE (unset: none for a named tenant)."""
    from serving.jobs.errors import UriNotAllowedError

    service, _ = tiny_local_service(tmp_path)
    settings = JobSettings(database_url=f"sqlite:///{tmp_path}/jobs.sqlite3", object_store=str(tmp_path / "o"))
    training = TrainingService(service, JobService(service, settings))
    request = TrainingRequest(model="parcels", dataset="s3://another-tenants-bucket/photos")
    with pytest.raises(UriNotAllowedError, match="may not name s3"):  # before anything is listed or read
        asyncio.run(training._dataset(request, "globex"))
