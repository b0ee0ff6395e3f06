"""Typed configuration: the model repository schema and the server settings.

The names are loaded on first use (PEP 562): `serving.config.app_args` and `.settings` are read by `imgserve
serve`'s own small process, which must not pull in the model schema's imports (numpy, the decoders)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.config.model_config import BatchingConfig, ModelConfig, WeightsSpec
    from serving.config.settings import ServerSettings

__all__ = ["BatchingConfig", "ModelConfig", "ServerSettings", "WeightsSpec"]


def __getattr__(name: str) -> Any:
    if name in ("BatchingConfig", "ModelConfig", "WeightsSpec"):
        from serving.config import model_config

        return getattr(model_config, name)
    if name == "ServerSettings":
        from serving.config.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'serving.config' has no attribute {name!r}")
