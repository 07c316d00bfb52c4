"""Tamper evidence and login throttling: sealed users and sessions, a chained event log, login throttles.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

- ``users.mac`` and ``sessions.mac``: the HMAC seal of each row (see :mod:`opendso.store.integrity`);
  rows written before the key existed are sealed when the key is made.
- ``events.prev_hash`` and ``events.hash``: the event log becomes a keyed hash chain like the
  audit trail; events written before stay unchained (the anchor names the first chained one).
- ``login_throttle``: failed logins per (user name, source address) with a growing delay,
  replacing the account-wide lock (``users.failed_logins``, ``first_failed_us`` and
  ``locked_until_us`` are dropped): a failure from one address no longer locks the account
  everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the seal and chain columns and the login throttle table; drop the account-wide lock."""
    op.add_column("users", sa.Column("mac", sa.String(64), nullable=True))
    op.add_column("sessions", sa.Column("mac", sa.String(64), nullable=True))
    op.add_column("events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("events", sa.Column("hash", sa.String(64), nullable=True))
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL): a batch copy of ``users`` would
    # have to drop the table that ``sessions`` references
    for column in ("failed_logins", "first_failed_us", "locked_until_us"):
        op.execute(f"ALTER TABLE users DROP COLUMN {column}")
    op.create_table(
        "login_throttle",
        sa.Column("username", sa.String(100), primary_key=True),
        sa.Column("source_ip", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_failed_us", sa.BigInteger, nullable=False),
        sa.Column("last_failed_us", sa.BigInteger, nullable=False),
        sa.Column("blocked_until_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Undo :func:`upgrade` (the account-wide lock columns come back empty)."""
    op.drop_table("login_throttle")
    op.add_column("users", sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"))
    op.add_column("users", sa.Column("first_failed_us", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("locked_until_us", sa.BigInteger, nullable=True))
    for table, column in (("users", "mac"), ("sessions", "mac"), ("events", "hash"), ("events", "prev_hash")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
