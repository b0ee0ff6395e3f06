"""Webhook delivery across replicas and secret rotations; the audit log by time.

A job's delivery is claimed before each attempt (`webhook_owner` until `webhook_lease_until`), so two job loops
(two Ingress replicas, or a worker and its replacement) never POST the same notification at once. A tenant's
rotated-out secret is kept with the time of the rotation (`previous_webhook_secret`, `webhook_secret_rotated_at`):
for a grace period deliveries carry a signature with each, so a receiver still on the old secret keeps accepting.
The audit log gets an index on its time (`GET /v1/audit?newest=true` and `since` read it by time).

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
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", "audit_log")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("webhook_secret_rotated_at")
        batch.drop_column("previous_webhook_secret")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_lease_until")
        batch.drop_column("webhook_owner")
