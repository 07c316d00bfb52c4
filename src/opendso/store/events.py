"""The event log: an append-only record of who did what, when, to which element, and why.

Alarm transitions, commands, acknowledgements, shift notes and tags are appended here. Each
event gets the next sequence number (exactly one more than the newest); readers follow the log
by sequence range (:meth:`EventLog.read`) or look events up by kind, time and sequence
(:meth:`EventLog.find`: the alarm journal, the shift notes). Every reader goes through
:class:`EventLog`, so the rows are read in one place and the chain written in one. There is no
update or delete API, and the database refuses both (triggers created by the migration).

The log is a keyed hash chain like the audit trail (:mod:`opendso.store.integrity`): each
event's ``hash`` is the HMAC of its content and the previous event's hash, and the newest head
is anchored outside the database after each append. :func:`verify_events` finds an edited,
deleted, inserted or truncated event. Appends are serialised in the process and take the next
number from the newest event; a writer in another process that took the same number makes the
insert fail, and it retries.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from opendso.errors import StoreInputError
from opendso.store.integrity import GENESIS_HASH, ChainReport, event_body, sealer_of, verify_rows
from opendso.store.schema import events
from opendso.timeutil import from_epoch_us, to_epoch_us

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
CHAIN = "events"


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
        return self.append_many([(kind, actor, element, payload, ts)])[0]

    def append_many(
        self, items: Sequence[tuple[str, str, str | None, Mapping[str, Any] | None, datetime | None]]
    ) -> list[Event]:
        """Append events ``(kind, actor, element, payload, ts)`` in one transaction; all or nothing."""
        prepared = [self._check(*item) for item in items]
        if not prepared:
            return []
        sealer = sealer_of(self.engine)
        for attempt in range(5):
            try:
                with _LOCK, self.engine.begin() as conn:
                    head = conn.execute(
                        sa.select(events.c.seq, events.c.hash).order_by(events.c.seq.desc()).limit(1)
                    ).first()
                    seq = int(head.seq) if head is not None else 0
                    prev = str(head.hash) if head is not None and head.hash is not None else GENESIS_HASH
                    rows = []
                    out = []
                    for kind, actor, element, body, ts_us in prepared:
                        seq += 1
                        event = Event(seq, from_epoch_us(ts_us), actor, kind, element, body)
                        hashed = {
                            "seq": seq,
                            "ts_us": ts_us,
                            "actor": actor,
                            "kind": kind,
                            "element": element,
                            "payload": body,
                        }
                        digest = sealer.chain_hash(CHAIN, prev, hashed)
                        rows.append(
                            {
                                "seq": seq,
                                "ts_us": ts_us,
                                "actor": actor,
                                "kind": kind,
                                "element": element,
                                "payload": body,
                                "prev_hash": prev,
                                "hash": digest,
                            }
                        )
                        out.append(event)
                        prev = digest
                    conn.execute(sa.insert(events), rows)
                break
            except sa.exc.IntegrityError:
                if attempt == 4:
                    raise
        sealer.anchor.advance(CHAIN, seq, prev)
        for event in out:
            log.info(
                "event=event_appended seq=%d kind=%s actor=%s element=%s",
                event.seq,
                event.kind,
                event.actor,
                event.element,
            )
        return out

    @staticmethod
    def _check(
        kind: str, actor: str, element: str | None, payload: Mapping[str, Any] | None, ts: datetime | None
    ) -> tuple[str, str, str | None, dict[str, Any], int]:
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
        return kind, actor, element, body, to_epoch_us(when)

    def read(self, first_seq: int = 1, last_seq: int | None = None, *, limit: int | None = None) -> list[Event]:
        """Return the events with ``first_seq <= seq <= last_seq`` (to the end by default), in sequence order."""
        query = sa.select(events).where(events.c.seq >= first_seq).order_by(events.c.seq)
        if last_seq is not None:
            query = query.where(events.c.seq <= last_seq)
        if limit is not None:
            query = query.limit(limit)
        return self._fetch(query)

    def find(
        self,
        *,
        kind: str | None = None,
        kind_prefix: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        """Return the events that match every filter given, in sequence order (newest first if asked).

        ``kind`` is an exact kind, ``kind_prefix`` the start of one (``"alarm."``: every alarm
        event; ``%`` and ``_`` are plain characters); ``start <= ts < end`` bounds the event time
        and ``before`` the sequence number (``seq < before``, to page back). ``limit`` caps the
        count, taken from the newest end when ``newest_first``. Naive times raise
        :class:`StoreInputError`.
        """
        query = sa.select(events)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        if kind_prefix is not None:
            query = query.where(events.c.kind.startswith(kind_prefix, autoescape=True))
        if start is not None:
            query = query.where(events.c.ts_us >= _aware_us("start", start))
        if end is not None:
            query = query.where(events.c.ts_us < _aware_us("end", end))
        if before is not None:
            query = query.where(events.c.seq < before)
        query = query.order_by(events.c.seq.desc() if newest_first else events.c.seq)
        if limit is not None:
            query = query.limit(limit)
        return self._fetch(query)

    def _fetch(self, query: sa.Select[Any]) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Event(int(r.seq), from_epoch_us(int(r.ts_us)), r.actor, r.kind, r.element, dict(r.payload)) for r in rows
        ]

    def read_head(self) -> tuple[int, str] | None:
        """The newest event's sequence number and hash (None when the log is empty)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events.c.seq, events.c.hash).order_by(events.c.seq.desc()).limit(1)).first()
        if row is None:
            return None
        return int(row.seq), str(row.hash) if row.hash is not None else GENESIS_HASH

    def last_seq(self) -> int:
        """Return the newest sequence number, 0 when the log is empty."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))).scalar_one())


def _aware_us(name: str, when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise StoreInputError(f"event search: naive {name} {when.isoformat()}; give a timezone-aware time")
    return to_epoch_us(when)


def _rows(engine: sa.Engine, chunk: int = 5000) -> Iterator[Any]:
    after = -(2**62)
    while True:
        query = sa.select(events).where(events.c.seq > after).order_by(events.c.seq).limit(chunk)
        with engine.connect() as conn:
            batch = conn.execute(query).all()
        yield from batch
        if len(batch) < chunk:
            return
        after = int(batch[-1].seq)


def verify_events(engine: sa.Engine) -> ChainReport:
    """Check the event log's chain and its anchor."""
    return verify_rows(CHAIN, sealer_of(engine), _rows(engine), event_body)


__all__ = ["Event", "EventLog", "verify_events"]
