"""Stored-object locks: `stored_objects(digest)`, one row per content-addressed object whose lock a writer or a deleter
took (serving.jobs.objects.hold_objects), and an index on `job_results.output_object` (a deleter checks an object's
references one digest at a time, under its lock). Both are created only when missing, so a database that already has
them (a partial upgrade re-run) upgrades cleanly.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "stored_objects"
INDEX = "ix_job_results_output_object"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        op.create_table(TABLE, sa.Column("digest", sa.String(64), primary_key=True))
    if INDEX not in {index["name"] for index in inspector.get_indexes("job_results")}:
        op.create_index(INDEX, "job_results", ["output_object"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="job_results")
    op.drop_table(TABLE)
