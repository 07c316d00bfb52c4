"""Switching plans: one row per plan with its steps and archive.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Creates exactly the table of :mod:`opendso.store.plan_schema`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the switching plans table."""
    op.create_table(
        "switching_plans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("ix_switching_plans_state", "switching_plans", ["state"])


def downgrade() -> None:
    """Drop the switching plans table."""
    op.drop_index("ix_switching_plans_state", table_name="switching_plans")
    op.drop_table("switching_plans")
