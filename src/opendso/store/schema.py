"""The database schema of the historian and the event log (SQLAlchemy 2 Core tables).

Times are stored as integer microseconds since 1970-01-01 UTC (``ts_us``): the same type,
arithmetic and index behaviour on SQLite and PostgreSQL, so interval aggregates are one portable
integer division and batch writes stay cheap. The API converts to and from timezone-aware UTC.

The migrations under ``migrations/versions`` create exactly these tables; a test checks that
they agree. Importing this module registers the security tables (:mod:`opendso.store.security_schema`),
the switching tables (:mod:`opendso.store.switching_schema`) and the outage tables
(:mod:`opendso.store.outage_schema`), the switching plans (:mod:`opendso.store.plan_schema`)
and the DER registry (:mod:`opendso.store.der_schema`) too, so :data:`metadata` here holds every table of the database.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from opendso.store import der_schema as _der_schema  # noqa: F401  (registers DER assets, requests)
from opendso.store import outage_schema as _outage_schema  # noqa: F401  (registers outages, steps, loads, calls)
from opendso.store import plan_schema as _plan_schema  # noqa: F401  (registers switching plans)
from opendso.store import security_schema as _security_schema  # noqa: F401  (registers users, sessions, audit)
from opendso.store import switching_schema as _switching_schema  # noqa: F401  (registers tags, documents, earths)
from opendso.store.metadata import metadata

__all__ = ["alarm_state", "alarm_suppression", "events", "measurements", "metadata", "points"]

#: Registered measurement points: a stable integer id and the name used by adapters and queries.
points = sa.Table(
    "points",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("unit", sa.String(32), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
)

#: Append-only measurements; (point, time) is the key, so a repeated write is ignored.
measurements = sa.Table(
    "measurements",
    metadata,
    sa.Column("point_id", sa.Integer, sa.ForeignKey("points.id"), primary_key=True),
    sa.Column("ts_us", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Float(precision=53), nullable=True),
    sa.Column("quality", sa.Integer, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

#: Append-only event log (alarm transitions, commands, acknowledgements); ``seq`` only grows.
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("element", sa.String(200), nullable=True),
    sa.Column("payload", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    # the keyed hash chain (migration 0005; NULL for events written before the integrity key existed)
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
    sqlite_autoincrement=True,
)

#: The alarm state that outlives a restart (migration 0004): one row per alarm channel that is not
#: normal-and-acknowledged or is shelved or out of service; ``key`` is ``<monitor>:<channel>``.
alarm_state = sa.Table(
    "alarm_state",
    metadata,
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

#: Areas (alarm groups, e.g. feeders) whose alarms are suppressed by design, e.g. under a permit (0004).
alarm_suppression = sa.Table(
    "alarm_suppression",
    metadata,
    sa.Column("area", sa.String(400), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("since_us", sa.BigInteger, nullable=False),
)
