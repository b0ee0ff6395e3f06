"""`serve_config.yaml` with a placement applied: the single-machine settings are an overlay, not a second file.

`serve_config.yaml` is the graph (what KubeRay and `serve deploy` run). `imgserve serve` applies the placement it
chose on top. Both placements get the Ingress replica's own HTTP/gRPC listeners on the config's host and ports
(`direct_ingress`; the host is http_options.host, 127.0.0.1 unless `imgserve serve --host` moves it), so Ray's
proxy is not in the data path (`proxy_location: Disabled`): on one machine the proxy hop costs several CPU-ms per
request (BENCHMARKS.md); `imgserve serve --ray-proxy` keeps Ray's proxy, as KubeRay does. For `local` every
imgserve application also gets `placement: local`, greedy batching, and only its Ingress deployment (the stage
deployments and the BatchWorker do not exist there).
"""

import copy
import os
from typing import Any, Literal

from serving.config.app_args import Placement

IMPORT_PATH = "serving.app:build_app"
LOCAL_DEPLOYMENTS = ("Ingress",)
# Every deployment the graph placement can build (serving.placement.deployment_names), and the prefix of a model's
# (`model-<model>`): a serve config naming any other deployment is a misspelling (serving.serve_file.check_keys).
STAGE_DEPLOYMENTS = ("Ingress", "Decoder", "Quality", "Metadata", "BatchWorker")
MODEL_DEPLOYMENT_PREFIX = "model-"
# One Ingress replica runs every stage: give it a whole CPU of Ray's scheduling budget.
LOCAL_INGRESS_ACTOR_OPTIONS = {"num_cpus": 1}
# Greedy batching: on CPU, ONNX Runtime is no faster per image at batch 32 than at batch 1 (BENCHMARKS.md), so
# waiting for a batch to fill only adds latency; under load batches still grow on their own.
LOCAL_BATCHING = {"batch_wait_timeout_ms": 0}


def choose_placement(requested: Literal["auto"] | Placement) -> tuple[Placement, str]:
    """The placement and why: `auto` is local unless Ray is a cluster we connect to (RAY_ADDRESS)."""
    if requested != "auto":
        return requested, "as requested"
    if os.environ.get("RAY_ADDRESS"):
        return "graph", f"Ray is a cluster (RAY_ADDRESS={os.environ['RAY_ADDRESS']})"
    return "local", "Ray is local: every stage in the Ingress replica is the fastest placement on one machine"


def apply_placement(config: dict[str, Any], placement: Placement, ray_proxy: bool = False) -> dict[str, Any]:
    """A copy of the serve config with `placement` applied to every imgserve application. `ray_proxy`: keep Ray
    Serve's proxy in front of the Ingress as the file says (what KubeRay runs) instead of its own listeners."""
    config = copy.deepcopy(config)
    apps = [app for app in config.get("applications", []) if app.get("import_path") == IMPORT_PATH]
    for app in apps:
        args = app.setdefault("args", {}) or {}
        app["args"] = args
        args["placement"] = placement
        http, grpc = config.get("http_options", {}), config.get("grpc_options", {})
        listeners = {"host": http.get("host", "127.0.0.1"), "http_port": http.get("port", 8000)}
        if not ray_proxy:
            args.setdefault("direct_ingress", {**listeners, "grpc_port": grpc.get("port", 9000)})
        if placement != "local":
            continue
        args.setdefault("batching", dict(LOCAL_BATCHING))
        kept = [d for d in app.get("deployments", []) if d.get("name") in LOCAL_DEPLOYMENTS]
        for deployment in kept:
            deployment["ray_actor_options"] = {**deployment.get("ray_actor_options", {}), **LOCAL_INGRESS_ACTOR_OPTIONS}
        app["deployments"] = kept
    if apps and not ray_proxy:
        config["proxy_location"] = "Disabled"
    return config
