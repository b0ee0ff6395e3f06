"""Start a local single-node Ray, deploy `serve_config.yaml` on it, and run until interrupted.

This is what `make serve` runs. On a cluster the same file goes to `serve deploy` or KubeRay instead.
"""

import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from serving.config.app_args import DirectIngressOptions, Placement
from serving.config.placement_overlay import apply_placement, choose_placement

if TYPE_CHECKING:
    from ray.serve.schema import ServeDeploySchema

logger = logging.getLogger("imgserve.server")


def load_serve_config(
    path: Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    placement: Placement | None = None,
    ray_proxy: bool = False,
) -> dict[str, Any]:
    """The YAML with `placement` applied (serving.config.placement_overlay) and optional port overrides (tests run
    beside a developer's own server): they move Ray Serve's proxy and every direct listener alike."""
    config = yaml.safe_load(path.read_text())
    if placement is not None:
        config = apply_placement(config, placement, ray_proxy)
    if http_port is not None:
        config.setdefault("http_options", {})["port"] = http_port
    if grpc_port is not None and "grpc_options" in config:
        config["grpc_options"]["port"] = grpc_port
    for direct in direct_ingress_args(app.get("args") for app in config.get("applications", [])):
        listeners = DirectIngressOptions.model_validate(direct)  # its defaults say which listeners are on
        if http_port is not None and listeners.http_port is not None:
            direct["http_port"] = http_port
        if grpc_port is not None and listeners.grpc_port is not None:
            direct["grpc_port"] = grpc_port
    return config


def direct_ingress_args(app_args: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    """The `direct_ingress` mapping of every application's args that has one (the mapping itself, not a copy)."""
    for args in app_args:
        direct = (args or {}).get("direct_ingress")
        if direct is not None:
            yield direct


def listening_at(config: "ServeDeploySchema") -> str:
    """Where clients connect: the direct listeners when the proxy is disabled, else the proxy."""
    if config.proxy_location != "Disabled":
        http = config.http_options
        return f"http://{http.host}:{http.port} (grpc port {config.grpc_options.port})"
    places = []
    for direct in direct_ingress_args(app.args for app in config.applications):
        listeners = DirectIngressOptions.model_validate(direct)
        places.append(f"http://{listeners.host}:{listeners.http_port} (grpc port {listeners.grpc_port})")
    return ", ".join(places) or "no listener (proxy disabled, no direct_ingress): deployment handles only"


def prepare_environment() -> str:
    """Env vars every Ray worker inherits: no auth token file, one Prometheus multiprocess directory."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="imgserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    return metrics_dir


def wait_until_running(config: Any, stop: threading.Event, timeout_s: float) -> None:
    """Wait for every application to be RUNNING (Ray's own blocking deploy gives up after 60 s, too soon for a
    loaded 2-core machine); fail fast with Ray's message if one fails to deploy."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    names = [app.name for app in config.applications]
    while not stop.is_set():
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


def run_server(
    config_path: Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    num_cpus: int | None = None,
    placement: Literal["auto"] | Placement = "auto",
    ray_proxy: bool = False,
) -> None:
    """Blocking: start Ray + Serve, deploy, print where it listens, shut down cleanly on SIGINT/SIGTERM."""
    chosen, why = choose_placement(placement)
    print(f"imgserve: placement {chosen} ({why}); --placement local|graph chooses", flush=True)
    prepare_environment()
    from serving.grpc.stubs import ensure_generated

    ensure_generated()  # the gRPC proxy imports the generated servicer functions named in the config
    import ray
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(load_serve_config(config_path, http_port, grpc_port, chosen, ray_proxy))
    # Ray's CPUs are a scheduling budget, not cores: replicas ask fractions, real threads are set per stage.
    cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
    temp_dir = tempfile.mkdtemp(prefix="imgserve-ray-", dir="/tmp")
    ray.init(
        num_cpus=cpus, include_dashboard=False, namespace="serve", _temp_dir=temp_dir, logging_level=logging.WARNING
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        client = serve_api.serve_start(
            http_options=config.http_options.model_dump(),
            grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
            proxy_location=config.proxy_location,
        )
        client.deploy_apps(config)
        wait_until_running(config, stop, timeout_s=float(os.environ.get("IMGSERVE_DEPLOY_TIMEOUT_S", "600")))
        print(f"imgserve is ready: {listening_at(config)} (placement {chosen})", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        print("imgserve: shutting down", flush=True)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
