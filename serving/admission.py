"""How many requests one replica works on at once, over all its listeners; beyond the limit new ones are refused.

Behind Ray Serve's proxy, `max_ongoing_requests` / `max_queued_requests` bound a replica's work. Clients of the
direct listeners (serving.deployments.direct_ingress) skip the proxy, so the replica bounds itself here: a
request over the limit gets `OverloadedError` (HTTP 503 / gRPC RESOURCE_EXHAUSTED, kind "overloaded") at once
instead of queueing without end. Health and metrics endpoints are never refused (probes must see the replica).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from serving.errors import OverloadedError

# When the request being handled in this context was admitted (time.monotonic()); copied into stage threads.
ADMITTED_AT: ContextVar[float | None] = ContextVar("imgserve_admitted_at", default=None)


@dataclass
class FirstWork:
    """Whether the request admitted at `admitted_at` has started its first CPU work. One object per admission,
    shared by reference by every copy of the request's context (its stage threads, the tasks it gathers), so a
    start seen in a worker thread is seen by the request's later stages too: an enhancement's decode of its output,
    after it decoded and enhanced its input, is the request's own work, not a wait for a worker."""

    admitted_at: float
    started: bool = False


FIRST_WORK: ContextVar[FirstWork | None] = ContextVar("imgserve_first_work", default=None)


def _this_admissions_first_work() -> FirstWork | None:
    """The FirstWork of the admission in this context; None where there is none, or ADMITTED_AT was set without
    `try_enter` (then no start is recorded: every decode is checked)."""
    first = FIRST_WORK.get()
    return first if first is not None and first.admitted_at == ADMITTED_AT.get() else None


# Answered even at the limit: liveness/readiness probes and the Prometheus scrape.
UNLIMITED_HTTP_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
UNLIMITED_GRPC_METHODS = frozenset({"ServerLive", "ServerReady", "Check", "Watch"})


def holds_no_slot(path: str) -> bool:
    """Requests that never take an admission slot: the probes and the scrape, and a job's progress stream (it lives
    as long as the job and costs a database read every half second; `serving.http.job_routes` bounds how many are
    open per replica instead, so open dashboards can never crowd out inference)."""
    return path in UNLIMITED_HTTP_PATHS or (path.startswith("/v1/jobs/") and path.endswith("/progress"))


# Work nobody needs once its client has gone: inference and image operations change no state, so the direct
# listeners cancel them when their connection closes (their slot and batch-queue place go to the next request, as
# Ray Serve's proxy does for its own requests). Other requests (model control, jobs, training) run to their end.
ABANDONED_WHEN_CLIENT_GOES = frozenset({"/v1/classify", "/v1/analyze", "/v1/metadata", "/v1/convert", "/v1/enhance"})


def abandoned_when_client_goes(path: str) -> bool:
    """Whether the request on `path` is cancelled when its client disconnects (see ABANDONED_WHEN_CLIENT_GOES)."""
    return path in ABANDONED_WHEN_CLIENT_GOES or (path.startswith("/v2/models/") and path.endswith("/infer"))


class InflightLimit:
    """A counter on the replica's event loop (every listener runs there, so no lock is needed), and the longest an
    admitted request may wait at each of its queues (`max_queue_wait_s`): for a CPU worker to start its first
    decode, and in the model's batch queue. One that waited longer is shed with 503 where it waited, so that under
    overload the requests that are served are served on time; one that has started its work is never shed for the
    time that work took."""

    def __init__(self, limit: int | None = None, max_queue_wait_s: float | None = None):
        self.limit = limit
        self.max_queue_wait_s = max_queue_wait_s
        self.inflight = 0

    def at_limit(self) -> bool:
        return self.limit is not None and self.inflight >= self.limit

    def has_room(self) -> bool:
        return not self.at_limit()

    def try_enter(self) -> bool:
        if self.at_limit():
            return False
        self.inflight += 1
        now = time.monotonic()
        ADMITTED_AT.set(now)
        FIRST_WORK.set(FirstWork(now))
        return True

    @staticmethod
    def waive_queue_budget() -> None:
        """For the rest of this request: no queue budget. A request of many images queues behind its own earlier
        images (its decodes share the worker threads, its rows fill several batches), which is not overload."""
        ADMITTED_AT.set(None)

    def deadline(self) -> float | None:
        """time.monotonic() by which an admitted request queued now must have started its batched model work (a
        wait of at most `max_queue_wait_s` at this queue); None for other work (batch-job items) or no budget."""
        if self.max_queue_wait_s is None or ADMITTED_AT.get() is None:
            return None
        return time.monotonic() + self.max_queue_wait_s

    def check_queue_wait(self) -> None:
        """Called in the stage thread as a request's decode starts; raises `OverloadedError` if it is the request's
        first and it has waited longer than `max_queue_wait_s` since admission. Work that is not an admitted request
        passes, and so does every later decode of a request that has started (an enhancement decodes its input,
        then its output: the time between is its own work, not a wait for a worker)."""
        admitted = ADMITTED_AT.get()
        if self.max_queue_wait_s is None or admitted is None:
            return
        first = _this_admissions_first_work()
        if first is not None and first.started:
            return
        waited = time.monotonic() - admitted
        if waited > self.max_queue_wait_s:
            raise OverloadedError(
                f"server is overloaded: the request waited {waited * 1000:.0f} ms for a worker (limit "
                f"{self.max_queue_wait_s * 1000:.0f} ms), retry later"
            )
        if first is not None:
            first.started = True

    @staticmethod
    def mark_started() -> None:
        """The request admitted in this context has done work that was not checked here (a stage in another
        process answered it: the graph placement's quality scoring): its later work is never shed for the time."""
        first = _this_admissions_first_work()
        if first is not None:
            first.started = True

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
