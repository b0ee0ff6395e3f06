"""serve_config.yaml as imgserve reads it: what Ray Serve's own schema does not check, said before anything starts.

- `check_keys`: Ray Serve's schema ignores keys it does not know, so a misspelt one (`max_ongoing_request:`)
  silently dropped its setting. Every mapping imgserve or Ray Serve reads is checked against its known keys (Ray
  Serve's from `ray.serve.schema`, copied below without importing Serve; imgserve's application args from
  serving.config.app_args); an unknown key is refused with its path and the closest known key.
- `check_start`: on the config `imgserve serve` is about to deploy (its placement applied): a config nobody can
  connect to (Ray's proxy disabled and no listener of the Ingress's own), invalid application args, a model
  batch wait the queue budget always cuts short (`serving.config.app_args.check_batch_waits`), and what would
  otherwise fail only once Ray runs (`check_deployable`: unknown models, listener ports; `check_serve_schema`, Ray
  Serve's own schema, is checked by the deploy worker: it imports Serve).
- `proxy_warnings`: a config that keeps Ray's proxy but names the generated gRPC servicer functions (a config
  copied before 2026-12-07) serves, but its proxy answers a malformed message UNKNOWN and ends a refused stream with
  OK (serving.grpc.proxy_services); and one whose `request_timeout_s` is not above imgserve's body deadline lets
  the proxy end a slow upload with its plain-text 408. Said as warnings, with what to set instead.

`imgserve serve` (serving.server) reports each refusal as "imgserve: refusing to start: ..."; the KubeRay renderer
(serving.deploy_render) refuses to render.
"""

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from serving.config.app_args import AppArgs, DirectIngressOptions, GraphCallOptions, check_batch_waits
from serving.config.model_config import BatchingConfig, load_model_config
from serving.config.placement_overlay import IMPORT_PATH, MODEL_DEPLOYMENT_PREFIX, STAGE_DEPLOYMENTS
from serving.config.settings import ServerSettings
from serving.model_versions import model_folder, model_roots, scan_model_folder, without_repository_path


class StartRefused(ValueError):
    """The configuration is unsafe or cannot work: said before anything starts."""


# Ray Serve 2.60's schema, mapping by mapping (tests/unit/test_serve_file.py compares them with ray.serve.schema).
SERVE_DEPLOY_KEYS = frozenset(
    {"applications", "controller_options", "grpc_options", "http_options", "logging_config", "proxy_location"}
    | {"target_capacity", "tracing_config"}
)
HTTP_OPTIONS_KEYS = frozenset(
    {"host", "keep_alive_timeout_s", "port", "request_timeout_s", "root_path", "ssl_ca_certs", "ssl_certfile"}
    | {"ssl_keyfile", "ssl_keyfile_password"}
)
GRPC_OPTIONS_KEYS = frozenset({"enable_reflection", "grpc_servicer_functions", "port", "request_timeout_s"})
LOGGING_CONFIG_KEYS = frozenset(
    {"additional_log_standard_attrs", "enable_access_log", "encoding", "log_level", "logs_dir"}
)
APPLICATION_KEYS = frozenset(
    {"args", "autoscaling_policy", "deployments", "external_scaler_enabled", "host", "import_path"}
    | {"logging_config", "name", "port", "route_prefix", "runtime_env"}
)
DEPLOYMENT_KEYS = frozenset(
    {"autoscaling_config", "backpressure_config", "deployment_actors", "gang_scheduling_config"}
    | {"graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s", "health_check_period_s"}
    | {"health_check_timeout_s", "logging_config", "max_ongoing_requests", "max_queued_requests"}
    | {"max_replicas_per_node", "max_surge_percent", "name", "num_replicas", "placement_group_bundle_label_selector"}
    | {"placement_group_bundles", "placement_group_strategy", "ray_actor_options", "request_router_config"}
    | {"rolling_update_percentage", "user_config"}
)
AUTOSCALING_CONFIG_KEYS = frozenset(
    {"aggregation_function", "downscale_delay_s", "downscale_smoothing_factor", "downscale_to_zero_delay_s"}
    | {"downscaling_factor", "initial_replicas", "look_back_period_s", "max_replicas", "metrics_interval_s"}
    | {"min_replicas", "policy", "smoothing_factor", "target_ongoing_requests", "upscale_delay_s"}
    | {"upscale_smoothing_factor", "upscaling_factor"}
)
RAY_ACTOR_OPTIONS_KEYS = frozenset(
    {"accelerator_type", "fallback_strategy", "label_selector", "memory", "num_cpus", "num_gpus", "resources"}
    | {"runtime_env"}
)

