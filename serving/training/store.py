"""Training jobs and registered versions in the job database (`training_jobs`, `model_versions`).

Synchronous, one short transaction per call (call through `asyncio.to_thread`). Reads are tenant-scoped like batch
jobs: another tenant's training job is "not found", to changes (cancel, delete) whatever the caller's role. A job's
final state is never overwritten: a job cancelled while it runs stays cancelled when its runner stops. Only a
finished job's row can be deleted; the version it registered stays.
"""

import time
import uuid
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from serving.errors import ServiceError
from serving.jobs.errors import JobStateError
from serving.jobs.tables import TRAINING_FINAL_STATES as FINAL
from serving.jobs.tables import model_versions, training_jobs
from serving.jobs.workers import WorkerIdentity, is_dead

THIS_PROCESS = WorkerIdentity()
RUNNER_STALE_S = 300.0  # a runner on another host is dead when its last heartbeat is older than this
REGISTERING = "registering"  # the progress phase from which a job can no longer be cancelled


class TrainingJobNotFoundError(ServiceError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "unknown_training_job"


@dataclass(frozen=True)
class TrainingJob:
    id: str
    tenant: str
    created_by: str | None
    model: str
    status: str
    request: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status_url": f"/v1/training-jobs/{self.id}"}


def _job(row: Any) -> TrainingJob:
    return TrainingJob(**{f.name: row._mapping[f.name] for f in fields(TrainingJob)})


class TrainingStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def create(self, tenant: str, created_by: str | None, model: str, request: dict[str, Any]) -> TrainingJob:
        job_id = uuid.uuid4().hex
        values = {
            "id": job_id,
            "tenant": tenant,
            "created_by": created_by,
            "model": model,
            "status": "queued",
            "request": request,
            "progress": {"phase": "queued", "done": 0, "total": 0},
            "created_at": time.time(),
        }
        with self.engine.begin() as conn:
            conn.execute(training_jobs.insert().values(**values))
        return self.get(job_id)

    def get(self, job_id: str, tenant: str | None = None) -> TrainingJob:
        """The job; `tenant` given: only that tenant's (another's is not found)."""
        query = sa.select(training_jobs).where(training_jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(training_jobs.c.tenant == tenant)
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise TrainingJobNotFoundError(f"no training job {job_id!r}")
        return _job(row)

    def list_jobs(self, tenant: str | None, limit: int = 100) -> list[TrainingJob]:
        query = sa.select(training_jobs).order_by(training_jobs.c.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(training_jobs.c.tenant == tenant)
        with self.engine.begin() as conn:
            return [_job(row) for row in conn.execute(query)]

    def unfinished(self) -> list[str]:
        """Jobs queued or running (a server that stopped mid-job runs them again: features are cached)."""
        query = sa.select(training_jobs.c.id).where(training_jobs.c.status.in_(("queued", "running")))
        with self.engine.begin() as conn:
            return [row.id for row in conn.execute(query.order_by(training_jobs.c.created_at))]

    def _update(self, job_id: str, allowed: tuple[str, ...], *conditions: Any, **values: Any) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                training_jobs.update()
                .where(training_jobs.c.id == job_id, training_jobs.c.status.in_(allowed), *conditions)
                .values(**values)
            )
        return done.rowcount == 1

    def start(self, job_id: str, runner: WorkerIdentity = THIS_PROCESS) -> bool:
        """`claim`, True when this runner got the job."""
        return self.claim(job_id, runner) is not None

    def claim(self, job_id: str, runner: WorkerIdentity = THIS_PROCESS, retake_own: bool = False) -> float | None:
        """Claim the job for `runner`: a queued one, or a running one whose runner is dead (a stopped server's job
        runs again), never one a live process runs (a replica starting while another trains, or this process twice).
        `retake_own`: also one `runner` itself holds, for a caller that knows it runs no job now (a claim whose
        commit went through but whose answer was lost, retried). One transaction compares and sets, so of two
        replicas claiming at once one wins. Returns the claim (the job's new `started_at`, which names this run in
        `heartbeat`, `begin_registration` and `finish`), or None."""
        c = training_jobs.c
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(
                    c.status, c.started_at, c.runner_host, c.runner_pid, c.runner_started_at, c.heartbeat_at
                ).where(c.id == job_id)
            ).first()
            if row is None or row.status not in ("queued", "running"):
                return None
            claim = [c.id == job_id, c.status == row.status]
            if row.status == "running":
                holder = SimpleNamespace(
                    heartbeat_at=row.heartbeat_at,
                    host=row.runner_host,
                    pid=row.runner_pid or 0,
                    process_started_at=row.runner_started_at or 0.0,
                )
                own = retake_own and (holder.host, holder.pid, holder.process_started_at) == (
                    runner.host,
                    runner.pid,
                    runner.process_started_at,
                )
                if row.runner_pid is not None and not own and not is_dead(holder, time.time(), RUNNER_STALE_S):
                    return None
                claim.append(c.started_at == row.started_at if row.started_at is not None else c.started_at.is_(None))
            now = max(time.time(), (row.started_at or 0.0) + 1e-3)  # a new claim never equals the one it replaces
            done = conn.execute(
                training_jobs.update()
                .where(*claim)
                .values(
                    status="running",
                    started_at=now,
                    error=None,
                    runner_host=runner.host,
                    runner_pid=runner.pid,
                    runner_started_at=runner.process_started_at,
                    heartbeat_at=now,
                )
            )
        return now if done.rowcount == 1 else None

    def heartbeat(self, job_id: str, claim: float) -> bool:
        """The runner holding `claim` is alive; False when it no longer runs the job (cancelled, or taken over after
        its heartbeat went stale): it must stop, register nothing and record nothing."""
        return self._update(job_id, ("running",), training_jobs.c.started_at == claim, heartbeat_at=time.time())

    def begin_registration(self, job_id: str, claim: float) -> bool:
        """The point of no return, under the model lock: False when the job was cancelled or taken over (register
        nothing); True, and from now on `cancel` is refused, so a registered version always has a completed job."""
        progress = {"phase": REGISTERING, "done": 0, "total": 1}
        return self._update(
            job_id, ("running",), training_jobs.c.started_at == claim, progress=progress, heartbeat_at=time.time()
        )

    def progress(self, job_id: str, phase: str, done: int, total: int) -> None:
        self._update(
            job_id, ("running",), progress={"phase": phase, "done": done, "total": total}, heartbeat_at=time.time()
        )

    def finish(
        self,
        job_id: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        claim: float | None = None,
    ) -> bool:
        """Record the outcome unless the job already ended (cancelled meanwhile) or, with `claim`, another runner
        took it over; True when recorded."""
        assert status in FINAL
        mine = () if claim is None else (training_jobs.c.started_at == claim,)
        return self._update(
            job_id, ("queued", "running"), *mine, status=status, result=result, error=error, finished_at=time.time()
        )

    def cancel(self, job_id: str, tenant: str | None) -> TrainingJob:
        """Cancel a queued or running job; refused (409) once it ended, or once it registers its version."""
        job = self.get(job_id, tenant)
        if job.status in FINAL:
            raise JobStateError(f"training job {job_id} is already {job.status}")
        phase = sa.func.coalesce(training_jobs.c.progress["phase"].as_string(), "")
        if not self._update(
            job_id, ("queued", "running"), phase != REGISTERING, status="cancelled", finished_at=time.time()
        ):
            job = self.get(job_id)
            if job.status != "cancelled":
                raise JobStateError(
                    f"training job {job_id} is {job.status if job.status in FINAL else 'registering its version'}: "
                    "too late to cancel (unload or replace the version instead)"
                )
        return self.get(job_id)

    def delete(self, job_id: str, tenant: str) -> TrainingJob:
        """Delete a finished (completed, failed, cancelled) job's row, inside `tenant`; the version it registered
        stays. A queued or running job is refused (409: cancel it first); the status is checked in the delete
        itself, so a job that starts meanwhile is never deleted under its runner."""
        job = self.get(job_id, tenant)
        c = training_jobs.c
        with self.engine.begin() as conn:
            done = conn.execute(training_jobs.delete().where(c.id == job_id, c.tenant == tenant, c.status.in_(FINAL)))
        if done.rowcount != 1:
            job = self.get(job_id, tenant)  # 404 when deleted meanwhile
            if job.status in FINAL:  # it finished meanwhile: a final state never changes again
                return self.delete(job_id, tenant)
            raise JobStateError(
                f"training job {job_id} is {job.status}: only a finished job can be deleted; cancel it first "
                f"(POST /v1/training-jobs/{job_id}/cancel) and delete it once it is cancelled"
            )
        return job

    def record_version(
        self,
        model: str,
        version: str,
        job: TrainingJob,
        labels: list[str],
        metrics: dict[str, Any],
        promoted: bool,
    ) -> bool:
        """Record the version `job` registered; a rerun of the job (its runner stopped before it finished) updates
        the row its first run wrote. False, recording nothing, when the job's row is gone: its tenant was erased
        (`imgserve tenants erase`, in another process) after the version's folder was written, and the runner must
        remove the folder. The job's row is written first, which takes its lock: the erasure deletes the tenant's
        jobs and then lists its versions in one transaction, so it either finds this row or waits for it to be
        committed and then finds it (and removes the version itself)."""
        c = model_versions.c
        with self.engine.begin() as conn:
            touch = training_jobs.update().where(training_jobs.c.id == job.id)
            if not conn.execute(touch.values(heartbeat_at=training_jobs.c.heartbeat_at)).rowcount:
                return False
            if promoted:
                conn.execute(model_versions.update().where(c.model == model).values(promoted=False))
            mine = (c.model == model, c.version == version, c.training_job == job.id)
            if conn.execute(model_versions.update().where(*mine).values(metrics=metrics, promoted=promoted)).rowcount:
                return True
            conn.execute(
                model_versions.insert().values(
                    model=model,
                    version=version,
                    tenant=job.tenant,
                    created_by=job.created_by,
                    training_job=job.id,
                    labels=labels,
                    metrics=metrics,
                    promoted=promoted,
                    created_at=time.time(),
                )
            )
        return True

    def delete_version(self, model: str, version: str) -> bool:
        """Delete the row of `version` of `model` (its folder is the caller's); False when there was none."""
        c = model_versions.c
        with self.engine.begin() as conn:
            return bool(conn.execute(model_versions.delete().where(c.model == model, c.version == version)).rowcount)

    def delete_model_versions(self, model: str, tenant: str) -> int:
        """Delete every row of `model` that `tenant` trained (its folder is the caller's); how many went."""
        c = model_versions.c
        with self.engine.begin() as conn:
            return int(conn.execute(model_versions.delete().where(c.model == model, c.tenant == tenant)).rowcount or 0)

    def unfinished_for_model(self, model: str, tenant: str) -> list[TrainingJob]:
        """`tenant`'s training jobs for `model` that have not finished (queued or running), oldest first."""
        c = training_jobs.c
        query = sa.select(training_jobs).where(c.model == model, c.tenant == tenant, c.status.not_in(FINAL))
        with self.engine.begin() as conn:
            return [_job(row) for row in conn.execute(query.order_by(c.created_at))]

    def versions(self, model: str) -> list[dict[str, Any]]:
        query = sa.select(model_versions).where(model_versions.c.model == model).order_by(model_versions.c.id)
        with self.engine.begin() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
