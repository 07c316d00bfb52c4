"""Outage management: outages, restoration steps, interrupted loads, customer calls.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Creates exactly the tables of :mod:`opendso.store.outage_schema`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the outage tables."""
    op.create_table(
        "outages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("device", sa.String(200), nullable=True),
        sa.Column("feeder", sa.String(200), nullable=True),
        sa.Column("cause", sa.Text, nullable=True),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=True),
        sa.Column("etr_us", sa.BigInteger, nullable=True),
        sa.Column("crew", sa.String(200), nullable=True),
        sa.Column("crew_us", sa.BigInteger, nullable=True),
        sa.Column("customers", sa.BigInteger, nullable=False),
        sa.Column("loads_known", sa.Boolean, nullable=False),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "external_id", name="uq_outages_source_external_id"),
    )
    op.create_index("ix_outages_state", "outages", ["state"])
    op.create_index("ix_outages_start_us", "outages", ["start_us"])
    op.create_table(
        "outage_steps",
        sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("customers", sa.BigInteger, nullable=False),
        sa.Column("feeder", sa.String(200), nullable=True),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_table(
        "outage_loads",
        sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), primary_key=True),
        sa.Column("load", sa.String(200), primary_key=True),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("customers", sa.BigInteger, nullable=False),
        sa.Column("restored_us", sa.BigInteger, nullable=True),
        sa.Column("p_w", sa.Float(precision=53), nullable=True),
    )
    op.create_table(
        "outage_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), nullable=True),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("load", sa.String(200), nullable=True),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_index("ix_outage_calls_outage_id", "outage_calls", ["outage_id"])


def downgrade() -> None:
    """Drop the outage tables."""
    op.drop_table("outage_calls")
    op.drop_table("outage_loads")
    op.drop_table("outage_steps")
    op.drop_table("outages")
