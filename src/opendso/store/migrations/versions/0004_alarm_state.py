"""Alarm state that outlives a restart: acknowledgements, shelves, out-of-service alarms, suppressed areas.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``alarm_state`` and ``alarm_suppression``."""
    op.create_table(
        "alarm_state",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("severity", sa.SmallInteger, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("since_us", sa.BigInteger, nullable=True),
        sa.Column("acknowledged", sa.Boolean, nullable=False),
        sa.Column("shelved_until_us", sa.BigInteger, nullable=True),
        sa.Column("shelved_at_us", sa.BigInteger, nullable=True),
        sa.Column("shelved_by", sa.String(200), nullable=True),
        sa.Column("shelve_reason", sa.Text, nullable=True),
        sa.Column("out_of_service", sa.Boolean, nullable=False),
        sa.Column("out_of_service_us", sa.BigInteger, nullable=True),
        sa.Column("out_of_service_by", sa.String(200), nullable=True),
        sa.Column("out_of_service_reason", sa.Text, nullable=True),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alarm_suppression",
        sa.Column("area", sa.String(400), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("since_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("alarm_suppression")
    op.drop_table("alarm_state")
