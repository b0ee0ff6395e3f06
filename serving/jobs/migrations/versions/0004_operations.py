"""Image operations in batch jobs: the job's convert/enhance options, and each item's output object and sizes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("operations", sa.JSON))
    op.add_column("job_results", sa.Column("output_object", sa.String(64)))
    op.add_column("job_results", sa.Column("output_name", sa.Text))
    op.add_column("job_results", sa.Column("input_bytes", sa.BigInteger))
    op.add_column("job_results", sa.Column("output_bytes", sa.BigInteger))


def downgrade() -> None:
    for column in ("output_bytes", "input_bytes", "output_name", "output_object"):
        op.drop_column("job_results", column)
    op.drop_column("jobs", "operations")
