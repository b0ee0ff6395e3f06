"""A throwaway PostgreSQL server for tests, from the Debian `postgresql` package (`.ci/run` installs it).

initdb into a fresh folder, start on a free port on 127.0.0.1 (Unix socket in that folder too), create one
database, stop and delete everything at the end. PostgreSQL refuses to run as root, so under root the
server runs as the `postgres` system user (created by the package) through `runuser`.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.server_process import free_port

DATABASE = "imgserve_test"


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, or the one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass(frozen=True)
class PostgresServer:
    url: str  # SQLAlchemy URL (psycopg 3 driver)
    port: int
    data_dir: Path
    bin_dir: Path
    options: str
    log: Path

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are dropped), as an outage would."""
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], self.log)

    def start(self) -> None:
        """Start it again on the same port and data."""
        pg_ctl = str(self.bin_dir / "pg_ctl")
        _run(
            [pg_ctl, "-D", str(self.data_dir), "-o", self.options, "-l", str(self.log), "-w", "-t", "60", "start"],
            self.log,
        )


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], log: Path) -> None:
    result = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Skips the caller (with the reason) when the PostgreSQL binaries or the server user are missing."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql; .ci/run does this on Debian)")
    if os.geteuid() == 0:
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no 'postgres' user to run the server as")
    # Not under pytest's tmp_path: that is private to root and the server user must reach its folder.
    base = Path(tempfile.mkdtemp(prefix="imgserve-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(base, server_user.pw_uid, server_user.pw_gid)
    data, log, port = base / "data", base / "server.log", free_port()
    started = False
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"], log
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"], log)
        started = True
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE], log)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
        yield PostgresServer(url, port, data, bin_dir, options, log)
    finally:
        if started:
            subprocess.run(
                _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)
