"""Operator walkthrough (walk4, finding 7): with auth off no replica wrote its `server.start` audit entry (README
"Audit" and docs/SECURITY.md "Accountability" promise it with no condition on auth): the Ingress wrote it through the
gate's database, which the gate opens only when auth is required. A server with batch jobs has that database with auth
off too. Without Ray: the Ingress's own start-up functions, over an SQLite job database."""

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from serving.jobs.database import open_job_database
from serving.security import audit
from serving.security.tables import audit_log

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    monkeypatch.setenv("IMGSERVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGSERVE_DATABASE_URL", url)
    return url


def _start(batch_jobs: bool) -> Any:
    """What an Ingress replica does at start about its gate and its `server.start` entry; the gate."""
    from serving.deployments.ingress_start import audit_start_without_auth, ingress_gate

    config = SimpleNamespace(placement="local", default_model="classify", direct_ingress=None, batch_jobs=batch_jobs)

    async def start() -> Any:
        gate = ingress_gate(config)  # type: ignore[arg-type]
        task = audit_start_without_auth(config, gate)  # type: ignore[arg-type]
        if task is not None:
            await asyncio.wait_for(task, 30)
        return gate

    return asyncio.run(start())


def _starts(url: str) -> list[dict[str, Any]]:
    engine = open_job_database(url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(sa.select(audit_log).where(audit_log.c.action == "server.start")).all()
    finally:
        engine.dispose()
    return [{"client": row.client, "outcome": row.outcome, **row.detail} for row in rows]


def test_a_server_with_auth_off_audits_its_start_as_with_auth_required(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGSERVE_AUTH", "off")
    gate = _start(batch_jobs=True)
    assert gate.engine is None  # the gate still opens no database with auth off
    monkeypatch.setenv("IMGSERVE_AUTH", "required")
    _start(batch_jobs=True)
    off, required = _starts(database)
    assert off["auth"] == "off" and required["auth"] == "required"
    assert off["client"] == required["client"] == "server" and off["outcome"] == "ok"
    assert off.keys() == required.keys()
    assert {"placement", "default_model", "listeners", "tls", "cors_origins", "retention_days", "jwt"} <= off.keys()
    assert off["placement"] == "local" and off["listeners"] == ["(Ray Serve proxy)"]


def test_without_batch_jobs_and_auth_off_nothing_is_opened(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGSERVE_AUTH", "off")
    _start(batch_jobs=False)
    assert _starts(database) == []


def test_the_start_is_written_once_the_database_answers(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica does not wait for its database with auth off: the entry is tried again until it is written,
    stamped with the start's time."""
    monkeypatch.setattr(audit, "START_RETRY_FIRST_S", 0.01)
    tries: list[float] = []

    def flaky_database() -> sa.Engine:
        tries.append(1)
        if len(tries) < 3:
            raise sa.exc.OperationalError("connect", {}, ConnectionRefusedError("database down"))
        return open_job_database(database)

    asyncio.run(asyncio.wait_for(audit.write_server_start_when_reachable(flaky_database, {"placement": "x"}), 30))
    assert len(tries) == 3
    assert [entry["placement"] for entry in _starts(database)] == ["x"]
