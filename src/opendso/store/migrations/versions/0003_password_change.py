"""Users flagged to change their password at the next login (the first administrator, new users).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``users.must_change_password`` (false for existing users)."""
    op.add_column("users", sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    """Drop ``users.must_change_password``."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("must_change_password")
