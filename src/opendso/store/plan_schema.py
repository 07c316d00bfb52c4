"""The table of switching plans (SQLAlchemy 2 Core): one row per plan, its steps and archive as JSON.

Registered on :data:`opendso.store.metadata.metadata` like the other tables; migration ``0008``
creates exactly this. ``body`` is :meth:`opendso.operations.switching.plans.SwitchingPlan.to_json`
(steps, simulation and the archive of who did what, when); ``state`` and ``title`` are copied
out of it for listing. ``version`` grows with every change, so two people changing one plan at
once cannot overwrite each other (compare-and-set).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from opendso.store.metadata import metadata

__all__ = ["switching_plans"]

#: Switching plans and their archive.
switching_plans = sa.Table(
    "switching_plans",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
)
