"""An `imgserve.v1.ImageService` servicer on a real local gRPC port, for tests of the gRPC methods."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from loadtests.server_process import free_port
from serving.grpc.stubs import ensure_generated


@asynccontextmanager
async def image_service_channel(servicer: Any, server: grpc.aio.Server | None = None) -> AsyncIterator[Any]:
    """A channel to `servicer` served on 127.0.0.1 for the duration of the block (on `server`, a plain one if None)."""
    ensure_generated()
    from serving.grpc.generated import image_service_pb2_grpc

    server = server or grpc.aio.server()
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@asynccontextmanager
async def image_service_stub(servicer: Any) -> AsyncIterator[Any]:
    """A stub of `servicer` served on 127.0.0.1 for the duration of the block."""
    from serving.grpc.generated import image_service_pb2_grpc

    async with image_service_channel(servicer) as channel:
        yield image_service_pb2_grpc.ImageServiceStub(channel)