# A spec: the keys a mapping may have, each with the spec of its value (a mapping, or a list of mappings) or None
# when the value is not checked further (free-form, or a scalar).
Spec = dict[str, "Spec | None"]


def _keys(names: frozenset[str], **nested: Spec) -> Spec:
    return {name: nested.get(name) for name in names}


def _model_keys(model: type[BaseModel]) -> Spec:
    return dict.fromkeys(model.model_fields)


LOGGING_CONFIG = _keys(LOGGING_CONFIG_KEYS)
BATCHING = _model_keys(BatchingConfig)
IMGSERVE_ARGS = _model_keys(AppArgs) | {
    "direct_ingress": _model_keys(DirectIngressOptions),
    "graph_calls": _model_keys(GraphCallOptions),
    "batching": BATCHING,
}
DEPLOYMENT = _keys(
    DEPLOYMENT_KEYS,
    autoscaling_config=_keys(AUTOSCALING_CONFIG_KEYS),
    ray_actor_options=_keys(RAY_ACTOR_OPTIONS_KEYS),
    logging_config=LOGGING_CONFIG,
)
MODEL_DEPLOYMENT = DEPLOYMENT | {"user_config": {"batching": BATCHING}}  # serving.stages.model: reconfigure
SERVE_CONFIG = _keys(
    SERVE_DEPLOY_KEYS,
    http_options=_keys(HTTP_OPTIONS_KEYS),
    grpc_options=_keys(GRPC_OPTIONS_KEYS),
    logging_config=LOGGING_CONFIG,
    applications=_keys(APPLICATION_KEYS, deployments=DEPLOYMENT, logging_config=LOGGING_CONFIG),
)


