"""Batch workers: each live job loop's heartbeat, and which worker holds each running item.

Orphan recovery requeues only the items of workers that are dead (stale heartbeat, or a process on this host
that is gone), not those a live replica is still processing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_started_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.add_column("job_items", sa.Column("worker_id", sa.String(32)))


def downgrade() -> None:
    op.drop_column("job_items", "worker_id")
    op.drop_table("job_workers")
