"""`GET /v2/models/{model}/config` reports the batching the model stage runs with (what `/v1/models` reports), not
config.yaml's: `imgserve serve` runs the local placement with `batching: {batch_wait_timeout_ms: 0}`, and the OIP
config said config.yaml's delay (4000 µs for mobilenet) while `/v1/models` said 0."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.placement import build_service, compose
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit


def _get(service: Any, settings: Any, *paths: str) -> list[dict[str, Any]]:
    app = create_http_app(service, settings=settings)

    async def calls() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            answers = [await http.get(path) for path in paths]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        return [a.json() for a in answers]

    return asyncio.run(calls())


def test_the_oip_config_reports_the_batching_the_stage_runs_with(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path)  # the tiny models' config.yaml: max_batch_size 8, batch_wait_timeout_ms 1
    overrides = {"batch_wait_timeout_ms": 0, "max_batch_size": 4}
    service = build_service(compose(AppArgs(placement="local", default_model="tiny", batching=overrides), settings))
    tiny, image_level, models = _get(service, settings, "/v2/models/tiny/config", "/v2/models/classify/config",
                                     "/v1/models")  # fmt: skip
    listed = next(m for m in models["models"] if m["name"] == "tiny")["backend"]["batching"]
    assert listed["batch_wait_timeout_ms"] == 0 and listed["max_batch_size"] == 4
    for config in (tiny, image_level):  # the image-level model batches in the default model's stage
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
        assert config["max_batch_size"] == 4


def test_without_overrides_the_oip_config_is_the_model_config(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path)
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    (tiny,) = _get(service, settings, "/v2/models/tiny/config")
    assert tiny["dynamic_batching"]["max_queue_delay_microseconds"] == 1000 and tiny["max_batch_size"] == 8
