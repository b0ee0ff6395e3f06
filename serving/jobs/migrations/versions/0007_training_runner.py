"""Training jobs name the process that runs them, so a replica that starts while another one trains does not run
the same job again (only a job whose runner is dead is taken over).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("runner_host", "runner_pid", "runner_started_at", "heartbeat_at")


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("runner_host", sa.String(255)))
    op.add_column("training_jobs", sa.Column("runner_pid", sa.Integer))
    op.add_column("training_jobs", sa.Column("runner_started_at", sa.Float))  # the runner process's start time
    op.add_column("training_jobs", sa.Column("heartbeat_at", sa.Float))  # refreshed with every progress report


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
