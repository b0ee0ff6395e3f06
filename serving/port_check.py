"""Refuse to start on ports another server already listens on.

The Ingress replicas open their listeners with SO_REUSEPORT so that replicas on one host share them; the price is
that a second `imgserve serve` on the same ports binds them too and the kernel then splits connections between two
unrelated servers (each with its own configuration, keys and auth mode) without a word. A plain bind here, before
Ray starts, sees any listener on the port, a SO_REUSEPORT one included, and a socket left in TIME_WAIT does not
count (SO_REUSEADDR).
"""

import errno
import socket
from typing import Any

from serving.config.app_args import DirectIngressOptions
from serving.serve_control import direct_ingress_args

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def listener_ports(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(what, host, port) of every listener `config` opens on this machine."""
    ports: list[tuple[str, str, int]] = []
    for direct in direct_ingress_args(app.get("args") for app in config.get("applications", [])):
        listeners = DirectIngressOptions.model_validate(direct)
        for what, port in (("HTTP", listeners.http_port), ("gRPC", listeners.grpc_port)):
            if port:
                ports.append((what, listeners.host, port))
    if config.get("proxy_location", "EveryNode") != "Disabled":
        http = config.get("http_options") or {}
        host = http.get("host", "127.0.0.1")
        ports.append(("Ray Serve HTTP proxy", host, int(http.get("port", 8000))))
        grpc = config.get("grpc_options") or {}
        if grpc.get("grpc_servicer_functions") and int(grpc.get("port", 9000)) > 0:
            ports.append(("Ray Serve gRPC proxy", host, int(grpc.get("port", 9000))))
    return ports


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (host, port); an address this machine cannot bind at all is left to the
    listener itself to report."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    address = host.strip("[]") if host not in WILDCARDS else ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def busy_listeners(config: dict[str, Any]) -> list[str]:
    """One line per listener of `config` whose port is taken."""
    return [f"{what} port {port} on {host}" for what, host, port in listener_ports(config) if port_in_use(host, port)]
