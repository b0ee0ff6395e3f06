"""What `imgserve serve` checks before Ray starts: every setting a replica would read, so that a bad value is one
line, `imgserve: refusing to start: invalid setting: NAME='value': why`, and exit 2, not a traceback in a replica
after the start (or a server that says it is ready and fails every request).

Each value is read by the function its reader uses (the settings models, `arena_cap`, `vips_threads`, ...), so
the start and the replica cannot disagree about what is valid. A setting that is set but empty is refused, as
ServerSettings always did: it meant "unset" to some readers and a value to others.
"""

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from serving.serve_file import StartRefused

INVALID = "invalid setting: "
# Read one at a time (not by a settings model, which refuses its own empty values)
SINGLE_SETTINGS = (
    "IMGSERVE_ACCESS_LOG",
    "IMGSERVE_VIPS_THREADS",
    "IMGSERVE_ORT_THREADS",
    "IMGSERVE_ORT_RUN_BATCH",
    "IMGSERVE_TORCH_THREADS",
    "IMGSERVE_MALLOC_ARENAS",
    "IMGSERVE_LEAN_RAY",
    "IMGSERVE_DIRECT_WEBP",
    "IMGSERVE_EVENT_LOOP",
    "IMGSERVE_REMOTE_TIMEOUT_S",
    "IMGSERVE_QUALITY_THRESHOLDS",
    "IMGSERVE_SHUTDOWN_TIMEOUT_S",
    "IMGSERVE_DEPLOY_TIMEOUT_S",
    "IMGSERVE_RAY_METRICS_PORT",
    "IMGSERVE_TLS_CERT",
    "IMGSERVE_TLS_KEY",
)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def one_line(exc: BaseException) -> str:
    """An error's text on one line, bounded; a pydantic error by its field paths and messages."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()[:3]
        )
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc)
    return " ".join(text.split())[:600]


def refusal(exc: BaseException) -> StartRefused:
    """The refusal for a reader's ValueError (which names the variable and its value)."""
    text = one_line(exc)
    return StartRefused(text if text.startswith(INVALID) else INVALID + text)


def refuse(name: str, value: object, why: str) -> StartRefused:
    return StartRefused(f"{INVALID}{name}={str(value)!r}: {why}")


def check_settings(env: dict[str, str] | None = None) -> None:
    """Every IMGSERVE_* setting the replicas read, read here as they will read it; StartRefused for the first that
    is not valid. `env`: os.environ."""
    import os

    from pipelines.convert.libwebp import DIRECT_WEBP_ENV
    from pipelines.switches import env_switch
    from serving.backends.onnxruntime_backend import default_cpu_run_batch, default_intra_op_threads
    from serving.backends.torch_backend import torch_threads
    from serving.config.settings import ServerSettings, refuse_empty
    from serving.jobs.remote_access import checked_remote_timeout_s
    from serving.jobs.settings import ENV_NAMES, JobSettings
    from serving.local_ray import event_loop_choice, lean_ray_enabled
    from serving.memory import arena_cap
    from serving.ray_supervisor import serve_shutdown_timeout_s
    from serving.security.settings import SecuritySettings
    from serving.serve_control import deploy_timeout_s

    env = dict(os.environ if env is None else env)
    readers: list[Callable[[], Any]] = [
        lambda: refuse_empty(env, (*SINGLE_SETTINGS, *ENV_NAMES.values())),
        ServerSettings.from_env,
        JobSettings.from_env,
        SecuritySettings.from_env,
        serve_shutdown_timeout_s,
        deploy_timeout_s,
        default_intra_op_threads,  # IMGSERVE_ORT_THREADS
        default_cpu_run_batch,  # IMGSERVE_ORT_RUN_BATCH
        torch_threads,  # IMGSERVE_TORCH_THREADS
        arena_cap,  # IMGSERVE_MALLOC_ARENAS
        lean_ray_enabled,  # IMGSERVE_LEAN_RAY
        event_loop_choice,  # IMGSERVE_EVENT_LOOP
        checked_remote_timeout_s,  # IMGSERVE_REMOTE_TIMEOUT_S: replicas fall back to 20 s; the start refuses
        _vips_threads,
        _access_log,
        lambda: env_switch(DIRECT_WEBP_ENV, True, env),  # IMGSERVE_DIRECT_WEBP
    ]
    for read in readers:
        try:
            read()
        except ValueError as exc:
            raise refusal(exc) from None
    settings = ServerSettings.from_env()
    if not settings.model_repository.is_dir():
        raise refuse(
            "IMGSERVE_MODEL_REPOSITORY", settings.model_repository, "no such folder (one sub-folder per model)"
        )
    check_thresholds(env.get("IMGSERVE_QUALITY_THRESHOLDS"))
    jobs = JobSettings.from_env()
    check_database_url(jobs.database_url, env.get("IMGSERVE_DATABASE_URL"))
    check_object_store(jobs.object_store)


