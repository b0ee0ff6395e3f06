"""Running `imgserve collection ...` as a user does (a subprocess with its own job database) and reading back what
it stored: shared by the collection tests."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.paths import PROJECT_ROOT


def cli_env(database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PROMETHEUS_MULTIPROC_DIR")}
    return {**env, "IMGSERVE_DATABASE_URL": f"sqlite:///{database}", "PYTHONUNBUFFERED": "1", **extra}


def collection_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "serving.cli", "collection", *args]


def run_collection(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        collection_command(*args), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"collection {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def report_json(env: dict[str, str], name: str, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{name}.json"
    run_collection(env, "report", name, "--json", str(out))
    return json.loads(out.read_text())


def stored_rows(database: Path, name: str) -> dict[str, Any]:
    """name -> the collection_images row of collection `name`."""
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT i.* FROM collection_images i JOIN collections c ON c.id = i.collection_id "
                    "WHERE c.name = :name"
                ),
                {"name": name},
            ).mappings()
            return {row["name"]: dict(row) for row in rows}
    finally:
        engine.dispose()


COMPARED = ("ok", "sha256", "phash", "format", "width", "height", "make", "model", "iso", "taken_at", "latitude",
            "longitude", "quality_level", "tags", "top_label")  # fmt: skip


def comparable(rows: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What two runs over the same files must agree on (scores compared separately, to float precision)."""
    return {name: tuple(row[c] for c in COMPARED) for name, row in rows.items()}
