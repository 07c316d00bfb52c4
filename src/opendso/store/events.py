"""The event log: an append-only record of who did what, when, to which element, and why.

Alarm transitions, commands, acknowledgements and tags are appended here. Each event gets a
sequence number that only grows; readers follow the log by sequence range. There is no update
or delete API, and the database refuses both (triggers created by the migration).

On PostgreSQL sequence numbers come from an identity sequence: with several concurrent writers
an event with a smaller number can commit after one with a larger number. OpenDSO appends from
one process, so readers that poll by "seq greater than the last seen" see every event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from opendso.store.errors import StoreInputError
from opendso.store.schema import events

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log."""

    seq: int
    ts: datetime
    actor: str
    kind: str
    element: str | None
    payload: dict[str, Any]


class EventLog:
    """Append to and read the event log of a database (the schema must exist: see :class:`Historian`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def append(
        self,
        kind: str,
        *,
        actor: str,
        element: str | None = None,
        payload: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> Event:
        """Append one event and return it with its sequence number; ``ts`` defaults to now (UTC).

        ``payload`` must be a JSON object (no NaN or infinity). Bad input raises
        :class:`StoreInputError` and appends nothing.
        """
        for name, text in (("kind", kind), ("actor", actor)):
            if not isinstance(text, str) or not text.strip():
                raise StoreInputError(f"event {name} must be a non-empty string, got {text!r}")
        if element is not None and not isinstance(element, str):
            raise StoreInputError(f"event element must be a string or None, got {element!r}")
        body: dict[str, Any] = dict(payload) if payload is not None else {}
        try:
            body = json.loads(json.dumps(body, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise StoreInputError(f"event {kind!r} payload is not plain JSON: {exc}") from None
        when = datetime.now(UTC) if ts is None else ts
        if when.tzinfo is None or when.utcoffset() is None:
            raise StoreInputError(f"event {kind!r}: naive datetime {when.isoformat()}; give a timezone-aware time")
        ts_us = (when - _EPOCH) // _ONE_US
        stmt = (
            sa.insert(events)
            .values(ts_us=ts_us, actor=actor, kind=kind, element=element, payload=body)
            .returning(events.c.seq)
        )
        with self.engine.begin() as conn:
            seq = int(conn.execute(stmt).scalar_one())
        log.info("event=event_appended seq=%d kind=%s actor=%s element=%s", seq, kind, actor, element)
        return Event(seq, _EPOCH + ts_us * _ONE_US, actor, kind, element, body)

    def read(self, first_seq: int = 1, last_seq: int | None = None, *, limit: int | None = None) -> list[Event]:
        """Return the events with ``first_seq <= seq <= last_seq`` (to the end by default), in sequence order."""
        query = sa.select(events).where(events.c.seq >= first_seq).order_by(events.c.seq)
        if last_seq is not None:
            query = query.where(events.c.seq <= last_seq)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Event(int(r.seq), _EPOCH + int(r.ts_us) * _ONE_US, r.actor, r.kind, r.element, dict(r.payload))
            for r in rows
        ]

    def last_seq(self) -> int:
        """Return the newest sequence number, 0 when the log is empty."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))).scalar_one())
