"""Tables of switching safety: operating tags, safety documents, earths and faulted-section flags (SQLAlchemy 2 Core).

They are registered on :data:`opendso.store.metadata.metadata` like the security tables; migration
``0006`` creates exactly these. Names are the source's element names (switch and node names), as
the safety gate reads them (:mod:`opendso.operations.switching.model`). Times are integer
microseconds since the epoch (UTC), as everywhere in the store. The history of every change is in
the event log and the audit trail; these tables hold the present state.
"""

from __future__ import annotations

import sqlalchemy as sa

from opendso.store.metadata import metadata

__all__ = [
    "faulted_sections",
    "safety_document_devices",
    "safety_document_earths",
    "safety_documents",
    "switching_earths",
    "switching_tags",
]

#: Operating tags on switches: ``do_not_operate`` blocks, ``caution`` needs an override with a reason.
switching_tags = sa.Table(
    "switching_tags",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("switch", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("placed_by", sa.String(200), nullable=False),
    sa.Column("placed_us", sa.BigInteger, nullable=False),
)

#: Safety documents (permit to work, sanction for test) and where they stand in their state machine.
safety_documents = sa.Table(
    "safety_documents",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
)

#: The devices (switch names) a safety document isolates.
safety_document_devices = sa.Table(
    "safety_document_devices",
    metadata,
    sa.Column("document_id", sa.String(64), sa.ForeignKey("safety_documents.id"), primary_key=True),
    sa.Column("switch", sa.String(200), primary_key=True),
)

#: The nodes a safety document earths.
safety_document_earths = sa.Table(
    "safety_document_earths",
    metadata,
    sa.Column("document_id", sa.String(64), sa.ForeignKey("safety_documents.id"), primary_key=True),
    sa.Column("node", sa.String(200), primary_key=True),
)

#: Earths applied on nodes: a closed earth switch or portable earths recorded there.
switching_earths = sa.Table(
    "switching_earths",
    metadata,
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("applied_by", sa.String(200), nullable=False),
    sa.Column("applied_us", sa.BigInteger, nullable=False),
)

#: Nodes (sections) flagged faulted: no close onto them until an authorised user clears the flag.
faulted_sections = sa.Table(
    "faulted_sections",
    metadata,
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("flagged_by", sa.String(200), nullable=False),
    sa.Column("flagged_us", sa.BigInteger, nullable=False),
)
