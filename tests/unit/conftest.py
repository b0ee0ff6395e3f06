"""Shared fixtures for the unit tests: the real-data folder and the committed model specs."""

from pathlib import Path

import pytest

from pipelines.preprocess import PreprocessSpec
from serving.config.model_config import ModelConfig, load_model_config
from tests.paths import DATA, PROJECT_ROOT, require


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
