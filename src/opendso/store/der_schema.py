"""The tables of the DER registry (SQLAlchemy 2 Core): assets and connection requests, kept whole as JSON.

Registered on :data:`opendso.store.metadata.metadata`; migration ``0009`` creates exactly these.
``body`` is :meth:`opendso.der.model.DerAsset.to_json` or
:meth:`opendso.der.model.ConnectionRequest.to_json`; the columns beside it are copied out of the
body for filtering and queue order. ``version`` grows with every change (compare-and-set).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from opendso.store.metadata import metadata

__all__ = ["der_assets", "der_requests"]

#: DER assets: one row per asset.
der_assets = sa.Table(
    "der_assets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("node", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
)

#: Connection requests: one row per request, with its status history in the body.
der_requests = sa.Table(
    "der_requests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("asset_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("received_us", sa.BigInteger, nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
)
