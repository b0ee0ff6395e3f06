"""Collections: analysed image collections (datasets) and one row per image with its filterable facts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stages", sa.JSON, nullable=False),  # analysis fields: classification, quality, metadata
        sa.Column("sources", sa.JSON, nullable=False),  # folders, archives, URIs (or "job:<id>")
        sa.Column("job_id", sa.String(32)),  # saved from a batch job
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
    )
    op.create_table(
        "collection_images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.String(32), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("location", sa.Text),  # where the file was read: a path, a URI, or an archive (with `member`)
        sa.Column("member", sa.Text),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("phash", sa.String(16)),
        sa.Column("format", sa.String(16)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("mode", sa.String(16)),
        sa.Column("make", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("lens_model", sa.Text),
        sa.Column("taken_at", sa.String(40)),
        sa.Column("iso", sa.Integer),
        sa.Column("exposure_time_s", sa.Float),
        sa.Column("f_number", sa.Float),
        sa.Column("focal_length_mm", sa.Float),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
        sa.Column("dominant_hex", sa.String(7)),
        sa.Column("quality_score", sa.Float),
        sa.Column("quality_level", sa.String(8)),
        sa.Column("tags", sa.Text, nullable=False, server_default=","),
        sa.Column("top_label", sa.Text),
        sa.Column("top_score", sa.Float),
        sa.Column("class_probs", sa.JSON),  # [[class index, p], ...]: the classifier's highest probabilities
        sa.Column("document", JSON_DOCUMENT),  # the analysis document, as /v1/analyze answers it
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("collection_id", "name", name="uq_collection_images_name"),
        sa.Index("ix_collection_images_score", "collection_id", "quality_score"),
        sa.Index("ix_collection_images_level", "collection_id", "quality_level"),
        sa.Index("ix_collection_images_camera", "collection_id", "model"),
        sa.Index("ix_collection_images_taken", "collection_id", "taken_at"),
    )


def downgrade() -> None:
    op.drop_table("collection_images")
    op.drop_table("collections")
