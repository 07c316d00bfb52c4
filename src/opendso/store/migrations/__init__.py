"""Alembic migrations of the OpenDSO database (run by :func:`opendso.store.migrate.upgrade`)."""
