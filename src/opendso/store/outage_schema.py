"""Tables of outage management: outages, restoration steps, interrupted loads, customer calls (SQLAlchemy 2 Core).

They are registered on :data:`opendso.store.metadata.metadata` like the security tables; migration
``0007`` creates exactly these. Element names are the source's (node, load and switch names), so
a record stays readable when the grid is read again. Times are integer microseconds since the
epoch (UTC), as everywhere in the store.

- ``outages``: one row per interruption (from a trip, FLISR, planned switching, customer calls or an
  imported history), its state, protective device, cause, crew and estimated restoration time.
- ``outage_steps``: the interruption rows the IEEE 1366 indices count: each step is ``customers``
  restored at ``end_us`` after being off since ``start_us`` (an imported CSV row is one step; a
  closed outage has every customer in a step).
- ``outage_loads``: the loads an outage interrupted, when known individually (CAIFI, CTAIDI), with
  their customers, their active power when interrupted (energy not supplied) and when each was
  restored.
- ``outage_calls``: customer calls logged by operators, and the predicted outage each joined.
"""

from __future__ import annotations

import sqlalchemy as sa

from opendso.store.metadata import metadata

__all__ = ["outage_calls", "outage_loads", "outage_steps", "outages"]

#: One row per interruption; ``external_id`` is the event id of an imported history (unique per source).
outages = sa.Table(
    "outages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("device", sa.String(200), nullable=True),
    sa.Column("feeder", sa.String(200), nullable=True),
    sa.Column("cause", sa.Text, nullable=True),
    sa.Column("start_us", sa.BigInteger, nullable=False, index=True),
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

#: Restoration steps: ``customers`` back at ``end_us``, off since ``start_us`` (nodes restored, when known).
outage_steps = sa.Table(
    "outage_steps",
    metadata,
    sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("end_us", sa.BigInteger, nullable=False),
    sa.Column("customers", sa.BigInteger, nullable=False),
    sa.Column("feeder", sa.String(200), nullable=True),
    sa.Column("nodes", sa.JSON, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
)

#: The loads an outage interrupted (when known individually) and when each came back (NULL: still off).
outage_loads = sa.Table(
    "outage_loads",
    metadata,
    sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), primary_key=True),
    sa.Column("load", sa.String(200), primary_key=True),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("customers", sa.BigInteger, nullable=False),
    sa.Column("restored_us", sa.BigInteger, nullable=True),
    sa.Column("p_w", sa.Float(precision=53), nullable=True),
)

#: Customer calls: who (load or node), when, what they said, and the outage the call joined.
outage_calls = sa.Table(
    "outage_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outage_id", sa.Integer, sa.ForeignKey("outages.id"), nullable=True, index=True),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("load", sa.String(200), nullable=True),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
)
