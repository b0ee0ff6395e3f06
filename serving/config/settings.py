"""Server-wide settings, read from `IMGSERVE_*` environment variables with documented defaults."""

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.limits import DecodeLimits

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_weights_dir() -> Path:
    shared = PROJECT_ROOT.parent / "shared" / "models"
    if shared.is_dir():
        return shared
    return Path(platformdirs.user_cache_dir("imgserve")) / "weights"


def _default_data_dir() -> Path:
    return PROJECT_ROOT.parent / "shared" / "data"


def settings_error(exc: ValidationError, values: dict[str, Any], variable: Callable[[str], str]) -> ValueError:
    """A settings model's validation error named by the environment variables the operator set (`variable(field)`),
    with the values given, instead of by the model's fields."""
    problems = "; ".join(
        f"{variable(str(error['loc'][0]))}={values.get(str(error['loc'][0]))!r}: "
        + error["msg"].removeprefix("Value error, ")  # a validator's own ValueError: its text says it all
        for error in exc.errors()
    )
    return ValueError(f"invalid setting: {problems}")


SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


def model_from_env(model: type[SettingsModel], env: Mapping[str, str] | None = None) -> SettingsModel:
    """`model` with each field's `IMGSERVE_<FIELD>` environment variable applied; ValueError naming the variables
    and values that are not valid (`invalid setting: NAME='value': why`), or that are set but empty."""
    env = dict(os.environ if env is None else env)
    values = {name: env[f"IMGSERVE_{name.upper()}"] for name in model.model_fields if f"IMGSERVE_{name.upper()}" in env}
    refuse_empty(env, (f"IMGSERVE_{name.upper()}" for name in values))
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise settings_error(exc, values, lambda field: f"IMGSERVE_{field.upper()}") from None


def refuse_empty(env: Mapping[str, str], names: Iterable[str]) -> None:
    """ValueError naming each of the environment variables `names` that is set but empty (or blank): an empty path
    would be the current folder, an empty number a parse error, an empty list or name "none" to some readers and
    "unset" to others; none of that is meant, so every setting refuses it alike."""
    empty = [name for name in names if name in env and not env[name].strip()]
    if empty:
        raise ValueError(f"{', '.join(empty)} is set but empty: unset it for the default, or give a value")


class ServerSettings(BaseModel):
    """Where models, weights and build outputs live, and the request limits. None of these change at runtime."""

    model_config = ConfigDict(frozen=True)

    model_repository: Path = Field(
        default=PROJECT_ROOT / "models", description="Folder with one sub-folder per model (IMGSERVE_MODEL_REPOSITORY)."
    )
    weights_dir: Path = Field(
        default_factory=_default_weights_dir,
        description="Where third-party weights are looked up (IMGSERVE_WEIGHTS_DIR); default ../shared/models when "
        "present, else the user cache.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Photos that build steps read (INT8 calibration and its accuracy check; IMGSERVE_DATA_DIR); "
        "default ../shared/data.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir("imgserve")),
        description="Build outputs: ONNX exports, TensorRT engines (IMGSERVE_CACHE_DIR). Never committed.",
    )
    trained_models_dir: Path | None = Field(
        default=None,
        description="Model versions made by training jobs, laid out like the repository (`<name>/<version>/`; "
        "IMGSERVE_TRAINED_MODELS_DIR); default <cache dir>/trained-models, beside the job database. Written by the "
        "server; on a cluster, a volume every replica mounts.",
    )
    model_poll_s: float = Field(
        default=5.0,
        ge=0,
        description="Seconds between reads of the model folders by every Ingress replica of the local placement "
        "(IMGSERVE_MODEL_POLL_S): a load, promotion, canary or training made through one replica reaches the others "
        "within this time (serving/model_poll.py). 0: only explicit loads change what a replica serves.",
    )
    max_image_bytes: int = Field(default=32 * 1024 * 1024, gt=0, description="Largest single encoded image accepted.")
    max_request_bytes: int = Field(default=128 * 1024 * 1024, gt=0, description="Largest HTTP request body accepted.")
    body_read_timeout_s: float = Field(
        default=60.0, gt=0, description="Most seconds to receive a whole HTTP request body (408 after: slow uploads)."
    )
    header_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Most seconds for a request's head (request line and headers) to arrive on the direct HTTP "
        "listener, from the connection opening or the request's first byte; the connection is closed after.",
    )
    max_pixels: int = Field(
        default=100_000_000, gt=0, description="Largest width*height decoded (decompression bombs)."
    )
    max_full_decode_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest width*height of formats decoded at full size (all but JPEG, which decodes reduced).",
    )
    max_slow_encode_pixels: int = Field(
        default=16_000_000,
        gt=0,
        description="Largest output width*height (times frames) of the slow encoders: AVIF, HEIF, GIF (40 MP took "
        "40-48 s and ~1 GB); 413 beyond.",
    )
    max_enhance_pixels: int = Field(
        default=16_000_000, gt=0, description="Largest width*height enhanced (413 with the hint to use max_side)."
    )
    max_images_per_request: int = Field(default=256, gt=0, description="Most images in one classify request.")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ServerSettings":
        """Settings with any `IMGSERVE_<FIELD>` environment variable applied."""
        return model_from_env(cls, env)

    @property
    def trained_models(self) -> Path:
        """Where training jobs register model versions (`trained_models_dir` or its default)."""
        return self.trained_models_dir or self.cache_dir / "trained-models"

    def decode_limits(self) -> DecodeLimits:
        """The decode stage's limits."""
        return DecodeLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_pixels,
            max_full_decode_pixels=min(self.max_full_decode_pixels, self.max_pixels),
            max_slow_encode_pixels=self.max_slow_encode_pixels,
            max_enhance_pixels=self.max_enhance_pixels,
        )
