"""Listeners an Ingress replica opens itself, so clients reach it without Ray Serve's proxy in the data path.

Through the proxy every request costs an extra process hop: the proxy parses HTTP/gRPC, routes, and makes an
actor call to the replica, which unwraps it again. On a small machine that is several CPU-ms per request — more
than decoding a web-size JPEG (BENCHMARKS.md). With `direct_ingress` in the application's args, each Ingress
replica serves the same FastAPI app (uvicorn) and the same gRPC methods (grpc.aio: OIP, ImageService, Health)
on its own event loop, the one Ray Serve runs the replica's requests on, so the in-process batch queues
queues see requests from both paths.

Ports are fixed (not allocated per replica) and opened with SO_REUSEPORT: replicas on one host share them and
the kernel spreads connections over them; a replica that stops closes its listeners first, so its connections
move to the others. Ray Serve still owns the replicas (placement, health checks, restarts, scaling); what the
proxy did per request is done here: request size limits (the app's middleware, grpc's max message size),
backpressure (serving.admission), metrics and access logs (the same edge code both paths run).

They bind `host` (127.0.0.1 unless configured: `imgserve serve --host`) and serve TLS when `tls_cert`/`tls_key`
are set: HTTPS through uvicorn, gRPC with `grpc.ssl_server_credentials`.
"""

import asyncio
import logging
import socket
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2_grpc

from serving.config.app_args import DirectIngressOptions
from serving.grpc.malformed import SafeParsingInterceptor
from serving.grpc.stubs import ensure_generated
from serving.http.header_timeout import header_timeout_protocol
from serving.port_check import socket_family

logger = logging.getLogger("imgserve.direct_ingress")
# Time in-flight requests get to finish when the replica stops.
SHUTDOWN_GRACE_S = 10.0


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket other replicas on this host can bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def grpc_server_credentials(options: DirectIngressOptions) -> grpc.ServerCredentials | None:
    """TLS credentials from the options' PEM files; None without TLS."""
    if options.tls_cert is None or options.tls_key is None:
        return None
    with open(options.tls_key, "rb") as key, open(options.tls_cert, "rb") as cert:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


def grpc_server(max_message_bytes: int) -> grpc.aio.Server:
    """The direct gRPC listener's server, before its servicers: port shared by the replicas, message limits, and
    malformed messages refused INVALID_ARGUMENT `bad_request` (serving.grpc.malformed)."""
    return grpc.aio.server(
        interceptors=[SafeParsingInterceptor()],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )


class DirectListeners:
    """The replica's HTTP and gRPC servers; `start` on the replica's event loop, `stop` when it shuts down."""

    def __init__(self, options: DirectIngressOptions, max_message_bytes: int, header_read_timeout_s: float = 10.0):
        self.options = options
        self.max_message_bytes = max_message_bytes
        self.header_read_timeout_s = header_read_timeout_s
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    async def start(self, servicer: Any, http_app: Any) -> None:
        """Listen; raises (failing the replica's start) if a port cannot be bound."""
        if self.options.grpc_port is not None:
            await self._start_grpc(servicer)
        if self.options.http_port is not None:
            await self._start_http(http_app)
        logger.info(
            "direct ingress on %s: http %s, grpc %s%s",
            self.options.host,
            self.options.http_port,
            self.options.grpc_port,
            " (TLS)" if self.options.tls else "",
        )

    async def _start_grpc(self, servicer: Any) -> None:
        ensure_generated()
        from serving.grpc.generated import image_service_pb2_grpc, inference_pb2_grpc

        server = grpc_server(self.max_message_bytes)
        # The Ingress has every RPC as a method named like it (what Ray's proxy calls too).
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        address = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        target = f"{address}:{self.options.grpc_port}"
        credentials = grpc_server_credentials(self.options)
        port = server.add_insecure_port(target) if credentials is None else server.add_secure_port(target, credentials)
        if port == 0:
            raise RuntimeError(f"cannot listen for gRPC on {target}")
        await server.start()
        self._grpc = server

    async def _start_http(self, http_app: Any) -> None:
        assert self.options.http_port is not None
        sock = reuse_port_socket(self.options.host, self.options.http_port)
        config = uvicorn.Config(
            http_app,
            lifespan="off",
            access_log=False,  # imgserve's access log (serving.access_log) records every request already
            log_level="warning",
            timeout_keep_alive=30,
            http=header_timeout_protocol(self.header_read_timeout_s),  # slowloris on headers: closed after it
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            ssl_certfile=self.options.tls_cert,
            ssl_keyfile=self.options.tls_key,
            # The client address (audit log, refusal aggregation) is the TCP peer's. uvicorn's default trusted
            # X-Forwarded-For from 127.0.0.1: any local client (an SSH tunnel, kubectl port-forward) wrote the address
            # it liked into the audit log.
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        self._http = server
        self._http_task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:  # uvicorn is listening on the socket we bound; wait for its loop to run
            if self._http_task.done():
                self._http_task.result()  # raises what stopped it
                raise RuntimeError("the HTTP listener stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to SHUTDOWN_GRACE_S), close."""
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            try:
                await asyncio.wait_for(self._http_task, SHUTDOWN_GRACE_S + 1)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this stop was cancelled (Ray gave up on the shutdown): the rest must not run on
                # else uvicorn's task itself ended cancelled: stopped all the same
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE_S)
