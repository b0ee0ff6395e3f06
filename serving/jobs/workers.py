"""Which batch workers are alive: each job loop registers a row and heartbeats it; claims name their worker.

On this host (the same machine boot and PID namespace: `HOST`) a worker is dead when its process is gone (pid no
longer running, or reused by a process started at another time): a replica restarted by Ray on the same node
recovers its predecessor's items at once, and a live one is never judged by a heartbeat that a store outage
delayed. Elsewhere, when its heartbeat is older than `stale_after_s`. Orphan recovery (`WorkQueue.requeue_orphans`)
requeues only the items of dead workers, never those of a live replica.
"""

import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from serving.jobs.records import FINAL_JOB_STATES
from serving.jobs.tables import job_items, job_workers, jobs


def _host_key() -> str:
    """Where this process's pids mean something: the host name, this machine's boot and its PID namespace. A host
    name alone is not enough: pods on the host network all have the node's name, and each has its own PID namespace,
    where the other pods' pids look gone (their live items were requeued and run twice)."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(f"pidns:{os.stat('/proc/self/ns/pid').st_ino}")
    except OSError:  # not Linux: the host name is what there is
        pass
    return " ".join(parts)[:255]


HOST = _host_key()


def _process_started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


@dataclass(frozen=True)
class WorkerIdentity:
    """This process's job loop."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = HOST
    pid: int = field(default_factory=os.getpid)
    process_started_at: float = field(default_factory=lambda: _process_started_at(os.getpid()) or time.time())


def is_dead(row: sa.Row, now: float, stale_after_s: float) -> bool:
    """`row`: a job_workers row (None columns when an item names a worker with no row: dead). On this host the
    process decides (a heartbeat late because the store was down is no sign of death); elsewhere the heartbeat does
    (hosts' clocks are assumed within a few seconds of each other, as NTP keeps them)."""
    if row.heartbeat_at is None:
        return True
    if row.host == HOST:
        started = _process_started_at(int(row.pid))
        return started is None or abs(started - float(row.process_started_at)) > 1.0
    return row.heartbeat_at < now - stale_after_s


class WorkerRegistry:
    """The job_workers table (synchronous: call through a thread from an event loop)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def heartbeat(self, worker: WorkerIdentity) -> None:
        """Register `worker` or refresh its heartbeat (re-registers a worker judged dead while the store was down)."""
        now = time.time()
        with self.engine.begin() as conn:
            touched = conn.execute(
                job_workers.update().where(job_workers.c.id == worker.id).values(heartbeat_at=now)
            ).rowcount
            if not touched:
                conn.execute(
                    job_workers.insert().values(
                        id=worker.id, host=worker.host, pid=worker.pid,
                        process_started_at=worker.process_started_at, started_at=now, heartbeat_at=now,
                    )
                )  # fmt: skip

    def retire(self, worker: WorkerIdentity) -> int:
        """A graceful stop: the worker's running items go back to pending now; returns how many."""
        with self.engine.begin() as conn:
            released = conn.execute(
                job_items.update()
                .where(job_items.c.worker_id == worker.id, job_items.c.status == "running")
                .values(status=handed_back_status(), worker_id=None, attempts=job_items.c.attempts - 1)
            ).rowcount
            conn.execute(job_workers.delete().where(job_workers.c.id == worker.id))
        return int(released)


def handed_back_status() -> Any:
    """The status an item handed back takes: pending, or cancelled when its job has ended (a cancel while it ran):
    nothing claims items of an ended job, so `pending` would stay in its counts for ever."""
    ended = sa.select(jobs.c.status).where(jobs.c.id == job_items.c.job_id).scalar_subquery().in_(FINAL_JOB_STATES)
    return sa.case((ended, "cancelled"), else_="pending")


def dead_workers(conn: sa.Connection, stale_after_s: float, alive: Iterable[str] = ()) -> list[str]:
    """Ids of dead workers that still hold running items, plus dead rows holding none (both are deleted by the
    caller's transaction); `alive` are never judged dead (the caller itself)."""
    now, keep = time.time(), set(alive)
    holders = conn.execute(
        sa.select(job_items.c.worker_id, job_workers.c.heartbeat_at, job_workers.c.host, job_workers.c.pid,
                  job_workers.c.process_started_at)
        .select_from(job_items.outerjoin(job_workers, job_workers.c.id == job_items.c.worker_id))
        .where(job_items.c.status == "running", job_items.c.worker_id.is_not(None))
        .distinct()
    ).all()  # fmt: skip
    rows = conn.execute(sa.select(job_workers.c.id.label("worker_id"), job_workers)).all()
    dead = {
        row.worker_id for row in [*holders, *rows] if row.worker_id not in keep and is_dead(row, now, stale_after_s)
    }
    if dead:
        conn.execute(job_workers.delete().where(job_workers.c.id.in_(dead)))
    return sorted(dead)
