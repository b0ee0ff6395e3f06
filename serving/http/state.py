"""The per-process service the routers call. The ingress replica sets it once in its constructor."""

from serving.config.settings import ServerSettings
from serving.service import InferenceService

_service: InferenceService | None = None
_settings: ServerSettings | None = None


def set_service(service: InferenceService, settings: ServerSettings) -> None:
    global _service, _settings
    _service, _settings = service, settings


def get_service() -> InferenceService:
    """FastAPI dependency: the service layer of this ingress replica."""
    if _service is None:
        from serving.errors import ModelUnavailableError

        raise ModelUnavailableError("server is starting: the service layer is not ready yet")
    return _service


def get_settings() -> ServerSettings:
    return _settings or ServerSettings.from_env()
