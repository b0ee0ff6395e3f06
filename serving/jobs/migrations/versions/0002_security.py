"""Security: tenants on jobs, API keys, tenants' settings, the audit log, shared rate-limit buckets, daily usage.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("tenant", sa.String(64), nullable=False, server_default="default"))
    op.add_column("jobs", sa.Column("anonymize", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", "created_at"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.create_index("ix_job_items_source", "job_items", ["source_kind", "source"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("rate_per_s", sa.Float),
        sa.Column("burst", sa.Integer),
        sa.Column("quota_images_per_day", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("webhook_secret", sa.Text),
        sa.Column("anonymize", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("quota_images_per_day", sa.BigInteger),
        sa.Column("quota_stored_bytes", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("tenant", sa.String(64)),
        sa.Column("role", sa.String(16)),
        sa.Column("client", sa.String(64)),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("target", sa.String(128)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_audit_at", "audit_log", ["at"])
    op.create_index("ix_audit_tenant_at", "audit_log", ["tenant", "at"])
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "usage_daily",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("images", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_usage_tenant_day", "usage_daily", ["tenant", "day"])


def downgrade() -> None:
    for table in ("usage_daily", "rate_buckets", "audit_log", "tenants", "api_keys"):
        op.drop_table(table)
    op.drop_index("ix_job_items_source", "job_items")
    op.drop_index("ix_jobs_finished", "jobs")
    op.drop_index("ix_jobs_tenant_created", "jobs")
    op.drop_column("jobs", "anonymize")
    op.drop_column("jobs", "tenant")
