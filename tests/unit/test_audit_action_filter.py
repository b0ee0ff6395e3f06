"""The audit log's `action` filter: the action itself, or with a `*` at the end a prefix; nothing else is a
wildcard. It was passed to SQL LIKE with `*` turned into `%`: `action=%` returned every entry and
`action=job_creat_` matched `job.create` (found by a hostile-client walkthrough)."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.security.audit import AuditEntry, query_audit, write_entry

pytestmark = pytest.mark.unit

ACTIONS = ("job.create", "job.cancel", "job.purge", "auth.rate_limited", "odd%_name", "odd*star")


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    migrate(store)
    with store.begin() as conn:
        for action in ACTIONS:
            write_entry(conn, AuditEntry(action=action, client="t"))
    return store


def _actions(engine: sa.Engine, action: str) -> list[str]:
    return [entry["action"] for entry in query_audit(engine, action=action)]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("%", []),  # LIKE's wildcards are plain characters
        ("job_creat_", []),
        ("job%", []),
        ("j%.*", []),
        ("_ob.*", []),
        ("job.create", ["job.create"]),
        ("JOB.CREATE", []),  # the same on SQLite (whose LIKE ignores ASCII case) as on PostgreSQL
        ("job.*", ["job.create", "job.cancel", "job.purge"]),
        ("job.c*", ["job.create", "job.cancel"]),
        ("auth.*", ["auth.rate_limited"]),
        ("*", list(ACTIONS)),
        ("odd%_*", ["odd%_name"]),  # a prefix with the characters in it, literally
        ("odd*", ["odd%_name", "odd*star"]),
        ("odd*star", ["odd*star"]),  # a `*` not at the end is literal
        ("job.*e", []),
        ("job.**", []),  # only the last `*` is a wildcard: the prefix is `job.*`
    ],
)
def test_the_action_filter_has_one_wildcard_a_trailing_star(
    engine: sa.Engine, action: str, expected: list[str]
) -> None:
    assert _actions(engine, action) == expected


def test_postgresql_gets_the_same_comparison_without_like() -> None:
    """The same SQLAlchemy expression runs on PostgreSQL (IMGSERVE_DATABASE_URL): no LIKE, so no wildcard or
    escape rule of its own; its `substr` counts characters, as SQLite's does."""
    from sqlalchemy.dialects import postgresql

    from serving.security.audit import action_filter

    sql = str(action_filter("job_*").compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    assert "LIKE" not in sql.upper() and "substr(audit_log.action, 1, 4) = 'job_'" in sql, sql
