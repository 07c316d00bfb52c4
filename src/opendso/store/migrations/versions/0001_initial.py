"""Points, measurements and the event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
]

_POSTGRES_APPEND_ONLY = [
    """CREATE FUNCTION opendso_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$""",
    """CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION opendso_events_append_only()""",
]


def upgrade() -> None:
    """Create the three tables and the append-only guard of the event log."""
    op.create_table(
        "points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
    )
    op.create_table(
        "measurements",
        sa.Column("point_id", sa.Integer, sa.ForeignKey("points.id"), primary_key=True),
        sa.Column("ts_us", sa.BigInteger, primary_key=True),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("quality", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("element", sa.String(200), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sqlite_autoincrement=True,
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_APPEND_ONLY, "postgresql": _POSTGRES_APPEND_ONLY}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    """Drop everything this revision created."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP FUNCTION IF EXISTS opendso_events_append_only()")
    op.drop_table("events")
    op.drop_table("measurements")
    op.drop_table("points")
