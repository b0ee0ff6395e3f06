"""The Ray worker setup hook of `imgserve serve` on a local Ray (`runtime_env`'s `worker_process_setup_hook`).

Every Ray worker imports this module before anything else runs in it, the Serve controller included, which runs
no imgserve code otherwise: so it imports only what the hook needs (serving.local_ray, the standard library). It
was in serving.server, whose import chain (settings models, Pillow, numpy) the controller loaded for nothing; Ray
loads numpy there anyway, so the controller's RSS fell by 3 MB (140 -> 137 MB), not more.
"""

import os
import sys
from collections.abc import Callable
from typing import Any

from serving.local_ray import block_unused_modules, install_event_loop_policy, lean_ray_enabled

RAY_INTERNAL_HOST_ENV = "IMGSERVE_RAY_INTERNAL_HOST"  # Serve replicas' inter-deployment gRPC server
RAY_GRPC_PROXY_HOST_ENV = "IMGSERVE_RAY_GRPC_PROXY_HOST"  # Serve's gRPC proxy (--ray-proxy)


def rebinding(add_port: Callable[[Any, str], int], host: str) -> Callable[[Any, str], int]:
    """`add_port(server, address)` with a wildcard address ([::] or 0.0.0.0) moved to `host`."""
    bracketed = f"[{host}]" if ":" in host else host

    def add_port_on_host(server: Any, address: str) -> int:
        for wildcard in ("[::]:", "0.0.0.0:"):
            if address.startswith(wildcard):
                address = f"{bracketed}:{address[len(wildcard) :]}"
        return add_port(server, address)

    return add_port_on_host


def ray_worker_setup() -> None:
    """Ray Serve 2.60 binds two gRPC servers to every interface with no setting to change it: each replica's
    inter-deployment server (`[::]:0`, ray/serve/_private/replica.py) and the gRPC proxy (`[::]:<port>`,
    grpc_util.start_grpc_server). Rebind the first to loopback and the second to the HTTP proxy's host. A Ray without
    these functions fails the worker's start (the server does not come up) rather than listening on every interface.
    With IMGSERVE_LEAN_RAY on, pandas and pyarrow are kept out of the worker (serving.local_ray)."""
    if lean_ray_enabled():
        block_unused_modules()
    install_event_loop_policy()
    internal = os.environ.get(RAY_INTERNAL_HOST_ENV)
    if internal:
        from ray._common import tls_utils

        tls_utils.add_port_to_grpc_server = rebinding(tls_utils.add_port_to_grpc_server, internal)
        replica = sys.modules.get("ray.serve._private.replica")
        if replica is not None:  # imported its own reference already
            replica.add_port_to_grpc_server = tls_utils.add_port_to_grpc_server  # type: ignore[attr-defined]
    proxy = os.environ.get(RAY_GRPC_PROXY_HOST_ENV)
    if proxy:
        from ray.serve._private import default_impl

        default_impl.add_grpc_address = rebinding(default_impl.add_grpc_address, proxy)  # type: ignore[assignment]
