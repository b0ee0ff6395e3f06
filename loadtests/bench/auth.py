"""The *_auth servers' API key: a database of their own, one analyst key made with the CLI, a check it is enforced.

`BenchKey.create` runs `imgserve keys create --name bench --role analyst --tenant bench` (catalog.BENCH_KEY_ARGS)
against a fresh SQLite file (IMGSERVE_DATABASE_URL in a temp folder), before the server starts with the same
environment plus IMGSERVE_AUTH=required, and keeps the key: the output's last line. `verify_enforced` then asks
the running server for its models without the key (must be refused: 401 / UNAUTHENTICATED) and with it (must
answer), so an auth-on row is never an auth-off server measured twice. The key is never logged or recorded.
"""

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loadtests.bench.catalog import BENCH_KEY_ARGS, IMGSERVE_ENV
from loadtests.server_process import PROJECT_ROOT, imgserve_cli
from serving.client.auth import resolve_api_key

KEY_PREFIX = "isk_"
_KEYS_IN_TEXT = re.compile(r"isk_[A-Za-z0-9_-]+")


def scrub(text: str) -> str:
    """`text` with anything that looks like one of imgserve's keys replaced (for error messages and logs)."""
    return _KEYS_IN_TEXT.sub("isk_[redacted]", text)


class BenchKey:
    """The key of one *_auth server, made fresh for every start in a database of its own; `cleanup` removes both.

    `cli` is the command that runs imgserve (this venv's `imgserve` unless a test gives another).
    """

    def __init__(self, server: str, cli: Sequence[str] | None = None, create_timeout_s: float = 120.0) -> None:
        self.server = server
        self.cli = list(cli) if cli is not None else [imgserve_cli()]
        self.create_timeout_s = create_timeout_s
        self.folder: Path | None = None
        self.value: str | None = None

    @property
    def database_url(self) -> str:
        assert self.folder is not None, "create() first"
        return f"sqlite:///{self.folder / 'jobs.sqlite3'}"

    def env(self) -> dict[str, str]:
        """What the server and the key command get on top of the environment: auth on, this key's database."""
        auth = IMGSERVE_ENV.get(self.server) or {"IMGSERVE_AUTH": "required"}
        return {**auth, "IMGSERVE_DATABASE_URL": self.database_url}

    def create(self, base_env: dict[str, str] | None = None) -> str:
        """A new database folder and key (`imgserve keys create ...`); RuntimeError saying why when it fails
        (and nothing left behind)."""
        self.cleanup()
        self.folder = Path(tempfile.mkdtemp(prefix=f"imgserve-bench-{self.server}-"))
        try:
            return self._create(base_env or {})
        except BaseException:
            self.cleanup()
            raise

    def _create(self, base_env: dict[str, str]) -> str:
        command = [*self.cli, *BENCH_KEY_ARGS]
        try:
            done = subprocess.run(
                command,
                env={**os.environ, **base_env, **self.env()},
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=self.create_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{self.server}: `imgserve {' '.join(BENCH_KEY_ARGS)}` failed: {exc}") from None
        if done.returncode != 0:
            said = [line for line in done.stderr.splitlines() if line.strip()]  # the error; else what it printed
            said = said or [line for line in done.stdout.splitlines() if line.strip()]
            verdict = scrub(said[-1].strip()) if said else "(no output)"
            raise RuntimeError(
                f"{self.server}: `imgserve {' '.join(BENCH_KEY_ARGS)}` exited with {done.returncode}: {verdict}"
            )
        try:
            self.value = parse_key(done.stdout)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.server}: {exc}") from None
        return self.value

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.value = None, None


def parse_key(output: str) -> str:
    """The key `imgserve keys create` printed: the last non-empty line. RuntimeError (never quoting it) otherwise."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if not last.startswith(KEY_PREFIX):
        raise RuntimeError(f"`imgserve keys create` did not print a key ({KEY_PREFIX}...) as its last line")
    try:
        key = resolve_api_key(last)
    except ValueError:
        key = None
    if key is None:
        raise RuntimeError("`imgserve keys create` printed a last line that cannot be sent as a Bearer token")
    return key


def verify_enforced(url: str, key: str, timeout: float = 30.0) -> None:
    """The server at `url` refuses a call without a key (AuthenticationError) and answers one with `key`;
    RuntimeError otherwise (auth off, or the key not accepted)."""
    from serving.client import AuthenticationError, Client, ImgServeError

    with Client(url, timeout=timeout, retries=2, api_key="") as anonymous:
        try:
            anonymous.models()
        except AuthenticationError:
            pass
        except ImgServeError as exc:
            raise RuntimeError(f"without a key, expected UNAUTHENTICATED (401), got {scrub(str(exc))}") from None
        else:
            raise RuntimeError("auth is not enforced: the server answered a call without a key")
    with Client(url, timeout=timeout, retries=2, api_key=key) as client:
        try:
            client.models()
        except ImgServeError as exc:
            raise RuntimeError(f"the bench key was refused: {scrub(str(exc))}") from None
