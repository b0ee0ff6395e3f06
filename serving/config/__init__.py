"""Typed configuration: the model repository schema and the server settings."""

from serving.config.model_config import BatchingConfig, ModelConfig, WeightsSpec
from serving.config.settings import ServerSettings

__all__ = ["BatchingConfig", "ModelConfig", "ServerSettings", "WeightsSpec"]
