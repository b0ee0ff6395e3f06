"""Start the real server once per test run: `imgserve serve` (local Ray + Ray Serve) on free ports."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
import httpx
import pytest
import yaml

from loadtests.server_process import ProcessSession, ServerProcess, free_port
from tests.paths import MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.integration

# Small limits so the 413 paths are cheap to exercise; stage queues are bounded so overload shows.
TEST_ENV = {"IMGSERVE_MAX_IMAGE_BYTES": str(8 * 1024 * 1024), "IMGSERVE_MAX_REQUEST_BYTES": str(16 * 1024 * 1024)}
MAX_QUEUED = 16
# The local placement's listeners refuse beyond this many requests in flight: small enough that a burst of a few
# hundred shows overload, above the 32 concurrent clients the batching test uses.
LOCAL_MAX_INFLIGHT = 48

RunningServer = ServerProcess  # what tests receive from the `server` fixture

# The servers many test modules share (fixtures of the same names below). An idle server still costs CPU (Serve's
# controller, the replicas' metrics loops: ~0.3 of a core for the graph placement), so the modules using them run
# first and each server stops right after the last test that uses it, not at the end of the run.
SHARED_SERVERS = ("server", "local_server", "secure")
_running: dict[str, ServerProcess] = {}  # shared fixture name -> its server, while it runs


def _shared_group(fixturenames: set[str]) -> int:
    """Where a module runs: with the graph server's users, the local server's, the secured server's, or after."""
    return next((i for i, name in enumerate(SHARED_SERVERS) if name in fixturenames), len(SHARED_SERVERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules using a shared server first, grouped by server; each module's tests stay together and in order."""
    here = Path(__file__).parent
    positions = [i for i, item in enumerate(items) if Path(item.path).parent == here]
    if not positions:
        return
    modules: dict[Path, list[pytest.Item]] = {}
    for i in positions:
        modules.setdefault(Path(items[i].path), []).append(items[i])
    used = {path: set().union(*(set(item.fixturenames) for item in tests)) for path, tests in modules.items()}
    ordered = [item for path in sorted(modules, key=lambda m: _shared_group(used[m])) for item in modules[path]]
    for i, item in zip(positions, ordered, strict=True):
        items[i] = item


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a shared server once no test left in the run uses it (its fixture's own teardown then finds it
    stopped)."""
    if not _running:
        return
    later = item.session.items[item.session.items.index(item) + 1 :] if nextitem is not None else []
    for name in [n for n in _running if n in item.fixturenames]:
        if not any(name in other.fixturenames for other in later):
            _running.pop(name).stop()


def server_env(tmp: Path) -> dict[str, str]:
    """TEST_ENV plus a private build-output cache under the server's temp folder."""
    return {**TEST_ENV, "IMGSERVE_CACHE_DIR": str(tmp / "cache")}


def imagenet_truth() -> dict[str, int]:
    """WordNet id -> the default model's class index (index 0 is background), from its wnids.txt."""
    wnids = (require(MOBILENET_DIR) / "wnids.txt").read_text().split()
    return {wnid: i + 1 for i, wnid in enumerate(wnids)}


def correct_top1(client: httpx.Client, files: list[Path], workers: int) -> int:
    """How many of the ImageNet sample photos `files` the server's top class gets right, `workers` at a time."""
    truth = imagenet_truth()

    def top1(path: Path) -> bool:
        response = client.post("/v1/classify", content=path.read_bytes(), params={"top_k": 1})
        response.raise_for_status()
        return response.json()["results"][0]["predictions"][0]["index"] == truth[path.name.split("_")[0]]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(top1, files))


def local_config() -> dict:
    """What `make serve` deploys (serve_config.yaml, the local placement) with the test's admission limit."""
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["args"]["direct_ingress"] = {"max_inflight": LOCAL_MAX_INFLIGHT}
    return config


def _test_config() -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] not in ("Ingress", "BatchWorker"):
            deployment["max_queued_requests"] = MAX_QUEUED
    # The Ingress batches its stage calls: images beyond this many waiting for one are refused (503 overloaded).
    config["applications"][0]["args"]["graph_calls"] = {"max_queued_images": MAX_QUEUED}
    return config


