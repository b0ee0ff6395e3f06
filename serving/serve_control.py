"""Deploying and stopping Ray Serve from a short-lived Ray worker, so `imgserve serve`'s own process stays small.

Importing Ray Serve costs a process ~110 MB it keeps for its whole life. The `imgserve serve` process only starts
Ray and waits for a signal, so the two things that need Serve (deploy the config and wait until it runs; shut it
down) run as Ray tasks with `max_calls=1`: each in a worker that exits when the task returns.
"""

import time
from typing import TYPE_CHECKING, Any

from serving.config.app_args import DirectIngressOptions, direct_ingress_args
from serving.local_ray import SignalFlag, seconds_from_env

if TYPE_CHECKING:
    from ray.serve.schema import ServeDeploySchema


def deploy_timeout_s() -> float:
    """IMGSERVE_DEPLOY_TIMEOUT_S (default 600): how long `imgserve serve` waits for every application to be RUNNING
    (model builds on first start: ONNX export, INT8 calibration, TensorRT engines). Anything but seconds > 0 is
    refused (`imgserve serve` checks it before starting Ray)."""
    return seconds_from_env("IMGSERVE_DEPLOY_TIMEOUT_S", 600)


def listening_at(config: "ServeDeploySchema") -> str:
    """Where clients connect: the direct listeners when the proxy is disabled, else the proxy."""
    if config.proxy_location != "Disabled":
        http = config.http_options
        return f"http://{http.host}:{http.port} (grpc port {config.grpc_options.port})"
    places = []
    for direct in direct_ingress_args(app.args for app in config.applications):
        listeners = DirectIngressOptions.model_validate(direct)
        scheme, tls = ("https", ", TLS") if listeners.tls else ("http", "")
        places.append(f"{scheme}://{listeners.host}:{listeners.http_port} (grpc port {listeners.grpc_port}{tls})")
    return ", ".join(places) or "no listener (proxy disabled, no direct_ingress): deployment handles only"


def wait_until_running(config: Any, timeout_s: float) -> None:
    """Wait for every application to be RUNNING (Ray's own blocking deploy gives up after 60 s, too soon for a
    loaded 2-core machine); fail fast with Ray's message if one fails to deploy."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    names = [app.name for app in config.applications]
    while True:
        statuses = serve.status().applications
        states = {name: statuses[name].status if name in statuses else "NOT_STARTED" for name in names}
        failed = [name for name, state in states.items() if state in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise RuntimeError(f"application(s) {failed} failed to deploy: {statuses[failed[0]].message}")
        if all(state == "RUNNING" for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not RUNNING after {timeout_s:.0f}s: {states}")
        time.sleep(0.5)


def deploy_serve(raw: dict[str, Any], timeout_s: float) -> str:
    """Start Serve with the config's proxy options, deploy its applications, wait until they run; where clients
    connect (`listening_at`)."""
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    from serving.serve_file import check_serve_schema

    dropped = configure_built_deployments_only(raw)
    if dropped:
        print(f"imgserve: not deploying {', '.join(dropped)}: the application's args leave them out", flush=True)
    check_serve_schema(raw)  # StartRefused (one line, exit 2) rather than pydantic's traceback
    config = ServeDeploySchema.model_validate(raw)
    client = serve_api.serve_start(
        http_options=config.http_options.model_dump(),
        grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
        proxy_location=config.proxy_location,
    )
    client.deploy_apps(config)
    wait_until_running(config, timeout_s)
    return listening_at(config)


def configure_built_deployments_only(raw: dict[str, Any]) -> list[str]:
    """Drop, in place, the deployment settings of imgserve applications that name a deployment their args do not
    build (`metadata: false`, a model left out): Ray Serve refuses the whole config otherwise. Returns them."""
    from serving.placement import deployment_names

    dropped = []
    for app in raw.get("applications", []):
        if app.get("import_path") != "serving.app:build_app" or not app.get("deployments"):
            continue
        built = deployment_names(app.get("args"))
        dropped += [d["name"] for d in app["deployments"] if d.get("name") not in built]
        app["deployments"] = [d for d in app["deployments"] if d.get("name") in built]
    return dropped


def shutdown_serve() -> None:
    from ray import serve

    serve.shutdown()


def run_in_worker(function: Any, stop: SignalFlag | None, *args: Any, timeout_s: float | None = None) -> Any:
    """`function(*args)` in a fresh Ray worker that exits afterwards; None if `stop` is set first or `timeout_s`
    passes (the task is then cancelled). An exception raised there is raised here as itself, without Ray's
    wrapping."""
    import ray
    from ray.exceptions import RayTaskError

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ref = ray.remote(num_cpus=0, max_calls=1)(function).remote(*args)
    while (stop is None or not stop.is_set()) and (deadline is None or time.monotonic() < deadline):
        ready, _ = ray.wait([ref], timeout=0.5)
        if ready:
            try:
                return ray.get(ref)
            except RayTaskError as error:
                cause = error.cause if isinstance(error.cause, BaseException) else None
                raise (cause or RuntimeError(str(error))) from None
    ray.cancel(ref, force=True)
    return None
