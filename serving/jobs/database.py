"""Engines for the job store and its migrations: SQLite (embedded default) or PostgreSQL.

SQLite is shared by the ingress and the worker processes: WAL lets readers run beside the writer, every
transaction starts with BEGIN IMMEDIATE (a deferred one that later writes can fail with "database is
locked" instead of waiting) and `busy_timeout` makes writers queue rather than fail.
"""

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

logger = logging.getLogger("imgserve.jobs")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x696D6773  # pg_advisory_xact_lock key: one migrator at a time across processes


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's `begin` event issues BEGIN IMMEDIATE instead
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_store_engine(url: str) -> sa.Engine:
    """An engine for `url`; the SQLite file's folder is created when missing."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # connect_timeout: an unreachable server (not just a refused connection) fails a call in 10 s, not minutes.
        return sa.create_engine(
            parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 10}
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def open_job_database(url: str | None = None) -> sa.Engine:
    """The job database (`IMGSERVE_DATABASE_URL` unless `url`), migrated: what the keys CLI, the server's start-up
    check and each Ingress replica's security gate open."""
    if url is None:
        from serving.jobs.settings import JobSettings

        url = JobSettings.from_env().database_url
    engine = create_store_engine(url)
    migrate(engine)
    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class NewerSchemaError(ValueError):
    """The job database was written by a newer imgserve: a schema revision this one does not know."""


def check_schema_known(revision: str | None) -> None:
    """NewerSchemaError, saying what to do, for a revision this imgserve's migrations do not have (a downgrade: alembic
    said only "Can't locate revision", in a traceback from every replica)."""
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(_alembic_config()).get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic's CommandError / ResolutionError: not one of ours
        raise NewerSchemaError(
            f"the job database is at schema revision {revision}, which this imgserve does not know (its newest is "
            f"{head_revision()}): a newer imgserve wrote it. Run that version, or restore a backup of the database "
            "taken before it was upgraded"
        ) from None


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision; safe to call from several processes at once. NewerSchemaError for a
    database a newer imgserve wrote (nothing is changed)."""
    config = _alembic_config()
    with engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE already serialises migrators
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        check_schema_known(MigrationContext.configure(connection).get_current_revision())
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.info("job store at revision %s", head_revision())