HOOK_PORT = free_port()
KEYS = {  # name: (role, tenant, extra CLI args)
    "a_viewer": ("viewer", "tenant-a", []),
    "a_analyst": ("analyst", "tenant-a", []),
    "a_admin": ("admin", "tenant-a", []),
    "b_analyst": ("analyst", "tenant-b", []),
    "b_admin": ("admin", "tenant-b", []),
    "operator": ("operator", "ops", []),
    "d_admin": ("admin", "default", []),  # the server's own admin: reads every tenant's jobs and audit entries
    "limited": ("analyst", "tenant-c", ["--rate", "5/s"]),
    "other": ("analyst", "tenant-d", []),
    "trickle": ("viewer", "tenant-e", ["--rate", "1/s"]),  # burst 1: the web UI's sign-in uses it up
}


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", *args], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="package")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`imgserve serve` with IMGSERVE_AUTH=required and the keys of `KEYS` made with the CLI (the security tests and
    the web UI's browser tests share it)."""
    if not MOBILENET_DIR.exists():
        pytest.skip(f"{MOBILENET_DIR} is absent: the default model's weights are read from ../shared/models")
    tmp = tmp_path_factory.mktemp("secure")
    env = {
        **server_env(tmp),
        "IMGSERVE_AUTH": "required",
        "IMGSERVE_KEY_CACHE_S": "1",
        "IMGSERVE_RETENTION_DAYS": "1",
        "IMGSERVE_RETENTION_SWEEP_S": "2",
        "IMGSERVE_WEBHOOK_ALLOW": f"127.0.0.1:{HOOK_PORT}",  # tenant A's hook (nobody listens: delivery fails)
    }
    keys = {}
    for name, (role, tenant, extra) in KEYS.items():
        output = cli(env, "keys", "create", "--name", name, "--role", role, "--tenant", tenant, *extra)
        keys[name] = output.strip().splitlines()[-1]  # the key is the last line
        assert keys[name].startswith("isk_")
    with ServerProcess(tmp, None, env) as server:
        _running["secure"] = server
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            yield {"server": server, "http": http, "keys": keys, "env": env, "db": tmp / "cache" / "jobs.sqlite3"}
        _running.pop("secure", None)


@contextmanager
def started_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, config: dict, extra_args: list[str] | None = None
) -> Iterator[ServerProcess]:
    """`imgserve serve` on `config` in a fresh temp folder; skips when the default model's weights are absent."""
    if not MOBILENET_DIR.exists():
        pytest.skip(f"{MOBILENET_DIR} is absent: the default model's weights are read from ../shared/models")
    tmp = tmp_path_factory.mktemp(name)
    with ServerProcess(tmp, config, server_env(tmp), extra_args) as process:
        yield process


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The graph placement behind Ray Serve's proxy, as KubeRay runs it, with small queues."""
    args = ["--placement", "graph", "--ray-proxy"]
    with started_server(tmp_path_factory, "server", _test_config(), args) as process:
        _running["server"] = process
        yield process
        _running.pop("server", None)


@pytest.fixture(scope="package")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What `make serve` runs on one machine: serve_config.yaml, placement chosen by `imgserve serve` (local)."""
    with started_server(tmp_path_factory, "local", local_config()) as process:
        _running["local_server"] = process
        yield process
        _running.pop("local_server", None)


@pytest.fixture(scope="package")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client


MOTO = PROJECT_ROOT / ".venv" / "bin" / "moto_server"
GCS_EMULATOR = PROJECT_ROOT / ".venv" / "bin" / "gcp-storage-emulator"
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """moto's S3 API server, checked through boto3 (not through s3fs, the code under test)."""

    scheme = "s3"

    def __init__(self, endpoint: str, client: Any) -> None:
        self.endpoint = endpoint
        self.client = client  # boto3
        # Credentials and the endpoint for boto3 and fsspec (FSSPEC_S3_*: s3fs's endpoint_url).
        self.env = {**MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}

    def use_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's fsspec at the server (fsspec reads FSSPEC_* only when imported)."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": self.endpoint})

    def create_bucket(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)

    def upload(self, path: Path, bucket: str, key: str) -> None:
        self.client.upload_file(str(path), bucket, key)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for entry in listed.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def buckets(self) -> list[str]:
        return [bucket["Name"] for bucket in self.client.list_buckets()["Buckets"]]


