"""The DER registry repository: assets and connection requests kept whole, changed by compare-and-set.

:class:`DerStore` stores the JSON of :class:`opendso.der.model.DerAsset` and
:class:`opendso.der.model.ConnectionRequest` (the store does not import ``der``: it keeps the
document and copies ``id``, ``kind``, ``node``, ``asset_id``, ``status`` and ``received_at`` out
of it). A change names the version the caller read; a row changed by someone else in between
raises :class:`~opendso.errors.ConflictError` instead of being overwritten. :meth:`DerStore.add_many`
stores a whole import in one transaction, or nothing. There is no delete: a withdrawn request
and a disconnected asset stay, with their history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from opendso.errors import ConflictError, NotFoundError
from opendso.store.der_schema import der_assets, der_requests
from opendso.timeutil import parse_time, to_epoch_us

__all__ = ["DerRecord", "DerStore"]


@dataclass(frozen=True, slots=True)
class DerRecord:
    """One stored asset or request: its JSON body and the version a change must name."""

    id: str
    version: int
    body: Mapping[str, Any]


class DerStore:
    """DER assets and connection requests in the database (SQLite or PostgreSQL, through ``engine``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- writing ----------------------------------------------------------------------------------------
    def add_many(
        self, assets: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]], at: datetime
    ) -> None:
        """Store new assets and requests in one transaction; an id stored before raises :class:`ConflictError`."""
        us = to_epoch_us(at)
        with self.engine.begin() as conn:
            for table, bodies, what in ((der_assets, assets, "asset"), (der_requests, requests, "request")):
                ids = [str(b["id"]) for b in bodies]
                for chunk in range(0, len(ids), 500):
                    found = conn.execute(sa.select(table.c.id).where(table.c.id.in_(ids[chunk : chunk + 500]))).first()
                    if found is not None:
                        raise ConflictError(f"{what} {found[0]} exists already")
            if assets:
                conn.execute(
                    der_assets.insert(), [{**_asset_columns(b), "version": 1, "updated_us": us} for b in assets]
                )
            if requests:
                conn.execute(
                    der_requests.insert(), [{**_request_columns(b), "version": 1, "updated_us": us} for b in requests]
                )

    def replace_asset(self, asset_id: str, version: int, body: Mapping[str, Any], at: datetime) -> DerRecord:
        """Write ``body`` over the asset if it is still at ``version``; return the new record."""
        return self._replace(der_assets, "asset", asset_id, version, _asset_columns(body), at)

    def replace_request(self, request_id: str, version: int, body: Mapping[str, Any], at: datetime) -> DerRecord:
        """Write ``body`` over the request if it is still at ``version``; return the new record."""
        return self._replace(der_requests, "request", request_id, version, _request_columns(body), at)

    # -- reading ----------------------------------------------------------------------------------------
    def asset(self, asset_id: str) -> DerRecord:
        """Return an asset; an unknown id raises :class:`NotFoundError`."""
        return self._get(der_assets, "asset", asset_id)

    def request(self, request_id: str) -> DerRecord:
        """Return a request; an unknown id raises :class:`NotFoundError`."""
        return self._get(der_requests, "request", request_id)

    def assets(self, *, node: str | None = None, kind: str | None = None) -> list[DerRecord]:
        """Return assets by id, optionally at one node or of one kind."""
        query = sa.select(der_assets).order_by(der_assets.c.id)
        if node is not None:
            query = query.where(der_assets.c.node == node)
        if kind is not None:
            query = query.where(der_assets.c.kind == kind)
        with self.engine.connect() as conn:
            return [DerRecord(str(r.id), int(r.version), dict(r.body)) for r in conn.execute(query)]

    def requests(self, *, statuses: Sequence[str] = (), asset_id: str | None = None) -> list[DerRecord]:
        """Return requests in queue order (received time, then id), optionally of some statuses or one asset."""
        query = sa.select(der_requests).order_by(der_requests.c.received_us, der_requests.c.id)
        if statuses:
            query = query.where(der_requests.c.status.in_(list(statuses)))
        if asset_id is not None:
            query = query.where(der_requests.c.asset_id == asset_id)
        with self.engine.connect() as conn:
            return [DerRecord(str(r.id), int(r.version), dict(r.body)) for r in conn.execute(query)]

    # -- internals --------------------------------------------------------------------------------------
    def _get(self, table: sa.Table, what: str, key: str) -> DerRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == key)).first()
        if row is None:
            raise NotFoundError(f"no DER {what} {key}")
        return DerRecord(str(row.id), int(row.version), dict(row.body))

    def _replace(
        self, table: sa.Table, what: str, key: str, version: int, columns: dict[str, Any], at: datetime
    ) -> DerRecord:
        if columns["id"] != key:
            raise ConflictError(f"{what} {key}: the new body names {what} {columns['id']}")
        with self.engine.begin() as conn:
            done = conn.execute(
                table.update()
                .where(table.c.id == key, table.c.version == version)
                .values(**columns, version=version + 1, updated_us=to_epoch_us(at))
            )
            if done.rowcount != 1:
                exists = conn.execute(sa.select(table.c.version).where(table.c.id == key)).first()
                if exists is None:
                    raise NotFoundError(f"no DER {what} {key}")
                raise ConflictError(
                    f"{what} {key} was changed by someone else (version {exists[0]}, not {version}): reload it"
                )
        return DerRecord(key, version + 1, dict(columns["body"]))


def _asset_columns(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {"id": str(body["id"]), "kind": str(body["kind"]), "node": str(body["node"]), "body": dict(body)}
    except KeyError as exc:
        raise ConflictError(f"an asset body lacks {exc.args[0]!r}") from exc


def _request_columns(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {
            "id": str(body["id"]),
            "asset_id": str(body["asset_id"]),
            "status": str(body["status"]),
            "received_us": to_epoch_us(parse_time(str(body["received_at"]), "received_at")),
            "body": dict(body),
        }
    except KeyError as exc:
        raise ConflictError(f"a request body lacks {exc.args[0]!r}") from exc
