"""Webhook delivery across replicas and secret rotations.

A job's delivery is claimed before each attempt (`webhook_owner` until `webhook_lease_until`), so two job loops
(two Ingress replicas, or a worker and its replacement) never POST the same notification at once. A tenant's
rotated-out secret is kept with the time of the rotation (`previous_webhook_secret`, `webhook_secret_rotated_at`):
for a grace period deliveries carry a signature with each, so a receiver still on the old secret keeps accepting.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_owner", sa.String(96)))
    op.add_column("jobs", sa.Column("webhook_lease_until", sa.Float))
    op.add_column("tenants", sa.Column("previous_webhook_secret", sa.Text))
    op.add_column("tenants", sa.Column("webhook_secret_rotated_at", sa.Float))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 has it): a batch rebuild of `jobs` drops and recreates the table, and with
    # foreign keys on that deletes every job's items, results and events by cascade.
    for table, column in (
        ("tenants", "webhook_secret_rotated_at"),
        ("tenants", "previous_webhook_secret"),
        ("jobs", "webhook_lease_until"),
        ("jobs", "webhook_owner"),
    ):
        op.drop_column(table, column)
