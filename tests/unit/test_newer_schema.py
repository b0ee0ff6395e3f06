"""A job database a newer imgserve wrote (a downgrade, or a rollback of the code without its database): refused in one
line saying what to do, by `imgserve serve` before Ray starts and by the database commands, and left unchanged. Was:
alembic's "Can't locate revision" in a traceback (keys list), and for `imgserve serve` three replica tracebacks and
"application(s) ['imgserve'] failed to deploy" after Ray had started."""

import sqlite3
from pathlib import Path

import pytest

from serving.cli import main
from serving.jobs.database import NewerSchemaError, create_store_engine, current_revision, migrate
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit


def _newer_database(folder: Path) -> str:
    url = f"sqlite:///{folder / 'jobs.sqlite3'}"
    engine = create_store_engine(url)
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(folder / "jobs.sqlite3") as db:
        db.execute("update alembic_version set version_num='0999'")
    return url


def test_migrate_refuses_a_revision_it_does_not_know_and_changes_nothing(tmp_path: Path) -> None:
    engine = create_store_engine(_newer_database(tmp_path))
    with pytest.raises(NewerSchemaError, match="schema revision 0999, which this imgserve does not know"):
        migrate(engine)
    assert current_revision(engine) == "0999"
    engine.dispose()


def test_the_keys_command_and_the_server_say_it_in_one_line(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGSERVE_DATABASE_URL", _newer_database(tmp_path))
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imgserve: error: the job database is at schema revision 0999") and "Traceback" not in err
    config = str(PROJECT_ROOT / "serve_config.yaml")
    assert main(["serve", "--config", config, "--http-port", "18151", "--grpc-port", "18152"]) == 2
    err = capsys.readouterr().err
    assert "imgserve: refusing to start: the job database is at schema revision 0999" in err
    assert not no_ray, "Ray was started"
