"""s3:// / gs:// inputs and output destinations are limited per tenant (IMGSERVE_BATCH_ALLOWED_REMOTE), as file://
ones are by the `{tenant}` root: they were accepted anywhere the server's credentials reach (another tenant's bucket,
the server's own input store), for reading and for writing."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.jobs.errors import ItemInputError, UriNotAllowedError
from serving.jobs.intake import InputPart, Intake
from serving.jobs.objects import ObjectStore, read_job_input
from serving.jobs.remote_access import RemoteAccess
from serving.jobs.service import BatchOptions, JobService
from serving.jobs.settings import JobSettings
from serving.security.principal import DEFAULT_TENANT
from tests.unit.test_jobs_operations import NoAnalysis

pytestmark = pytest.mark.unit


class Models(NoAnalysis):
    def served_entry(self, name: str | None) -> SimpleNamespace:
        return SimpleNamespace(name="m")


def _settings(tmp_path: Path, **values: object) -> JobSettings:
    return JobSettings(database_url=f"sqlite:///{tmp_path / 'j.sqlite3'}", object_store=str(tmp_path / "o"), **values)


def _destination(settings: JobSettings, tenant: str, uri: str) -> str:
    options = BatchOptions(stages=["convert"], convert={"format": "png"}, output_uri=uri)
    operations = JobService(Models(), settings).spec(options, tenant).operations
    assert operations is not None
    return str(operations["destination"])


def test_a_tenant_reads_and_writes_only_under_its_prefixes(tmp_path: Path) -> None:
    settings = _settings(tmp_path, allowed_remote="s3://imgserve-{tenant}, gs://shared/{tenant}/in")
    intake = Intake(ObjectStore(settings.object_store), settings, "tenant-a")
    for uri in ["s3://imgserve-tenant-a/holiday/x.jpg", "gcs://shared/tenant-a/in/x.jpg", "GS://shared/tenant-a/in/y"]:
        assert intake.items([InputPart("uri", uri)])[0].source == uri
    refused = ["s3://tenant-b-private/x.jpg", "s3://imgserve-tenant-b/x.jpg", "s3://imgserve-tenant-a2/x.jpg",
               "gs://shared/tenant-a/inbox/x.jpg", "s3://imgserve-tenant-a/../imgserve-tenant-b/x.jpg",
               "s3://imgserve-tenant-a/x.jpg::file:///etc/passwd"]  # fmt: skip
    for uri in refused:
        with pytest.raises(UriNotAllowedError):
            intake.items([InputPart("uri", uri)])
    assert _destination(settings, "tenant-a", "s3://imgserve-tenant-a/web/") == "s3://imgserve-tenant-a/web"
    with pytest.raises(UriNotAllowedError):
        _destination(settings, "tenant-a", "s3://imgserve-tenant-b/web")
    # and again when the item runs (the job was accepted under another setting)
    with pytest.raises(ItemInputError) as caught:
        read_job_input("uri", refused[0], ObjectStore(settings.object_store), None, 100, settings.remote_access("a"))
    assert caught.value.kind == "forbidden_uri"


def test_unset_any_location_for_the_default_tenant_none_for_the_others(tmp_path: Path) -> None:
    """A server without tenants keeps working as before; a named tenant needs the operator's list."""
    settings = _settings(tmp_path)
    assert _destination(settings, DEFAULT_TENANT, "s3://exports/web") == "s3://exports/web"
    Intake(ObjectStore(settings.object_store), settings, DEFAULT_TENANT).check([InputPart("uri", "s3://any/x.jpg")])
    with pytest.raises(UriNotAllowedError, match="IMGSERVE_BATCH_ALLOWED_REMOTE"):
        Intake(ObjectStore(settings.object_store), settings, "tenant-a").check([InputPart("uri", "s3://any/x.jpg")])
    with pytest.raises(UriNotAllowedError):
        _destination(settings, "tenant-a", "gs://tenant-b-exports/web")
    everywhere = _settings(tmp_path, allowed_remote="*")
    assert _destination(everywhere, "tenant-a", "gs://exports/web") == "gs://exports/web"
    nowhere = _settings(tmp_path, allowed_remote="none")
    with pytest.raises(UriNotAllowedError):
        _destination(nowhere, DEFAULT_TENANT, "s3://exports/web")


@pytest.mark.parametrize("allowed", [None, ["*"], ["s3://imgserve-store"]])
def test_the_servers_own_input_store_is_never_a_client_location(allowed: list[str] | None) -> None:
    access = RemoteAccess.for_tenant(allowed, DEFAULT_TENANT, "s3://imgserve-store/objects/")
    with pytest.raises(UriNotAllowedError, match="input store"):
        access.check("s3://imgserve-store/objects/sha256/ab/" + "ab" * 32)
    access.check("s3://imgserve-store/exports/x.png")  # the rest of the bucket, where the list allows it


def test_a_bad_entry_is_an_error_at_startup() -> None:
    with pytest.raises(ValueError, match="IMGSERVE_BATCH_ALLOWED_REMOTE"):
        JobSettings.from_env({"IMGSERVE_BATCH_ALLOWED_REMOTE": "http://bucket/x"})
