"""Refuse to start on ports another server already listens on.

The Ingress replicas open their listeners with SO_REUSEPORT so that replicas on one host share them; the price is
that a second `imgserve serve` on the same ports binds them too and the kernel then splits connections between two
unrelated servers (each with its own configuration, keys and auth mode) without a word. A plain bind here, before
Ray starts, sees any listener on the port, a SO_REUSEPORT one included, and a socket left in TIME_WAIT does not
count (SO_REUSEADDR).
"""

import errno
import socket
from typing import Any, NamedTuple

from serving.config.app_args import DirectIngressOptions, direct_ingress_args

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
LOOPBACK = "127.0.0.1"


class Listener(NamedTuple):
    what: str  # "HTTP" / "gRPC" for an Ingress replica's own listener, else the Ray Serve proxy's name
    host: str
    port: int
    direct: bool  # opened by the Ingress replicas themselves (serving.deployments.direct_ingress)


def listener_ports(config: dict[str, Any]) -> list[Listener]:
    """Every listener `config` opens: the Ingress replicas' own, then Ray Serve's proxies unless disabled. The one
    walk of the config's listeners: the start's port check and its exposure check (serving.server.listener_binds)
    both read it."""
    ports: list[Listener] = []
    for direct in direct_ingress_args(app.get("args") for app in config.get("applications", [])):
        listeners = DirectIngressOptions.model_validate(direct)
        for what, port in (("HTTP", listeners.http_port), ("gRPC", listeners.grpc_port)):
            if port is not None:
                ports.append(Listener(what, listeners.host, port, direct=True))
    if config.get("proxy_location", "EveryNode") != "Disabled":
        http = config.get("http_options") or {}
        host = http.get("host", LOOPBACK)
        ports.append(Listener("Ray Serve HTTP proxy", host, int(http.get("port", 8000)), direct=False))
        grpc = config.get("grpc_options") or {}
        if grpc.get("grpc_servicer_functions") and int(grpc.get("port", 9000)) > 0:
            ports.append(Listener("Ray Serve gRPC proxy", host, int(grpc.get("port", 9000)), direct=False))
    return ports


def socket_family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (bracketed or not), else AF_INET."""
    return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET


def bind_error(host: str, port: int) -> OSError | None:
    """Why (host, port) cannot be listened on, or None: EADDRINUSE when something listens there; another error
    when this machine cannot bind it at all (an address it does not have, a name that does not resolve)."""
    family = socket_family(host)
    address = host.strip("[]") if host not in WILDCARDS else ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (host, port)."""
    error = bind_error(host, port)
    return error is not None and error.errno == errno.EADDRINUSE


def listener_problems(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(busy, unbindable): one line per listener of `config` whose port is taken, and one per listener this machine
    cannot bind for another reason (`--host` 10.255.255.1, an address it does not have: Ray started, the replica
    failed and the command ended 34 s later in a traceback). One probe bind per listener; port 0 (the kernel picks
    a free one) is probed for its address only."""
    busy, unbindable = [], []
    for what, host, port, _ in listener_ports(config):
        error = bind_error(host, port)
        if error is not None and error.errno == errno.EADDRINUSE:
            busy.append(f"{what} port {port} on {host}")
        elif error is not None:
            unbindable.append(f"{what} on {host}:{port}: {error.strerror or error}")
    return busy, unbindable


def shared_ports(config: dict[str, Any]) -> list[str]:
    """Listeners of `config` that would share one port (the HTTP and the gRPC listener given the same number: both
    bind it through SO_REUSEPORT, the server says it is ready, and every gRPC call fails)."""
    seen: dict[int, str] = {}
    clashes = []
    for what, _, port, _ in listener_ports(config):
        if port and port in seen:
            clashes.append(f"{seen[port]} and {what} both on port {port}")
        seen.setdefault(port, what)
    return clashes
