"""Database URLs and engines: SQLite (WAL) by default, PostgreSQL when the URL says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from opendso.settings import get_settings

#: Errors that mean "the database cannot be reached or cannot write now": the write path buffers.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


def data_dir() -> Path:
    """Return OpenDSO's data folder: ``OPENDSO_DATA_DIR``, else ``$XDG_DATA_HOME/opendso`` (~/.local/share)."""
    return get_settings().folders.data_folder()


def default_database_url() -> str:
    """Return ``OPENDSO_DATABASE_URL`` when set, else the embedded SQLite file in the data folder."""
    configured = get_settings().database.url
    if configured:
        return configured
    return f"sqlite:///{data_dir() / 'opendso.db'}"


def safe_url(url: str | sa.URL) -> str:
    """Return the URL with its password hidden, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str, *, sqlite_busy_timeout_s: float = 5.0, connect_timeout_s: float = 5.0) -> sa.Engine:
    """Return an engine for ``url``, tuned for the historian.

    SQLite gets WAL journaling, ``synchronous=NORMAL`` (durable across process crashes; a power
    cut may lose the last commits, which the store-and-forward buffer does not cover),
    foreign keys on and a busy timeout. Other backends get ``pool_pre_ping`` so a connection that
    died with the server is replaced rather than failing the next write.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": sqlite_busy_timeout_s})
        in_memory = not database or database == ":memory:"

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