def unknown_keys(value: Any, spec: Spec, path: str = "") -> Iterator[str]:
    """'<path> (did you mean <key>?)' for every key of `value` (a mapping, or a list of them) that `spec` lacks,
    depth first. imgserve's own application gets its args and model deployments checked too."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            yield from unknown_keys(item, spec, f"{path}[{name if isinstance(name, str) else index}]")
        return
    if not isinstance(value, dict):
        return
    imgserve_app = value.get("import_path") == IMPORT_PATH and "deployments" in spec
    for key, item in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in spec:
            close = difflib.get_close_matches(str(key), list(spec), n=1, cutoff=0.6)
            yield f"{where}{f' (did you mean {close[0]}?)' if close else ''}"
            continue
        nested = spec[key]
        if imgserve_app and key == "args":
            nested = IMGSERVE_ARGS
        if imgserve_app and key == "deployments" and isinstance(item, list):
            for index, deployment in enumerate(item):
                name = deployment.get("name") if isinstance(deployment, dict) else None
                model = isinstance(name, str) and name.startswith(MODEL_DEPLOYMENT_PREFIX)
                if isinstance(name, str) and not model and name not in STAGE_DEPLOYMENTS:
                    yield _unknown_deployment(f"{where}[{name}]", name)
                    continue
                yield from unknown_keys(
                    deployment, MODEL_DEPLOYMENT if model else DEPLOYMENT, f"{where}[{name or index}]"
                )
            continue
        if nested is not None:
            yield from unknown_keys(item, nested, where)


def _unknown_deployment(where: str, name: str) -> str:
    """A deployment name imgserve never builds: each placement dropped its settings without a word (`local` keeps
    only the Ingress's, `graph` those its args build)."""
    known = [*STAGE_DEPLOYMENTS, f"{MODEL_DEPLOYMENT_PREFIX}<model>"]
    close = difflib.get_close_matches(name, list(STAGE_DEPLOYMENTS), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{where} (no such deployment: {hint}imgserve builds {', '.join(known)})"


def check_keys(config: Any, source: str) -> None:
    """StartRefused naming every key of the serve config (`source`: the file, for the message) that Ray Serve or
    imgserve does not know: Ray Serve would drop it without a word."""
    if not isinstance(config, dict):
        raise StartRefused(f"{source}: expected a mapping of Ray Serve settings, not {type(config).__name__}")
    unknown = list(unknown_keys(config, SERVE_CONFIG))
    if unknown:
        raise StartRefused(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}. Ray Serve ignores keys it "
            "does not know, so the setting would be silently dropped: correct or remove it"
        )


# The generated servicer functions of imgserve's services; Ray's proxy should register the function of the same name in
# serving.grpc.proxy_services instead (`proxy_servicer`).
GENERATED_SERVICERS = (
    "serving.grpc.generated.inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server",
    "serving.grpc.generated.image_service_pb2_grpc.add_ImageServiceServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
)


def proxy_servicer(generated: str) -> str:
    return "serving.grpc.proxy_services." + generated.rsplit(".", 1)[1]


def proxy_warnings(config: dict[str, Any], body_read_timeout_s: float) -> list[str]:
    """Warnings for a config that keeps Ray's proxy (none without it: the Ingress's own listeners register imgserve's
    services and apply imgserve's deadlines themselves): one per generated servicer function it names, and one when
    the proxy's request timeout would end a slow upload before imgserve's body deadline (`body_read_timeout_s`,
    IMGSERVE_BODY_READ_TIMEOUT_S) does, so the client gets Ray's plain-text 408 instead of imgserve's JSON one."""
    if config.get("proxy_location") == "Disabled":
        return []
    named = (config.get("grpc_options") or {}).get("grpc_servicer_functions") or []
    warnings = [
        f"grpc_options.grpc_servicer_functions names {name}: behind Ray's proxy a message that is not a valid "
        f"protobuf is then UNKNOWN instead of INVALID_ARGUMENT, and a stream refused before its first answer ends "
        f"with OK. Name {proxy_servicer(name)} instead"
        for name in named
        if name in GENERATED_SERVICERS
    ]
    timeout = (config.get("http_options") or {}).get("request_timeout_s")
    if timeout is not None and timeout <= body_read_timeout_s:
        warnings.append(
            f"http_options.request_timeout_s is {timeout:g} s, not above the {body_read_timeout_s:g} s imgserve allows "
            f"for a request body (IMGSERVE_BODY_READ_TIMEOUT_S): a slow upload then gets Ray's proxy's plain-text 408 "
            f"instead of imgserve's JSON 408 `timeout`. Set it above that (serve_config.yaml: 90)"
        )
    return warnings


def imgserve_apps(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [app for app in config.get("applications") or [] if app.get("import_path") == IMPORT_PATH]


def check_start(config: dict[str, Any], settings: ServerSettings | None = None) -> None:
    """StartRefused for a config (placement applied) that `imgserve serve` cannot usefully deploy: no listener at
    all, application args the application would refuse, or a batch wait over the queue budget."""
    apps = imgserve_apps(config)
    for app in apps:
        try:
            args = AppArgs.model_validate(app.get("args") or {})
            BatchingConfig.model_validate(args.batching or {})  # the overrides' values, as each model will
        except ValidationError as exc:
            raise StartRefused(f"application '{app.get('name')}' args: {_problems(exc)}") from None
        if args.batch_queue_budget_ms() is not None:
            try:
                check_batch_waits(args, model_batch_waits(settings or ServerSettings.from_env(), args.models))
            except ValueError as exc:
                raise StartRefused(str(exc)) from None
    direct = [app for app in apps if (app.get("args") or {}).get("direct_ingress") is not None]
    try:
        listeners = [DirectIngressOptions.model_validate(app["args"]["direct_ingress"]) for app in direct]
    except ValidationError as exc:
        raise StartRefused(f"args.direct_ingress: {_problems(exc)}") from None
    check_deployable(config, settings)
    if config.get("proxy_location") == "Disabled" and not any(d.http_port or d.grpc_port for d in listeners):
        nulls = [app.get("name") for app in apps if "direct_ingress" in (app.get("args") or {}) and app not in direct]
        why = f"args.direct_ingress is null in application(s) {nulls}" if nulls else "no direct_ingress listener"
        raise StartRefused(
            f"{why} and Ray Serve's proxy is disabled: no client could connect. Remove `direct_ingress: null` (the "
            "Ingress's own listeners on the config's ports), or run with --ray-proxy (Ray Serve's proxy)"
        )


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors())


def check_deployable(config: dict[str, Any], settings: ServerSettings | None = None) -> None:
    """StartRefused for what otherwise failed only once Ray ran, with a traceback: a model the args name that no
    model folder holds (`models: [nosuchmodel]`), a listener port outside 0-65535 (`port: -3`: the port check's bind
    raised OverflowError). Ray Serve's own schema is `check_serve_schema`'s (it imports Ray)."""
    from serving.port_check import listener_ports

    check_repository_configs(settings or ServerSettings.from_env())
    for app in imgserve_apps(config):
        models = (app.get("args") or {}).get("models", "all")
        if isinstance(models, list):
            settings = settings or ServerSettings.from_env()
            unknown = [name for name in models if model_folder(settings, str(name)) is None]
            if unknown:
                roots = f"{settings.model_repository} or {settings.trained_models}"
                raise StartRefused(f"application '{app.get('name')}' args.models: no model folder {unknown} in {roots}")
    try:
        listeners = listener_ports(config)
    except ValidationError as exc:
        raise StartRefused(f"config: {_problems(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise StartRefused(f"config: {exc}") from None
    for what, host, port, _ in listeners:
        if not 0 <= port <= 65535:
            raise StartRefused(f"{what} port {port} on {host}: expected 1-65535 (0: a free port the system picks)")


def check_repository_configs(settings: ServerSettings) -> None:
    """StartRefused, in one line, for a model of the operator's repository whose served version's config.yaml (or
    versions.yaml) cannot be read or is not a model config: each replica's scan refuses it, which was a traceback and
    exit 1 after Ray had started ("a configuration error, said at start"). Trained models are not checked: a
    replica lists one that cannot be read and serves the rest."""
    root = settings.model_repository
    for folder_path in model_roots(root):
        where = f"model repository {folder_path.name}"
        try:
            folder = scan_model_folder(folder_path)
            if folder is None:
                continue
            canary = folder.policy.canary if folder.versioned else None
            for version in [*folder.served_versions[:1], *([canary.version] if canary is not None else [])]:
                path = folder.versions.get(version)
                if path is not None:
                    where = f"{path.relative_to(root)}/config.yaml"
                    load_model_config(path / "config.yaml")
        except ValidationError as exc:
            raise StartRefused(f"{where}: {_problems(exc)}") from None
        except (OSError, ValueError) as exc:
            cause = exc.__cause__
            text = " ".join(without_repository_path(str(exc), root).split()).removeprefix(f"{where}: ")
            raise StartRefused(f"{where}: {_problems(cause) if isinstance(cause, ValidationError) else text}") from None


def check_serve_schema(config: dict[str, Any]) -> None:
    """StartRefused for what Ray Serve's own schema refuses (`num_replicas: two`: a pydantic traceback from the
    deploy worker before). It imports Ray Serve, which `imgserve serve`'s own process never does (~110 MB for its
    whole life; Ray's network settings are read at `import ray`, after these checks): so it runs in the deploy
    worker (serving.serve_control.deploy_serve), once Ray has started, and the refusal is one line and exit 2 with
    nothing deployed; `python -m serving.deploy_render` checks the same schema before rendering."""
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        raise StartRefused(f"config: {_problems(exc)}") from None


def model_batch_waits(settings: ServerSettings, models: list[str] | str) -> dict[str, tuple[float, str]]:
    """Model -> (the longest batching.batch_wait_timeout_ms of its versions, that config file), for the models in
    the repository and the trained-models folder (`models`: a list, or 'all'). A config that cannot be read is
    left to the application's own scan, which names it."""
    waits: dict[str, tuple[float, str]] = {}
    for root in (settings.model_repository, settings.trained_models):
        for folder_path in model_roots(root):
            if models != "all" and folder_path.name not in models:
                continue
            try:
                folder = scan_model_folder(folder_path, policy=False)
                paths = [] if folder is None else [Path(path) / "config.yaml" for path in folder.versions.values()]
                for path in paths:
                    wait = load_model_config(path).batching.batch_wait_timeout_ms
                    if wait > waits.get(folder_path.name, (-1.0, ""))[0]:
                        waits[folder_path.name] = (wait, str(path))
            except (OSError, ValueError):
                continue
    return waits
