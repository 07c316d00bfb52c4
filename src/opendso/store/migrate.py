"""Run the Alembic migrations programmatically: no ``alembic.ini`` needed."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """Return the Alembic configuration of OpenDSO's migrations (built in code)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """Return the newest revision the package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError("no migration found")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """Return the revision the database is at, or None when it has no OpenDSO schema yet."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Create or upgrade the schema of ``engine``'s database to ``revision`` (default: the newest)."""
    before = current_revision(engine)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    after = current_revision(engine)
    if before != after:
        log.info("event=schema_upgraded from=%s to=%s backend=%s", before, after, engine.dialect.name)
