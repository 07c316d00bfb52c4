"""The audit trail: an append-only, keyed hash chain of who did what, from where, and why.

Every record holds a sequence number that grows by exactly one, the time, the actor, the source
IP address, the action, the element acted on, the result and the reason (with free details), and
``hash = HMAC-SHA256(key, prev_hash + canonical JSON of the record)`` with the integrity key kept
outside the database (:mod:`opendso.store.integrity`); ``prev_hash`` is the hash of the record
before (64 zeros for the first). The database refuses UPDATE and DELETE on the table (triggers
of migration ``0002``), and :func:`verify_chain` finds what slips past them: an edited record
(its keyed hash no longer matches, even when recomputed with the public hash function), a
deleted record (a gap in the sequence), a broken link, and deleted newest records (the chain's
head is anchored in a file beside the key after every append). Records written by an OpenDSO
that had no key yet are reported as unkeyed and checked with the plain SHA-256 chain.

Refused actions are audited without letting a flood fill the trail (:meth:`AuditTrail.refused`):
per action, source address and minute the first refusal is written at once and the rest are
counted and written as one summary record when the minute is over (IEC 62351-14 and NERC
CIP-007 R4 ask for failed and refused access to be logged). When a collector is configured,
every record is also forwarded off the host as RFC 5424 syslog over TLS
(:mod:`opendso.service.syslog`) with the chain head, so that even someone who can read the key
cannot rewrite history unseen: ``opendso audit verify --syslog-copy`` compares the two.

Recorded actions (``action`` column): ``login``, ``login.failed``, ``login.throttled``,
``logout``, ``token.issued``, ``access.refused`` (403, CSRF, forged or revoked tokens),
``alarm.*``, ``shift.note``, ``command.*``, ``integrity.violation`` and every user or
configuration change (``user.add``, ``user.password``, ``user.roles``, ``user.disable``,
``user.unlock``, ...).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from opendso.errors import InputError
from opendso.service.syslog_copy import compare_with_copy
from opendso.store.historian import Historian
from opendso.store.integrity import (
    GENESIS_HASH,
    ChainProblem,
    ChainReport,
    audit_body,
    plain_hash,
    sealer_of,
    verify_rows,
)
from opendso.store.security_schema import audit
from opendso.timeutil import from_epoch_us, to_epoch_us

log = logging.getLogger(__name__)

CHAIN = "audit"
_LOCK = threading.Lock()
#: At most this many (action, source) buckets are counted per minute; more go to one overflow bucket.
MAX_BUCKETS = 1000
#: At most this many distinct actors, elements and reasons are named in a summary record.
MAX_NAMED = 20


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the audit trail."""

    seq: int
    ts: datetime
    actor: str
    source_ip: str | None
    action: str
    element: str | None
    result: str
    reason: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the API's shape)."""
        return {
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "actor": self.actor,
            "source_ip": self.source_ip,
            "action": self.action,
            "element": self.element,
            "result": self.result,
            "reason": self.reason,
            "details": self.details,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }

    @property
    def ts_us(self) -> int:
        """The time as microseconds since the epoch (as hashed)."""
        return to_epoch_us(self.ts)


#: One finding of :func:`verify_chain` (``kind``: see :class:`~opendso.store.integrity.ChainProblem`).
AuditProblem = ChainProblem
#: What :func:`verify_chain` found (``ok``, ``records``, ``last_seq``, ``head_hash``, ``unkeyed``, ``problems``).
VerificationResult = ChainReport


def record_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """The public, unkeyed ``sha256(prev_hash + canonical JSON of body)`` of records from before the key."""
    return plain_hash(prev_hash, body)


class Forwarder(Protocol):
    """Something that ships new audit records off the host (see :mod:`opendso.service.syslog`)."""

    def notify(self) -> None:
        """New records were appended: forward them soon."""
        ...


_FORWARDERS: weakref.WeakKeyDictionary[sa.Engine, Forwarder] = weakref.WeakKeyDictionary()


def set_forwarder(engine: sa.Engine, forwarder: Forwarder | None) -> None:
    """Forward the audit records of ``engine``'s database with ``forwarder`` (None: stop forwarding)."""
    if forwarder is None:
        _FORWARDERS.pop(engine, None)
    else:
        _FORWARDERS[engine] = forwarder


@dataclass
class _Bucket:
    action: str
    source_ip: str | None
    minute: int  # epoch minutes
    first_written: bool = False
    count: int = 0  # refusals after the first, not yet written
    actors: dict[str, None] = field(default_factory=dict)
    elements: dict[str, None] = field(default_factory=dict)
    reasons: dict[str, None] = field(default_factory=dict)

    def note(self, actor: str, element: str | None, reason: str | None) -> None:
        self.count += 1
        for names, value in ((self.actors, actor), (self.elements, element), (self.reasons, reason)):
            if value is not None and len(names) < MAX_NAMED:
                names.setdefault(value[:200], None)