class GcsServer:
    """gcp-storage-emulator, checked through its JSON API with httpx (not through gcsfs, the code under test)."""

    scheme = "gs"

    def __init__(self, endpoint: str, tmp: Path) -> None:
        self.endpoint = endpoint
        self.http = httpx.Client(base_url=endpoint, timeout=30)
        # gcsfs sends every call to STORAGE_EMULATOR_HOST when it is set, with Google default credentials, else none
        # (anonymous). The other three keep this machine's Google credentials and the GCE metadata probe out of it.
        self.env = {
            "STORAGE_EMULATOR_HOST": endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
            "NO_GCE_CHECK": "true",
        }

    def use_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's gcsfs at the emulator (read on each call)."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def _ok(self, response: httpx.Response) -> httpx.Response:
        response.raise_for_status()
        return response

    def create_bucket(self, bucket: str) -> None:
        self._ok(self.http.post("/storage/v1/b", params={"project": "test"}, json={"name": bucket}))

    def upload(self, path: Path, bucket: str, key: str) -> None:
        params = {"uploadType": "media", "name": key}
        self._ok(self.http.post(f"/upload/storage/v1/b/{bucket}/o", params=params, content=path.read_bytes()))

    def keys(self, bucket: str, prefix: str) -> list[str]:
        listed = self._ok(self.http.get(f"/storage/v1/b/{bucket}/o", params={"prefix": prefix})).json()
        return sorted(entry["name"] for entry in listed.get("items", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self._ok(
            self.http.get(f"/storage/v1/b/{bucket}/o/{quote(key, safe='')}", params={"alt": "media"})
        ).content

    def buckets(self) -> list[str]:
        listed = self._ok(self.http.get("/storage/v1/b", params={"project": "test"})).json()
        return [bucket["name"] for bucket in listed.get("items", [])]


ObjectServer = S3Server | GcsServer


@contextmanager
def _server_process(command: list[str], log: Path, name: str) -> Iterator[str]:
    """`command` (which takes the free port as its last argument) started and ready; yields its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = ProcessSession(
        [*command, str(port)], log=log, ready_url=endpoint, stop_signal=signal.SIGTERM, name=name
    )  # both answer 200 at /
    process.start(timeout_s=60)
    try:
        yield endpoint
    finally:
        process.stop(timeout_s=30)


@pytest.fixture
def moto_s3(tmp_path: Path) -> Iterator[S3Server]:
    """A real S3 API server (moto in server mode) on a free port. Skips when moto, boto3 or s3fs is absent."""
    if not MOTO.exists():
        pytest.skip(f"{MOTO} is absent: moto[server] comes with the dev extras")
    pytest.importorskip("s3fs", reason="s3fs comes with the s3 extra that make installs")
    boto3 = pytest.importorskip("boto3", reason="boto3 comes with the dev extras")
    with _server_process([str(MOTO), "-H", "127.0.0.1", "-p"], tmp_path / "moto.log", "moto_server") as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        yield S3Server(endpoint, client)


@pytest.fixture
def gcs_emulator(tmp_path: Path) -> Iterator[GcsServer]:
    """A real GCS JSON API server (gcp-storage-emulator, in memory) on a free port. Skips when it or gcsfs is absent."""
    if not GCS_EMULATOR.exists():
        pytest.skip(f"{GCS_EMULATOR} is absent: gcp-storage-emulator comes with the dev extras")
    pytest.importorskip("gcsfs", reason="gcsfs comes with the gcs extra that make installs")
    command = [str(GCS_EMULATOR), "start", "--host", "127.0.0.1", "--in-memory", "--port"]
    with _server_process(command, tmp_path / "gcs-emulator.log", "gcp-storage-emulator") as endpoint:
        server = GcsServer(endpoint, tmp_path)
        try:
            yield server
        finally:
            server.http.close()


@pytest.fixture(params=["s3", "gs"])
def object_server(request: pytest.FixtureRequest) -> ObjectServer:
    """`moto_s3`, then `gcs_emulator`: a test taking it runs once per scheme."""
    return request.getfixturevalue({"s3": "moto_s3", "gs": "gcs_emulator"}[request.param])