def check_object_store(url: str) -> None:
    """A remote IMGSERVE_OBJECT_STORE's bucket exists (one HEAD, bounded by IMGSERVE_REMOTE_TIMEOUT_S, with the
    credentials the replicas will use): a missing one failed every replica's start after Ray had started. A local
    store's folder is made by the replica."""
    if "://" not in url or url.startswith("file://"):
        return
    from serving.jobs.objects import ObjectStore, ObjectStoreUnusableError

    try:
        ObjectStore(url)
    except ObjectStoreUnusableError as exc:
        raise StartRefused(INVALID + one_line(exc)) from None


def _vips_threads() -> int:
    from pipelines.convert.vips_io import vips_threads

    return vips_threads()


def _access_log() -> str:
    from serving.access_log import access_log_target

    return access_log_target()


def check_thresholds(path: str | None) -> None:
    """IMGSERVE_QUALITY_THRESHOLDS: a file the quality stage can load (None: the packaged one)."""
    if path is None:
        return
    import yaml

    from pipelines.quality.thresholds import load_thresholds

    try:
        load_thresholds(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        why = one_line(exc) if isinstance(exc, OSError) else f"not a thresholds file: {one_line(exc)}"
        raise refuse("IMGSERVE_QUALITY_THRESHOLDS", path, why) from None


def check_database_url(url: str, given: str | None) -> None:
    """IMGSERVE_DATABASE_URL parses as an SQLAlchemy URL of a dialect SQLAlchemy has (nothing is connected)."""
    import sqlalchemy as sa

    try:
        sa.make_url(url).get_dialect()
    except sa.exc.ArgumentError as exc:
        raise refuse("IMGSERVE_DATABASE_URL", given or url, one_line(exc)) from None


def check_jwt_files(env: dict[str, str] | None = None) -> None:
    """With auth required, the JWT public key and JWKS files every Ingress replica reads at its start (a file that
    cannot be read failed each replica three times after Ray had started)."""
    from serving.security.authenticator import JwtVerifier
    from serving.security.settings import SecuritySettings

    settings = SecuritySettings.from_env(env)
    if settings.jwt_public_key_file is not None:
        try:
            JwtVerifier(settings.model_copy(update={"jwks_file": None}))
        except (OSError, ValueError) as exc:
            raise refuse("IMGSERVE_JWT_PUBLIC_KEY_FILE", settings.jwt_public_key_file, one_line(exc)) from None
    if settings.jwks_file is not None:
        try:
            verifier = JwtVerifier(settings.model_copy(update={"jwt_public_key_file": None}))
        except (OSError, ValueError) as exc:
            raise refuse("IMGSERVE_JWKS_FILE", settings.jwks_file, one_line(exc)) from None
        if verifier.key_count == 0:  # `{"keys": []}`, or only keys that do not sign: every token refused
            raise refuse("IMGSERVE_JWKS_FILE", settings.jwks_file, "it holds no signing key imgserve can use")


def check_host(host: str) -> None:
    """--host: an IP address (`127.0.0.1`, `0.0.0.0`, `::`) or a host name by its syntax (no DNS look-up here)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return
    raise refuse("--host", host, "expected an IP address (127.0.0.1, 0.0.0.0, ::) or a host name")
