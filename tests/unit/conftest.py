"""Shared fixtures for the unit tests: real-data folder, committed model specs, a start stopped at ray.init."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.preprocess import PreprocessSpec
from serving.config.model_config import ModelConfig, load_model_config
from tests.paths import DATA, PROJECT_ROOT, require
from tests.unit.tiny_server import TinyServer


def pytest_configure(config: pytest.Config) -> None:
    # Ray Serve's own pydantic models warn on import; that is Ray's to fix and drowns the real warnings.
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:ray\..*")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip saying where it was expected (a fresh clone has none)."""
    return require(DATA)


@pytest.fixture(scope="session")
def mobilenet_config() -> ModelConfig:
    return load_model_config(PROJECT_ROOT / "models" / "mobilenet_v2_imagenet" / "config.yaml")


@pytest.fixture(scope="session")
def mobilenet_spec(mobilenet_config: ModelConfig) -> PreprocessSpec:
    return mobilenet_config.preprocess_spec()


class RayStarted(Exception):
    """ray.init was reached."""


@pytest.fixture
def ray_folder_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where `imgserve serve` makes (and sweeps) its Ray folders in this test: a short folder of its own, not /tmp
    (a start's sweep would look at a developer's real folders; short because Ray's socket paths must be)."""
    base = Path(tempfile.mkdtemp(prefix="isr-", dir="/tmp"))
    monkeypatch.setattr("serving.ray_supervisor.RAY_FOLDER_BASE", base)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ray_folder_base: Path) -> Iterator[list[dict[str, object]]]:
    """ray.init records its arguments and stops the start there; the cache (key store) in a temporary folder. The
    environment is put back whole afterwards: the start sets variables for Ray's workers (the Prometheus
    multiprocess folder among them) that would change every later test of the session."""
    import ray

    calls: list[dict[str, object]] = []

    def init(*args: object, **kwargs: object) -> None:
        calls.append(kwargs)
        raise RayStarted

    saved = dict(os.environ)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setenv("IMGSERVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        yield calls
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    """The tiny models behind both direct listeners, in a process of its own (tests/unit/tiny_server.py)."""
    running = TinyServer(tmp_path_factory.mktemp("tiny"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def tiny_clients(tiny_server: TinyServer) -> tuple[Any, Any]:
    """tritonclient's gRPC and HTTP clients of `tiny_server`."""
    triton_grpc = pytest.importorskip("tritonclient.grpc")
    triton_http = pytest.importorskip("tritonclient.http")
    return (
        triton_grpc.InferenceServerClient(tiny_server.grpc_url),
        triton_http.InferenceServerClient(tiny_server.http_url),
    )
