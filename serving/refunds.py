"""Giving back a request's quota charge when its work fails on the server's side.

A synchronous request is charged before its work (`InferenceService.charge`); `refunded_on_server_error` wraps that
work for analysis, OIP tensors and image operations alike: a 5xx gives the images back, a client error (an
undecodable image, a tensor of the wrong shape) keeps the charge (serving.security.gate `refund_failed`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol


class Refunding(Protocol):
    """What charged the images: the service, or a stand-in of it that charges nothing."""

    async def refund_failed(self, images: int, error: BaseException) -> None: ...


@asynccontextmanager
async def refunded_on_server_error(service: Refunding, images: int) -> AsyncIterator[None]:
    """Run the work after `images` were charged; a failure is given to `service.refund_failed`, then raised."""
    try:
        yield
    except Exception as error:
        await service.refund_failed(images, error)
        raise
