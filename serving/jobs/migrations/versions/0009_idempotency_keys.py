"""Idempotency keys of batch submissions: a client's retry of `POST /v1/batch` answers the job it already made.

`jobs.idempotency_key` (the client's `Idempotency-Key`) and `jobs.request_fingerprint` (what that request asked for,
serving.jobs.idempotency), both NULL for jobs made without a key, with a unique index on (tenant, idempotency_key):
two requests sent together with one key cannot both write a job. NULLs are distinct in a unique index on SQLite and
PostgreSQL alike, so jobs without a key never collide.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ux_jobs_tenant_idempotency_key"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(255)))
    op.add_column("jobs", sa.Column("request_fingerprint", sa.String(64)))
    op.create_index(INDEX, "jobs", ["tenant", "idempotency_key"], unique=True)


def downgrade() -> None:
    # The index first: SQLite refuses to drop a column an index names. Then plain DROP COLUMN (SQLite >= 3.35), not a
    # batch rebuild of `jobs`, which with foreign keys on deletes every job's items, results and events (see 0008).
    op.drop_index(INDEX, table_name="jobs")
    op.drop_column("jobs", "request_fingerprint")
    op.drop_column("jobs", "idempotency_key")
