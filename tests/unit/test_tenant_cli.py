"""Operator walkthrough (walk4, finding 8): `imgserve tenants webhook-secret nosuchtenant` exited 0, printed a secret
and made the tenant (a mistyped name gave a secret the real tenant never signs with), and `tenants set <typo>` made a
tenant without a word. An unknown tenant is refused (one line, exit 2) unless `tenants set --create` sets it up; a
tenant is known by its settings row (keys make one), its jobs, collections or training jobs, or being `default`.
A quota of 0 stays accepted (it freezes a key or tenant), and says so."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.cli import main as cli_main
from serving.jobs.database import open_job_database
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.store import JobStore
from serving.security.tables import audit_log, tenants

pytestmark = pytest.mark.unit


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    monkeypatch.setenv("IMGSERVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGSERVE_DATABASE_URL", url)
    return url


def _tenant_rows(url: str) -> list[str]:
    engine = open_job_database(url)
    try:
        with engine.begin() as conn:
            return [row.id for row in conn.execute(sa.select(tenants.c.id).order_by(tenants.c.id))]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "argv", [["tenants", "webhook-secret", "acmee"], ["tenants", "webhook-secret", "acmee", "--rotate"],
             ["tenants", "set", "acmee", "--quota-images", "10"], ["tenants", "set", "acmee", "--anonymize"]]
)  # fmt: skip
def test_an_unknown_tenant_is_refused_and_not_made(
    database: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "acme"]) == 0
    capsys.readouterr()
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "unknown tenant 'acmee'" in err and "--create" in err, err
    assert _tenant_rows(database) == ["acme"]
    engine = open_job_database(database)
    with engine.begin() as conn:
        assert conn.execute(sa.select(audit_log).where(audit_log.c.tenant == "acmee")).first() is None
    engine.dispose()


def test_tenants_set_create_makes_a_tenant_and_says_so(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["tenants", "set", "newco", "--create", "--quota-images", "100"]) == 0
    out, err = capsys.readouterr()
    assert "created tenant newco" in err and '"quota_images_per_day": 100' in out
    assert cli_main(["tenants", "set", "newco", "--quota-images", "200"]) == 0  # known now
    assert "created" not in capsys.readouterr().err
    assert cli_main(["tenants", "webhook-secret", "newco", "--rotate"]) == 0  # makes its own
    made = capsys.readouterr().out.splitlines()[-1]
    assert made.startswith("whsec_")
    assert cli_main(["tenants", "webhook-secret", "newco"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == made  # a read prints it, changes nothing


def test_reading_a_secret_a_tenant_does_not_have_makes_none(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A read made one: with IMGSERVE_WEBHOOK_SECRET signing the tenant's deliveries, the tenant's own (new) secret
    replaced it at once, without the 24 h of two signatures a rotation gives, and receivers refused deliveries."""
    from serving.security.tenants import TenantStore

    assert cli_main(["tenants", "set", "quiet", "--create"]) == 0
    capsys.readouterr()
    assert cli_main(["tenants", "webhook-secret", "quiet"]) == 1
    assert "has no webhook secret of its own" in capsys.readouterr().err
    engine = open_job_database(database)
    assert TenantStore(engine).signing_secrets("quiet") == ()  # the server's secret still signs
    engine.dispose()


def test_tenants_known_by_keys_jobs_or_the_default_name_are_served(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JWT caller's tenant has no key and no settings row until something makes one: its jobs make it known."""
    engine = open_job_database(database)
    JobStore(engine).create_job(JobSpec("m", 1, ("classification",)), [NewItem("a.jpg", "object", "0" * 64, 1)],
                                tenant="jwtco")  # fmt: skip
    engine.dispose()
    assert cli_main(["keys", "create", "--name", "k", "--role", "analyst", "--tenant", "acme"]) == 0
    for tenant in ("jwtco", "acme", "default"):  # known (1: no secret of its own yet), not refused as unknown (2)
        assert cli_main(["tenants", "webhook-secret", tenant]) == 1, tenant
    assert cli_main(["tenants", "set", "jwtco", "--anonymize"]) == 0
    assert "created" not in capsys.readouterr().err


def test_a_quota_of_zero_is_a_frozen_key_and_says_so(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["keys", "create", "--name", "k", "--role", "viewer", "--tenant", "acme", "--quota", "0"]) == 0
    assert "quota 0 images/day (none allowed" in capsys.readouterr().out
    assert cli_main(["tenants", "set", "acme", "--quota-images", "0"]) == 0
    assert '"quota_images_per_day": 0' in capsys.readouterr().out
