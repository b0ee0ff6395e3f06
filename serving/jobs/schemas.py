"""Request and response models of the batch-job API (`/v1/batch`, `/v1/jobs`)."""

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.jobs.records import JobRecord


class BatchRequest(BaseModel):
    """JSON body of `POST /v1/batch` (URIs); fields given here override the query parameters. An unknown field is a
    400 (a misspelt `stage` or `topk` would otherwise be dropped and the job run with the defaults)."""

    model_config = ConfigDict(extra="forbid")

    uris: list[str] = Field(default_factory=list, description="file:// (under the allowed root), s3:// or gs:// URIs.")
    model: str | None = Field(default=None, description="Model; the server's default classifier if omitted.")
    top_k: int | None = Field(default=None, ge=1, le=1000, description="Classes per image.")
    stages: list[str] | None = Field(default=None, description="Analysis stages; all the server has when omitted.")
    webhook_url: str | None = Field(default=None, description="POSTed (signed) when the job ends.")
    anonymize: bool = Field(default=False, description="Drop GPS and personal fields from metadata results.")
    convert: dict[str, Any] | None = Field(
        default=None, description='Convert every image: /v1/convert\'s options, e.g. {"format": "webp"}.'
    )
    enhance: dict[str, Any] | None = Field(
        default=None, description='Enhance every image: /v1/enhance\'s options, e.g. {"auto": true}.'
    )
    output_suffix: str | None = Field(
        default=None, description="Added to output names (convert '', enhance '_enhanced')."
    )
    output_uri: str | None = Field(
        default=None, description="Also write outputs under this folder: file:// in the output root, s3://, gs://."
    )


class JobCounts(BaseModel):
    total: int
    done: int
    failed: int
    pending: int
    running: int
    cancelled: int


class JobTimings(BaseModel):
    created_at: str = Field(description="ISO 8601, UTC.")
    started_at: str | None = None
    finished_at: str | None = None
    queued_s: float | None = Field(default=None, description="Created -> first item dispatched.")
    running_s: float | None = Field(default=None, description="Started -> finished (or now).")
    images_per_s: float | None = Field(default=None, description="Items finished per second of running time.")


class JobOutputs(BaseModel):
    """Image operations' outputs so far (GET outputs_url downloads them as a zip)."""

    count: int
    input_bytes: int
    output_bytes: int
    compression_ratio: float | None = Field(description="input_bytes / output_bytes.")


class JobStatus(BaseModel):
    job_id: str
    tenant: str = Field(description="Whose job: operators and admins read every tenant's jobs, change only their own.")
    status: str = Field(description="open, queued, running, completed, failed or cancelled.")
    model: str
    top_k: int
    stages: list[str]
    counts: JobCounts
    progress: float = Field(description="Finished items (done + failed) / total.")
    attempts: int = Field(description="Items dispatched to the graph, re-runs included.")
    rerun_items: int = Field(description="Items dispatched more than once (in flight at a restart, or retried).")
    error: str | None = None
    webhook_state: str = Field(description="none, pending, delivered or failed.")
    timings: JobTimings
    status_url: str
    results_url: str
    operations: dict[str, Any] | None = Field(default=None, description="The job's convert/enhance options, if any.")
    outputs: JobOutputs | None = None
    outputs_url: str | None = None


class JobList(BaseModel):
    jobs: list[JobStatus]


OUTCOME_CLASSES = ("2xx", "3xx", "4xx", "5xx", "no_response", "refused")


class WebhookDelivery(BaseModel):
    """One delivery attempt as the API shows it: its outcome only (no URL, no error text: not an oracle)."""

    delivery_id: str = Field(description="The same for every attempt of one notification.")
    event: str
    attempt: int
    outcome: Literal["delivered", "failed"]
    status_class: str = Field(description="2xx, 3xx, 4xx or 5xx (the answer), no_response, or refused (the target).")
    at: float = Field(description="UNIX seconds.")
    duration_ms: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> Any:
        """From a `webhook_deliveries` row: `error` holds the outcome class of a failed attempt."""
        if not isinstance(row, dict) or "outcome" in row:
            return row
        code, error = row.get("status_code"), row.get("error")
        if error in OUTCOME_CLASSES:
            status = error
        else:  # a delivered attempt, or a row written before outcome classes: never show its text
            status = f"{code // 100}xx" if code else "no_response"
        return {**row, "outcome": "delivered" if row.get("delivered") else "failed", "status_class": status}


class JobEvents(BaseModel):
    events: list[dict[str, Any]]
    webhook_deliveries: list[WebhookDelivery]


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts is not None else None


def job_status(job: JobRecord, now: float) -> JobStatus:
    counts = JobCounts(total=job.total, **{k: job.counts.get(k, 0) for k in JobCounts.model_fields if k != "total"})
    finished = counts.done + counts.failed
    end = job.finished_at or now
    running_s = end - job.started_at if job.started_at else None
    timings = JobTimings(
        created_at=_iso(job.created_at) or "",
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        queued_s=job.started_at - job.created_at if job.started_at else None,
        running_s=running_s,
        images_per_s=finished / running_s if running_s else None,
    )
    return JobStatus(
        job_id=job.id,
        tenant=job.tenant,
        status=job.status,
        model=job.model,
        top_k=job.top_k,
        stages=list(job.stages),
        counts=counts,
        progress=finished / job.total if job.total else 0.0,
        attempts=job.attempts,
        rerun_items=job.rerun_items,
        error=job.error,
        webhook_state=job.webhook_state,
        timings=timings,
        status_url=f"/v1/jobs/{job.id}",
        results_url=f"/v1/jobs/{job.id}/results",
        **_operation_fields(job),
    )


def _operation_fields(job: JobRecord) -> dict[str, Any]:
    if not job.operations:
        return {}
    totals = job.outputs
    ratio = totals.input_bytes / totals.output_bytes if totals.output_bytes else None
    outputs = JobOutputs(
        count=totals.count,
        input_bytes=totals.input_bytes,
        output_bytes=totals.output_bytes,
        compression_ratio=round(ratio, 4) if ratio else None,
    )
    return {"operations": job.operations, "outputs": outputs, "outputs_url": f"/v1/jobs/{job.id}/outputs.zip"}
