"""DER registry: assets and connection requests.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Creates exactly the tables of :mod:`opendso.store.der_schema`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the DER asset and connection request tables."""
    op.create_table(
        "der_assets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("ix_der_assets_node", "der_assets", ["node"])
    op.create_table(
        "der_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("ix_der_requests_asset_id", "der_requests", ["asset_id"])
    op.create_index("ix_der_requests_status", "der_requests", ["status"])
    op.create_index("ix_der_requests_received_us", "der_requests", ["received_us"])


def downgrade() -> None:
    """Drop the DER tables."""
    op.drop_index("ix_der_requests_received_us", table_name="der_requests")
    op.drop_index("ix_der_requests_status", table_name="der_requests")
    op.drop_index("ix_der_requests_asset_id", table_name="der_requests")
    op.drop_table("der_requests")
    op.drop_index("ix_der_assets_node", table_name="der_assets")
    op.drop_table("der_assets")
