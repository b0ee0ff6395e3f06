"""The security tables (SQLAlchemy Core), in the job store's database; created by its migration 0002.

Keys, tenants, the audit log, rate-limit buckets and daily usage sit beside the jobs so every replica (and the
`imgserve keys` CLI) sees the same state, on SQLite or PostgreSQL alike. Times are UNIX seconds (float).
"""

import sqlalchemy as sa

metadata = sa.MetaData()  # its own: serving.security does not import serving.jobs (jobs import security)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # public key id, the middle part of isk_<id>_<secret>
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),  # never the key itself
    sa.Column("rate_per_s", sa.Float),
    sa.Column("burst", sa.Integer),
    sa.Column("quota_images_per_day", sa.BigInteger),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("webhook_secret", sa.Text),
    # the secret `--rotate` replaced and when (0008): deliveries are signed with both for a grace period
    sa.Column("previous_webhook_secret", sa.Text),
    sa.Column("webhook_secret_rotated_at", sa.Float),
    sa.Column("anonymize", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("quota_images_per_day", sa.BigInteger),
    sa.Column("quota_stored_bytes", sa.BigInteger),
    sa.Column("created_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("key_id", sa.String(16)),
    sa.Column("tenant", sa.String(64)),
    sa.Column("role", sa.String(16)),
    sa.Column("client", sa.String(64)),
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("target", sa.String(128)),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | denied | failed
    sa.Column("detail", sa.JSON),
)

rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # UTC date, YYYY-MM-DD
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("images", sa.BigInteger, nullable=False, server_default="0"),
)
