"""Tables of the control-room service: users, sessions, login throttles and the audit trail (SQLAlchemy 2 Core).

They are registered on the same :data:`opendso.store.metadata.metadata` as the historian's tables;
migrations ``0002``, ``0003`` and ``0005`` create exactly these. Times are integer microseconds since the epoch (UTC),
as everywhere in the store.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from opendso.store.metadata import metadata

#: People and API clients that may log in; ``password_hash`` is an argon2id hash, never a password.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(100), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("roles", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    # set for the first administrator and for users an administrator creates (migration 0003)
    sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()),
    # HMAC seal of the row's other columns (migration 0005, see opendso.store.integrity)
    sa.Column("mac", sa.String(64), nullable=True),
)

#: Login sessions (cookie) and bearer tokens; only a SHA-256 of the token is stored.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),
    sa.Column("mac", sa.String(64), nullable=True),  # HMAC seal of the row (migration 0005)
)

#: Failed logins per (user name, source address): each pair waits a growing delay (migration 0005).
login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("username", sa.String(100), primary_key=True),
    sa.Column("source_ip", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_failed_us", sa.BigInteger, nullable=False),
    sa.Column("last_failed_us", sa.BigInteger, nullable=False),
    sa.Column("blocked_until_us", sa.BigInteger, nullable=False),
)

#: The append-only audit trail: each record's ``hash`` chains it to the one before.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("element", sa.String(200), nullable=True),
    sa.Column("result", sa.String(100), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("details", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
