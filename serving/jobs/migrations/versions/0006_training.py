"""Training jobs and the model registry: one row per training job, one per registered model version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
        sa.Column("created_by", sa.String(64)),  # the API key id (None: auth off)
        sa.Column("model", sa.String(200), nullable=False),  # the model the result becomes a version of
        sa.Column("status", sa.String(16), nullable=False),  # queued -> running -> completed | failed | cancelled
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON),  # {"phase": ..., "done": n, "total": n}
        sa.Column("result", sa.JSON),  # version, validation report, promoted, timings
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_training_jobs_tenant_created", "training_jobs", ["tenant", "created_at"])
    op.create_table(
        "model_versions",
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


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_index("ix_training_jobs_tenant_created", "training_jobs")
    op.drop_table("training_jobs")