class AuditTrail:
    """Append to and read the audit trail of a database opened with :meth:`Historian.open`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._buckets: dict[tuple[str, str | None, int], _Bucket] = {}
        self._bucket_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def append(
        self,
        action: str,
        *,
        actor: str,
        result: str = "ok",
        element: str | None = None,
        source_ip: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> AuditRecord:
        """Append one record, chained to the newest one, and return it.

        ``details`` must be plain JSON; bad input raises :class:`InputError` and appends nothing.
        """
        for name, text in (("action", action), ("actor", actor), ("result", result)):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"audit {name} must be a non-empty string, got {text!r}")
        try:
            extra = json.loads(json.dumps(dict(details or {}), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InputError(f"audit {action!r}: details are not plain JSON: {exc}") from None
        when = datetime.now(UTC) if ts is None else ts
        if when.tzinfo is None:
            raise InputError(f"audit {action!r}: naive datetime {when.isoformat()}")
        ts_us = to_epoch_us(when)
        sealer = sealer_of(self.engine)
        # one writer at a time: the sequence number and the link come from the newest record; a
        # writer in another process that took the same number makes the insert fail, and it retries
        for attempt in range(5):
            try:
                with _LOCK, self.engine.begin() as conn:
                    head = conn.execute(
                        sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
                    ).first()
                    seq = 1 if head is None else int(head.seq) + 1
                    prev = GENESIS_HASH if head is None else str(head.hash)
                    body = {
                        "seq": seq,
                        "ts_us": ts_us,
                        "actor": actor,
                        "source_ip": source_ip,
                        "action": action,
                        "element": element,
                        "result": result,
                        "reason": reason,
                        "details": extra,
                    }
                    digest = sealer.chain_hash(CHAIN, prev, body)
                    conn.execute(sa.insert(audit).values(**body, prev_hash=prev, hash=digest))
                break
            except sa.exc.IntegrityError:
                if attempt == 4:
                    raise
        sealer.anchor.advance(CHAIN, seq, digest)
        log.info(
            "event=audit_appended seq=%d action=%s actor=%s element=%s result=%s", seq, action, actor, element, result
        )
        forwarder = _FORWARDERS.get(self.engine)
        if forwarder is not None:
            forwarder.notify()
        return AuditRecord(
            seq, from_epoch_us(ts_us), actor, source_ip, action, element, result, reason, extra, prev, digest
        )

    # -- refusals, aggregated ---------------------------------------------------------------------
    def refused(
        self,
        action: str,
        *,
        actor: str,
        source_ip: str | None,
        element: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> AuditRecord | None:
        """Audit a refused action, aggregated per (action, source address, minute).

        The first refusal of a bucket is appended at once (and returned); later ones in the same
        minute are counted and appended as one summary record (``details.count``, the actors,
        elements and reasons seen) when the minute is over, at the next refusal after it, or at
        :meth:`flush`. A flood of any size adds at most two records per source and minute.
        """
        when = now or datetime.now(UTC)
        minute = int(when.timestamp() // 60)
        self.flush(before_minute=minute)
        with self._bucket_lock:
            key = (action, source_ip, minute)
            bucket = self._buckets.get(key)
            if bucket is None and len(self._buckets) >= MAX_BUCKETS:
                key = (action, "*", minute)  # a flood from very many sources: one bucket for the rest
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(action, key[1], minute)
            first = not bucket.first_written
            bucket.first_written = True
            if not first:
                bucket.note(actor, element, reason)
                self._arm_timer(minute)
        if not first:
            return None
        return self.append(
            action,
            actor=actor,
            result="refused",
            element=element,
            source_ip=source_ip,
            reason=reason,
            details=details,
            ts=when,
        )

    def flush(self, *, before_minute: int | None = None) -> int:
        """Write the summaries of buckets older than ``before_minute`` (all with None); return how many."""
        with self._bucket_lock:
            due = [(k, b) for k, b in self._buckets.items() if before_minute is None or b.minute < before_minute]
            for k, _ in due:
                del self._buckets[k]
        written = 0
        for _, bucket in due:
            if not bucket.count:
                continue
            start = datetime.fromtimestamp(bucket.minute * 60, UTC)
            self.append(
                bucket.action,
                actor=next(iter(bucket.actors), "?") if len(bucket.actors) == 1 else "(several)",
                result="refused",
                source_ip=bucket.source_ip,
                reason=f"{bucket.count} more refusal(s) in the minute from {start:%H:%M} UTC",
                details={
                    "aggregated": True,
                    "count": bucket.count,
                    "minute": start.isoformat(),
                    "actors": list(bucket.actors),
                    "elements": list(bucket.elements),
                    "reasons": list(bucket.reasons),
                },
            )
            written += 1
        return written

    def _arm_timer(self, minute: int) -> None:
        """Flush once the minute is over, even when nothing else happens (the caller holds the bucket lock)."""
        if self._timer is not None and self._timer.is_alive():
            return
        delay = max(0.0, (minute + 1) * 60 - datetime.now(UTC).timestamp()) + 0.5
        timer = threading.Timer(delay, self._flush_closed)
        timer.daemon = True
        timer.name = "audit-aggregate-flush"
        self._timer = timer
        timer.start()

    def _flush_closed(self) -> None:
        try:
            self.flush(before_minute=int(datetime.now(UTC).timestamp() // 60))
        except Exception:
            log.exception("event=audit_flush_failed")

    def close(self) -> None:
        """Write every pending summary and stop the flush timer."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()

    # -- reading ------------------------------------------------------------------------------------
    def read(self, after: int = 0, *, limit: int | None = None) -> list[AuditRecord]:
        """Return the records with ``seq > after``, in sequence order."""
        query = sa.select(audit).where(audit.c.seq > after).order_by(audit.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def iter_all(self, chunk: int = 5000) -> Iterator[AuditRecord]:
        """Yield every record in sequence order, reading ``chunk`` at a time."""
        after = -(2**62)
        while True:
            batch = self.read(after, limit=chunk)
            yield from batch
            if len(batch) < chunk:
                return
            after = batch[-1].seq

    def last_seq(self) -> int:
        """Return the newest sequence number, 0 when the trail is empty."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit.c.seq), 0))).scalar_one())

    def check(self, records: list[AuditRecord]) -> list[bool | None]:
        """Whether each record matches its own hash (keyed, or plain for records from before the key).

        None for records sealed with a key that was lost (``opendso audit reseal``).
        """
        sealer = sealer_of(self.engine)
        head = sealer.anchor.read().get(CHAIN)
        keyed_from = head.keyed_from if head is not None else 1
        out: list[bool | None] = []
        for rec in records:
            body = audit_body(rec)
            if rec.seq >= keyed_from:
                out.append(sealer.chain_hash(CHAIN, rec.prev_hash, body) == rec.hash)
            elif head is not None and head.before == "lost-key":
                out.append(None)  # sealed with a lost key: cannot be checked
            else:
                out.append(plain_hash(rec.prev_hash, body) == rec.hash)
        return out


def _record(r: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(r.seq),
        ts=from_epoch_us(r.ts_us),
        actor=r.actor,
        source_ip=r.source_ip,
        action=r.action,
        element=r.element,
        result=r.result,
        reason=r.reason,
        details=dict(r.details or {}),
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def verify_chain(historian: Historian | sa.Engine) -> ChainReport:
    """Check every record's keyed hash, the links, the sequence and the anchored head; return what was found."""
    engine = historian if isinstance(historian, sa.Engine) else historian.engine
    result = verify_rows(CHAIN, sealer_of(engine), AuditTrail(engine).iter_all(), audit_body)
    if result.problems:
        log.warning(
            "event=audit_chain_broken records=%d problems=%d first=%s",
            result.records,
            len(result.problems),
            result.problems[0],
        )
    else:
        log.info("event=audit_chain_verified records=%d last_seq=%d", result.records, result.last_seq)
    return result


def integrity_report(engine: sa.Engine, *, syslog_copy: Path | None = None) -> dict[str, Any]:
    """Check the audit trail, the event log, the sealed users and sessions (and a collector's copy).

    Returns one JSON-ready object: ``ok``, ``database``, ``audit`` and ``events`` (each ``ok``,
    ``records``, ``last_seq``, ``head_hash``, ``unkeyed``, ``problems``), ``rows`` (tampered
    users and sessions) and, with ``syslog_copy``, ``syslog`` (the comparison with the copy).
    """
    from opendso.store.events import verify_events
    from opendso.store.integrity import verify_sealed_rows

    sealer = sealer_of(engine)
    chains = {"audit": verify_chain(engine), "events": verify_events(engine)}
    rows = verify_sealed_rows(engine, sealer)
    out: dict[str, Any] = {
        "database": sealer.database,
        **{
            name: {
                "ok": r.ok,
                "records": r.records,
                "last_seq": r.last_seq,
                "head_hash": r.head_hash,
                "unkeyed": r.unkeyed,
                "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in r.problems],
            }
            for name, r in chains.items()
        },
        "rows": [{"table": p.table, "key": p.key, "message": p.message} for p in rows],
    }
    ok = all(r.ok for r in chains.values()) and not rows
    if syslog_copy is not None:
        found = compare_with_copy(AuditTrail(engine).iter_all(), syslog_copy)
        out["syslog"] = {
            "copy": str(syslog_copy),
            "ok": not found.problems,
            "records": found.records,
            "last_seq": found.last_seq,
            "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in found.problems],
        }
        ok = ok and not found.problems
    out["ok"] = ok
    return out


__all__ = [
    "GENESIS_HASH",
    "AuditProblem",
    "AuditRecord",
    "AuditTrail",
    "VerificationResult",
    "integrity_report",
    "record_hash",
    "verify_chain",
]
