"""Switching safety: operating tags, safety documents with their devices and earths, earths, faulted sections.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Creates exactly the tables of :mod:`opendso.store.switching_schema`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the switching tables."""
    op.create_table(
        "switching_tags",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("switch", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("placed_by", sa.String(200), nullable=False),
        sa.Column("placed_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_switching_tags_switch", "switching_tags", ["switch"])
    op.create_table(
        "safety_documents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_safety_documents_state", "safety_documents", ["state"])
    op.create_table(
        "safety_document_devices",
        sa.Column("document_id", sa.String(64), sa.ForeignKey("safety_documents.id"), primary_key=True),
        sa.Column("switch", sa.String(200), primary_key=True),
    )
    op.create_table(
        "safety_document_earths",
        sa.Column("document_id", sa.String(64), sa.ForeignKey("safety_documents.id"), primary_key=True),
        sa.Column("node", sa.String(200), primary_key=True),
    )
    op.create_table(
        "switching_earths",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("applied_by", sa.String(200), nullable=False),
        sa.Column("applied_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "faulted_sections",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("flagged_by", sa.String(200), nullable=False),
        sa.Column("flagged_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop the switching tables."""
    op.drop_table("faulted_sections")
    op.drop_table("switching_earths")
    op.drop_table("safety_document_earths")
    op.drop_table("safety_document_devices")
    op.drop_index("ix_safety_documents_state", table_name="safety_documents")
    op.drop_table("safety_documents")
    op.drop_index("ix_switching_tags_switch", table_name="switching_tags")
    op.drop_table("switching_tags")
