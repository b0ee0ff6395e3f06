"""How many requests one replica works on at once, over all its listeners; beyond the limit new ones are refused.

Behind Ray Serve's proxy, `max_ongoing_requests` / `max_queued_requests` bound a replica's work. Clients of the
direct listeners (serving.deployments.direct_ingress) skip the proxy, so the replica bounds itself here: a
request over the limit gets `OverloadedError` (HTTP 503 / gRPC RESOURCE_EXHAUSTED, kind "overloaded") at once
instead of queueing without end. Health and metrics endpoints are never refused (probes must see the replica).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from serving.errors import OverloadedError

# Answered even at the limit: liveness/readiness probes and the Prometheus scrape.
UNLIMITED_HTTP_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
UNLIMITED_GRPC_METHODS = frozenset({"ServerLive", "ServerReady", "Check", "Watch"})


class InflightLimit:
    """A counter on the replica's event loop (every listener runs there, so no lock is needed)."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.inflight = 0

    def try_enter(self) -> bool:
        if self.limit is not None and self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1

    def overloaded(self) -> OverloadedError:
        return OverloadedError(f"server is overloaded ({self.limit} requests in flight), retry later")

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one slot for the body; raises `OverloadedError` when none is free."""
        if not self.try_enter():
            raise self.overloaded()
        try:
            yield
        finally:
            self.leave()


# The replica's limit: unlimited until an Ingress with direct listeners sets it (Ray Serve bounds the proxy path).
REPLICA_LIMIT = InflightLimit()
