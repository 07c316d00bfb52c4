"""The audit trail: an append-only, hash-chained record of who did what, from where, and why.

Every record holds a sequence number that grows by exactly one, the time, the actor, the source
IP address, the action, the element acted on, the result and the reason (with free details), and
``hash = sha256(prev_hash + canonical JSON of the record)``, where ``prev_hash`` is the hash of
the record before (64 zeros for the first). The database refuses UPDATE and DELETE on the table
(triggers of migration ``0002``), and :func:`verify_chain` finds what slips past them: an
edited record (its hash no longer matches), a deleted record (a gap in the sequence) and a
broken link (a ``prev_hash`` that is not the previous record's hash). Removing the newest
records leaves a shorter but valid chain; :class:`VerificationResult` reports the head
(``last_seq``, ``head_hash``) so it can be anchored elsewhere (a printout, another system).

Recorded actions (``action`` column): ``login``, ``login.failed``, ``logout``, ``token.issued``,
``alarm.acknowledge``, ``alarm.shelve``, ``shift.note``, ``command.*`` and every user or
configuration change (``user.add``, ``user.password``, ``user.roles``, ``user.disable``, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from opendso.errors import InputError
from opendso.store.historian import Historian
from opendso.store.security_schema import audit

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_LOCK = threading.Lock()


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


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One finding of :func:`verify_chain`: ``kind`` is ``edited``, ``gap`` or ``broken_link``."""

    seq: int
    kind: str
    message: str


@dataclass(frozen=True)
class VerificationResult:
    """What :func:`verify_chain` found: ``ok`` when there is no problem."""

    records: int
    last_seq: int
    head_hash: str
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return not self.problems


def record_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """Return ``sha256(prev_hash + canonical JSON of body)`` as hex."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _body(
    seq: int,
    ts_us: int,
    actor: str,
    source_ip: str | None,
    action: str,
    element: str | None,
    result: str,
    reason: str | None,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts_us": ts_us,
        "actor": actor,
        "source_ip": source_ip,
        "action": action,
        "element": element,
        "result": result,
        "reason": reason,
        "details": dict(details),
    }


class AuditTrail:
    """Append to and read the audit trail of a database (the schema must exist: see :class:`Historian`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

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
        ts_us = (when - _EPOCH) // _ONE_US
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
                    body = _body(seq, ts_us, actor, source_ip, action, element, result, reason, extra)
                    digest = record_hash(prev, body)
                    conn.execute(
                        sa.insert(audit).values(
                            seq=seq,
                            ts_us=ts_us,
                            actor=actor,
                            source_ip=source_ip,
                            action=action,
                            element=element,
                            result=result,
                            reason=reason,
                            details=extra,
                            prev_hash=prev,
                            hash=digest,
                        )
                    )
                break
            except sa.exc.IntegrityError:
                if attempt == 4:
                    raise
        log.info(
            "event=audit_appended seq=%d action=%s actor=%s element=%s result=%s", seq, action, actor, element, result
        )
        return AuditRecord(
            seq, _EPOCH + ts_us * _ONE_US, actor, source_ip, action, element, result, reason, extra, prev, digest
        )

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


def _record(r: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(r.seq),
        ts=_EPOCH + int(r.ts_us) * _ONE_US,
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


def verify_chain(historian: Historian | sa.Engine) -> VerificationResult:
    """Check every record's hash, the links between records and the sequence; return what was found."""
    engine = historian if isinstance(historian, sa.Engine) else historian.engine
    problems: list[AuditProblem] = []
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    last_seq = 0
    for rec in AuditTrail(engine).iter_all():
        count += 1
        if rec.seq != expected_seq:
            problems.append(
                AuditProblem(
                    rec.seq,
                    "gap",
                    f"record {rec.seq} follows {expected_seq - 1}: "
                    f"{rec.seq - expected_seq} record(s) missing (deleted?)"
                    if rec.seq > expected_seq
                    else f"record {rec.seq} is out of order after {expected_seq - 1}",
                )
            )
        if rec.prev_hash != prev_hash:
            problems.append(
                AuditProblem(rec.seq, "broken_link", f"record {rec.seq} does not link to the hash of the record before")
            )
        body = _body(
            rec.seq,
            (rec.ts - _EPOCH) // _ONE_US,
            rec.actor,
            rec.source_ip,
            rec.action,
            rec.element,
            rec.result,
            rec.reason,
            rec.details,
        )
        if record_hash(rec.prev_hash, body) != rec.hash:
            problems.append(AuditProblem(rec.seq, "edited", f"record {rec.seq} does not match its hash (edited?)"))
        prev_hash = rec.hash
        expected_seq = rec.seq + 1
        last_seq = rec.seq
    result = VerificationResult(count, last_seq, prev_hash, problems)
    if problems:
        log.warning("event=audit_chain_broken records=%d problems=%d first=%s", count, len(problems), problems[0])
    else:
        log.info("event=audit_chain_verified records=%d last_seq=%d", count, last_seq)
    return result


def add_audit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``audit verify`` to an argparse subparsers object (run it with :func:`audit_verify_command`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser("audit", help="check the audit trail")
    sub = parser.add_subparsers(dest="audit_action", required=True)
    verify = sub.add_parser("verify", help="check the hash chain: edited, deleted or relinked records")
    verify.add_argument("--database-url", default=None, help="database (default: the embedded SQLite file)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def audit_verify_command(args: argparse.Namespace) -> int:
    """Run ``opendso audit verify``: check the chain of ``args.database_url`` and print the outcome.

    Returns the exit status: 0 when the chain is intact, 1 when a problem was found.
    """
    historian = Historian.open(getattr(args, "database_url", None))
    try:
        result = verify_chain(historian)
    finally:
        historian.close()
    out = {
        "ok": result.ok,
        "records": result.records,
        "last_seq": result.last_seq,
        "head_hash": result.head_hash,
        "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in result.problems],
    }
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        state = "intact" if result.ok else f"BROKEN ({len(result.problems)} problem(s))"
        sys.stdout.write(
            f"audit trail {state}: {result.records} record(s), last seq {result.last_seq}, head {result.head_hash}\n"
        )
        for p in result.problems:
            sys.stdout.write(f"  seq {p.seq}: {p.kind}: {p.message}\n")
    return 0 if result.ok else 1


__all__ = [
    "GENESIS_HASH",
    "AuditProblem",
    "AuditRecord",
    "AuditTrail",
    "VerificationResult",
    "add_audit_parser",
    "audit_verify_command",
    "record_hash",
    "verify_chain",
]
