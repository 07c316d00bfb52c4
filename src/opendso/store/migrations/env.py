"""Alembic environment: runs on the connection that :mod:`opendso.store.migrate` hands over.

There is no ``alembic.ini``: the configuration is built in code, so migrations run when a
historian opens a database and need no file outside the package.
"""

from __future__ import annotations

from alembic import context

from opendso.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when someone runs the alembic CLI by hand
    raise RuntimeError("run OpenDSO migrations through opendso.store.migrate.upgrade(), which passes a connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
