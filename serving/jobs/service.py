"""The batch-job service of the ingress: validate options, take inputs in, write the job, wake the worker.

The job routes call this; the worker (`BatchWorker`) does the processing. The ingress writes the job and its
items to the store and then calls the worker's `wake` so it starts at once; the worker also polls the store,
so a lost wake-up (or a second ingress replica) only costs one poll interval.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from pipelines.enhance import EnhanceOptions
from serving.errors import BadRequestError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import PurgeReport, purge_job
from serving.jobs.errors import JobStateError, JobStoreUnavailableError
from serving.jobs.idempotency import IdempotencyClaim, Submission, keyed_job, request_fingerprint
from serving.jobs.intake import InputPart, Intake, refuse_only_hidden_uploads
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import OPERATION_STAGES, operation_spec
from serving.jobs.records import JobRecord, JobSpec, ResultRecord
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.stored_bytes import quota_error
from serving.security.audit import AuditEntry
from serving.security.egress import check_webhook_url
from serving.security.errors import PermissionDeniedError, QuotaExceededError
from serving.security.principal import ANONYMOUS, DEFAULT_TENANT, Principal

logger = logging.getLogger("imgserve.jobs")
STAGE_ALIASES = {"classify": "classification"}
DEFAULT_STAGES = ["classification"]  # bulk jobs run what is asked for; the classifier unless told otherwise
T = TypeVar("T")


@dataclass(frozen=True)
class BatchOptions:
    model: str | None = None
    top_k: int = 5
    stages: list[str] | None = None
    webhook_url: str | None = None
    anonymize: bool = False
    convert: dict[str, Any] | None = None  # image operations (serving.jobs.operations)
    enhance: dict[str, Any] | None = None
    output_suffix: str | None = None
    output_uri: str | None = None  # a folder the outputs are also written to


class JobService:
    """Every method takes the caller (`principal`, from the security gate): jobs are created in its tenant, and
    it reads, changes and erases only its tenant's (operators and admins read every tenant's)."""

    def __init__(
        self,
        inference: Any,
        settings: JobSettings,
        wake: Callable[[str], Awaitable[None]] | None = None,
        gate: Any = None,
    ):
        """`wake(job_id)`: tells the job loop there is work (the local loop, or the BatchWorker deployment).
        `gate`: the replica's `SecurityGate` (quotas, forced anonymisation); None = no limits."""
        self.inference, self.settings, self._wake, self.gate = inference, settings, wake, gate
        self.engine = create_store_engine(settings.database_url)
        self.store = JobStore(self.engine, settings.max_items)
        self._objects: ObjectStore | None = None
        self._ready = asyncio.Lock()
        self._migrated = False

    async def ready(self) -> JobStore:
        """The store, migrated on first use (the worker migrates too; the migration itself is locked)."""
        if not self._migrated:
            async with self._ready:
                if not self._migrated:
                    try:
                        await asyncio.to_thread(migrate, self.engine)
                    except Exception:  # noqa: BLE001 - any database failure is "not available now"
                        logger.exception("job store unavailable")
                        # the driver's text (a host, an address, a path) goes to the log only
                        raise JobStoreUnavailableError("the server's database is unavailable; retry later") from None
                    self._migrated = True
        return self.store

    def objects(self) -> ObjectStore:
        if self._objects is None:
            self._objects = ObjectStore(self.settings.object_store)
        return self._objects

    def _intake(self, tenant: str) -> Intake:
        return Intake(self.objects(), self.settings, tenant)

    def spec(self, options: BatchOptions, tenant: str = DEFAULT_TENANT) -> JobSpec:
        """The job's model and stages, checked now so a bad request is a 4xx and never a failed job."""
        entry = self.inference.served_entry(options.model)
        if options.top_k < 1:
            raise BadRequestError(f"top_k must be >= 1, got {options.top_k}")
        given = options.stages or []
        names = [STAGE_ALIASES.get(n.strip(), n.strip()) for item in given for n in item.split(",") if n.strip()]
        analysis = [n for n in names if n not in OPERATION_STAGES]
        if analysis and (unknown := sorted(set(analysis) - set(self.inference.available_fields))):
            known = (*self.inference.available_fields, *OPERATION_STAGES)  # analysis_fields' message names no operation
            raise BadRequestError(f"unknown stages {unknown}; available: {', '.join(known)}")
        operations = operation_spec(
            names,
            options.convert,
            options.enhance,
            options.output_suffix,
            options.output_uri,
            self.settings.write_root(tenant),
            self.settings.remote_access(tenant),
        )
        if operations and operations["enhance"] is not None and EnhanceOptions.parse(**operations["enhance"]).auto:
            pipeline = getattr(self.inference, "pipeline", None)
            if pipeline is not None and not pipeline.has_quality:
                raise BadRequestError("enhance with auto needs the quality stage, which this application does not run")
        # Analysis stages as asked; the classifier when nothing at all is asked; none for an operations-only job.
        stages = tuple(self.inference.analysis_fields(analysis or DEFAULT_STAGES)) if analysis or not operations else ()
        if "classification" in stages and entry.config.task != "classification":
            raise BadRequestError(f"model '{entry.name}' is not a classifier (its task is {entry.config.task})")
        return JobSpec(entry.name, options.top_k, stages, options.webhook_url, options.anonymize, operations)

    async def check(self, options: BatchOptions, tenant: str = DEFAULT_TENANT) -> JobSpec:
        """`spec`, plus the webhook target: resolved, and refused (400) unless every address is public or
        allow-listed (serving.security.egress; the resolver blocks, so it runs in a thread)."""
        spec = self.spec(options, tenant)
        if options.webhook_url is not None:
            await asyncio.to_thread(check_webhook_url, options.webhook_url, self.settings.webhook_allow_list())
        return spec

    async def _admit_items(self, principal: Principal, items: Sequence[Any]) -> None:
        """The caller's daily image quotas (key and tenant). The stored bytes of the items (archives expand) are
        checked where they are written (`_write_within_quota`), which gives the images back when it refuses; the
        refused request's stored files are no job's: the orphan sweep deletes them (IMGSERVE_RETENTION_SWEEP_S)."""
        if self.gate is None or not self.gate.required:
            return
        await self.gate.charge_images(len(items))

    async def _check_stored_bytes(self, principal: Principal, adding: int) -> None:
        """The tenant's stored-bytes quota, checked with the request's upload sizes before anything is stored (a
        tenant over its quota wrote every refused request's files to the store first)."""
        if self.gate is None or not self.gate.required:
            return
        policy = await self.gate.tenant_policy(principal.tenant)
        if policy.quota_stored_bytes is not None:
            stored = await asyncio.to_thread(self.store.stored_bytes, principal.tenant)
            if stored + adding > policy.quota_stored_bytes:
                raise quota_error(policy.quota_stored_bytes, stored, adding)

    async def _write_within_quota(self, principal: Principal, images: int, write: Callable[..., T]) -> T:
        """`write(quota_stored_bytes=quota)` in a thread: it adds items in one transaction that checks the tenant's
        stored-bytes quota first (serving.jobs.stored_bytes: a check that reads before writing let requests sent
        together pass it together). When it refuses (that quota, more items than a job holds, a job no longer open,
        the store unavailable: nothing is written), the `images` the request was charged are given back."""
        quota = None
        if self.gate is not None and self.gate.required:
            quota = (await self.gate.tenant_policy(principal.tenant)).quota_stored_bytes
        try:
            return await asyncio.to_thread(partial(write, quota_stored_bytes=quota))
        except Exception:
            if self.gate is not None and self.gate.required:
                await self.gate.refund_images(images)
            raise

    async def _intake_items(self, principal: Principal, parts: Sequence[InputPart]) -> list[Any]:
        """The request's items, stored; refused URIs and a stored-bytes quota the uploads alone pass are refused
        before anything is stored."""
        await self._check_stored_bytes(principal, sum(_upload_bytes(part) for part in parts))
        return await asyncio.to_thread(self._intake(principal.tenant).items, parts)

    async def submit(
        self,
        spec: JobSpec,
        parts: Sequence[InputPart],
        start: bool = True,
        principal: Principal = ANONYMOUS,
        client: str | None = None,
        idempotency: IdempotencyClaim | None = None,
    ) -> JobRecord:
        """A new job of `spec` (from `check`, which the route calls before reading the inputs); `idempotency`: the
        request's key and fingerprint, written with the job (`submit_with_key`)."""
        if self.gate is not None and await self.gate.anonymize_forced():
            spec = replace(spec, anonymize=True)
        store = await self.ready()
        items = await self._intake_items(principal, parts)
        if start:
            refuse_only_hidden_uploads(parts, items)
        await self._admit_items(principal, items)
        audit = AuditEntry.by(principal, "job.create", client)
        ensure_stored = partial(self._intake(principal.tenant).ensure_stored, parts)
        job_id = await self._write_within_quota(
            principal,
            len(items),
            partial(
                store.create_job,
                spec,
                items,
                start,
                principal.tenant,
                audit,
                idempotency=idempotency,
                ensure_stored=ensure_stored,
            ),
        )
        if start:
            await self.wake(job_id)
        return await asyncio.to_thread(store.get_job, job_id)

    async def submit_with_key(
        self,
        spec: JobSpec,
        parts: Sequence[InputPart],
        start: bool = True,
        principal: Principal = ANONYMOUS,
        client: str | None = None,
        key: str | None = None,
    ) -> Submission:
        """`submit`, idempotent under the client's `key` (serving.jobs.idempotency): the tenant's job made with the
        same key and the same request is answered again, replayed (nothing stored, no quota charged); a different
        request with that key is a 422. Of two requests sent together with one key, the one whose job is written
        second gets its images back and answers the first one's job."""
        if key is None:
            return Submission(await self.submit(spec, parts, start, principal, client))
        store = await self.ready()
        claim = IdempotencyClaim(key, await asyncio.to_thread(request_fingerprint, spec, parts, start))
        earlier = await asyncio.to_thread(keyed_job, self.engine, principal.tenant, claim)
        if earlier is None:
            try:
                return Submission(await self.submit(spec, parts, start, principal, client, claim))
            except (sa.exc.IntegrityError, QuotaExceededError):
                # the key's unique index, or a quota the winner's job filled: the winner's job answers (or a 422)
                earlier = await asyncio.to_thread(keyed_job, self.engine, principal.tenant, claim)
                if earlier is None:
                    raise  # not the key's unique index, or a quota refusal of its own
        return Submission(await asyncio.to_thread(store.get_job, earlier), replayed=True)

    async def add_items(self, job_id: str, parts: Sequence[InputPart], principal: Principal = ANONYMOUS) -> JobRecord:
        store = await self.ready()
        job = await asyncio.to_thread(store.get_job, job_id, principal.tenant)  # 404 before reading the inputs
        if job.status != "open":  # and 409 before storing them (the store checks again as it writes)
            raise JobStateError(f"job {job_id} is {job.status}; items can only be added while it is open")
        items = await self._intake_items(principal, parts)
        await self._admit_items(principal, items)
        ensure_stored = partial(self._intake(principal.tenant).ensure_stored, parts)
        add = partial(store.add_items, job_id, items, principal.tenant, ensure_stored=ensure_stored)
        await self._write_within_quota(principal, len(items), add)
        return await asyncio.to_thread(store.get_job, job_id)

    async def start(self, job_id: str, principal: Principal = ANONYMOUS) -> JobRecord:
        store = await self.ready()
        await asyncio.to_thread(store.start_job, job_id, principal.tenant)
        await self.wake(job_id)
        return await asyncio.to_thread(store.get_job, job_id)

    async def cancel(self, job_id: str, principal: Principal = ANONYMOUS, client: str | None = None) -> JobRecord:
        store = await self.ready()
        audit = AuditEntry.by(principal, "job.cancel", client)
        job = await asyncio.to_thread(store.cancel_job, job_id, principal.tenant, audit)
        await self.wake(job_id)
        return job

    async def purge(self, job_id: str, principal: Principal = ANONYMOUS, client: str | None = None) -> PurgeReport:
        """Erase the job now: rows, results, events, deliveries and its unshared stored inputs (admins only)."""
        if not principal.has("admin"):
            raise PermissionDeniedError(f"purging a job needs the admin role; this key is {principal.role}")
        await self.ready()
        self.objects()  # opens the object store
        audit = AuditEntry.by(principal, "job.purge", client)
        report = await asyncio.to_thread(purge_job, self.engine, self._objects, job_id, principal.tenant, audit)
        await self.wake(job_id)
        return report

    async def get(self, job_id: str, principal: Principal = ANONYMOUS) -> JobRecord:
        return await asyncio.to_thread((await self.ready()).get_job, job_id, principal.read_scope())

    async def list_jobs(
        self, status: str | None, limit: int, offset: int, principal: Principal = ANONYMOUS
    ) -> list[JobRecord]:
        store = await self.ready()
        return await asyncio.to_thread(store.list_jobs, status, limit, offset, principal.read_scope())

    async def results(
        self, job_id: str, after: int, limit: int, status: str | None, principal: Principal = ANONYMOUS
    ) -> list[ResultRecord]:
        store = await self.ready()
        await asyncio.to_thread(store.get_job, job_id, principal.read_scope())
        return await asyncio.to_thread(store.results_page, job_id, after, limit, status)

    async def outputs(
        self, job_id: str, after: int, limit: int, principal: Principal = ANONYMOUS
    ) -> list[tuple[int, str, str]]:
        """A page of the job's image-operation outputs: (index, name, object digest)."""
        store = await self.ready()
        await asyncio.to_thread(store.get_job, job_id, principal.read_scope())
        return await asyncio.to_thread(store.outputs_page, job_id, after, limit)

    async def events(
        self, job_id: str, principal: Principal = ANONYMOUS
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        store = await self.ready()
        await asyncio.to_thread(store.get_job, job_id, principal.read_scope())
        return await asyncio.to_thread(store.events, job_id), await asyncio.to_thread(store.deliveries, [job_id])

    async def wake(self, job_id: str) -> None:
        """Tell the worker there is work; best effort (it polls the store anyway)."""
        if self._wake is None:
            return
        try:
            await asyncio.wait_for(self._wake(job_id), timeout=5)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not wake the batch worker for job %s: %r", job_id, exc)


def _upload_bytes(part: InputPart) -> int:
    """The size of an uploaded file or archive as sent (0 for a URI)."""
    if part.file is None:
        return 0
    position = part.file.tell()
    size = part.file.seek(0, 2)
    part.file.seek(position)
    return size
