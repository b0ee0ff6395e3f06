"""The job store's tables (SQLAlchemy Core). The schema itself is created by the Alembic migrations.

Times are UNIX seconds (float) so SQLite and PostgreSQL behave the same; JSON columns hold small documents.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # open (accepting inputs) -> queued -> running -> completed | failed | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("top_k", sa.Integer, nullable=False),
    sa.Column("stages", sa.JSON, nullable=False),
    sa.Column("webhook_url", sa.Text),
    # none | pending | delivered | failed
    sa.Column("webhook_state", sa.String(16), nullable=False, server_default="none"),
    # the job loop making the current delivery attempt, until when (0008): one POST at a time per notification
    sa.Column("webhook_owner", sa.String(96)),
    sa.Column("webhook_lease_until", sa.Float),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),  # owner (serving.security)
    sa.Column("anonymize", sa.Boolean, nullable=False, server_default=sa.false()),  # drop GPS/personal EXIF
    sa.Column("operations", sa.JSON),  # image operations: {"convert": {...}, "enhance": {...}, "suffix": "..."}
    # the client's Idempotency-Key of the request that made the job, and that request's fingerprint (0009;
    # serving.jobs.idempotency): one job per tenant and key, freed when the job is purged
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("request_fingerprint", sa.String(64)),
    sa.Index("ix_jobs_status_created", "status", "created_at"),
    sa.Index("ux_jobs_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
)

job_items = sa.Table(
    "job_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("source_kind", sa.String(8), nullable=False),  # object (sha256 in the store) | uri | none
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger),
    # pending -> running -> done | failed; pending -> cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # dispatches to the graph
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("worker_id", sa.String(32)),  # the job_workers row holding a running item
    sa.UniqueConstraint("job_id", "idx", name="uq_job_items_job_idx"),
    sa.Index("ix_job_items_job_status_idx", "job_id", "status", "idx"),
)

job_results = sa.Table(
    "job_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # One result per item, ever: a re-run item whose result exists cannot record a second one.
    sa.Column("item_id", sa.Integer, sa.ForeignKey("job_items.id", ondelete="CASCADE"), nullable=False, unique=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # done | failed
    sa.Column("model", sa.String(200)),
    sa.Column("result", sa.JSON),
    sa.Column("error_kind", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    # image operations: the output in the object store (sha256), its file name, and the sizes in and out
    sa.Column("output_object", sa.String(64)),
    sa.Column("output_name", sa.Text),
    sa.Column("input_bytes", sa.BigInteger),
    sa.Column("output_bytes", sa.BigInteger),
    sa.Index("ix_job_results_job_idx", "job_id", "idx"),
    sa.Index("ix_job_results_output_object", "output_object"),  # a deleter's check for references (0010)
)

# One row per stored object some writer or deleter took the lock of (0010; serving.jobs.objects.hold_objects): the row
# is the digest's lock, shared by a writer recording references, exclusive for a deleter; deleted with the object.
stored_objects = sa.Table("stored_objects", metadata, sa.Column("digest", sa.String(64), primary_key=True))

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("detail", sa.JSON),
    sa.Index("ix_job_events_job", "job_id", "id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("delivery_id", sa.String(32), nullable=False),  # same for every attempt of one notification
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("duration_ms", sa.Float),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_webhook_deliveries_job", "job_id", "id"),
)

job_workers = sa.Table(
    "job_workers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process_started_at", sa.Float, nullable=False),  # with pid: the same process, not a reused pid
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

collections = sa.Table(
    "collections",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
    sa.Column("name", sa.String(200), nullable=False),
    # analyzing (a run is writing or was interrupted: `analyze` again resumes) -> ready
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stages", sa.JSON, nullable=False),  # analysis fields: classification, quality, metadata
    sa.Column("sources", sa.JSON, nullable=False),  # folders, archives, URIs (or "job:<id>")
    sa.Column("job_id", sa.String(32)),  # saved from a batch job
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
)

# One row per image: the filterable facts as columns (pipelines.collections.ImageRecord), the whole analysis
# document beside them. `tags` is ",blurry,noisy," so one LIKE finds a tag on SQLite and PostgreSQL alike.
JOB_LOCATION = "job:"  # collection_images.location of an image saved from a batch job: "job:<job id>"


def job_location(job_id: str) -> str:
    """The location (and collection source) of images saved from the batch job `job_id`."""
    return JOB_LOCATION + job_id


def located_job(location: str | None) -> str | None:
    """The job id of a location `job:<id>`; None for any other (a folder, an archive, a URI) or none."""
    return location.removeprefix(JOB_LOCATION) if location and location.startswith(JOB_LOCATION) else None


collection_images = sa.Table(
    "collection_images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("collection_id", sa.String(32), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("location", sa.Text),  # where the file was read: a path, a URI, or an archive (with `member`)
    sa.Column("member", sa.Text),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("phash", sa.String(16)),
    sa.Column("format", sa.String(16)),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("mode", sa.String(16)),
    sa.Column("make", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("lens_model", sa.Text),
    sa.Column("taken_at", sa.String(40)),
    sa.Column("iso", sa.Integer),
    sa.Column("exposure_time_s", sa.Float),
    sa.Column("f_number", sa.Float),
    sa.Column("focal_length_mm", sa.Float),
    sa.Column("latitude", sa.Float),
    sa.Column("longitude", sa.Float),
    sa.Column("dominant_hex", sa.String(7)),
    sa.Column("quality_score", sa.Float),
    sa.Column("quality_level", sa.String(8)),
    sa.Column("tags", sa.Text, nullable=False, server_default=","),
    sa.Column("top_label", sa.Text),
    sa.Column("top_score", sa.Float),
    sa.Column("class_probs", sa.JSON),  # [[class index, p], ...]: the classifier's highest probabilities
    sa.Column("document", JSONDocument),  # the analysis document, as /v1/analyze answers it
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("collection_id", "name", name="uq_collection_images_name"),
    sa.Index("ix_collection_images_score", "collection_id", "quality_score"),
    sa.Index("ix_collection_images_level", "collection_id", "quality_level"),
    sa.Index("ix_collection_images_camera", "collection_id", "model"),
    sa.Index("ix_collection_images_taken", "collection_id", "taken_at"),
)

# Training jobs (serving.training) and the versions they registered (the model registry).
TRAINING_FINAL_STATES = ("completed", "failed", "cancelled")  # a training job's states that never change again
training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
    sa.Column("created_by", sa.String(64)),
    sa.Column("model", sa.String(200), nullable=False),
    # queued -> running -> completed | failed | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("progress", sa.JSON),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # The process running the job (serving.jobs.workers.WorkerIdentity) and its last progress report: another
    # replica takes a running job over only when that process is dead (0007).
    sa.Column("runner_host", sa.String(255)),
    sa.Column("runner_pid", sa.Integer),
    sa.Column("runner_started_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Index("ix_training_jobs_tenant_created", "tenant", "created_at"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
    sa.Column("created_by", sa.String(64)),
    sa.Column("training_job", sa.String(32)),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON),
    sa.Column("promoted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("model", "version", name="uq_model_versions_model_version"),
)
