"""Tamper evidence: a secret key outside the database seals the audit trail, the event log and the users.

Whoever can write to the database can change any row and recompute a plain hash chain with the
public hash function; that is what an unkeyed chain cannot catch. So OpenDSO keys its seals:

- **The key** is 32 random bytes in a file outside the database (:class:`IntegrityKey`, mode
  600 in a folder of mode 700): by default ``integrity.key`` beside an embedded SQLite database,
  else in the data folder (``OPENDSO_INTEGRITY_KEY`` names another file). It is made once. When
  it is missing but the database already holds sealed data, nothing is opened
  (:class:`IntegrityKeyMissingError`): a new key would silently bless whatever was changed
  meanwhile. ``opendso audit reseal`` is the deliberate, audited way to start a new key.
- **Chains** (audit trail, event log): every record's ``hash`` is
  ``HMAC-SHA256(key, domain | prev_hash | canonical JSON of the record)``, linked to the record
  before. Records written before the key existed (databases of an older OpenDSO) stay as they
  were; the anchor names the first keyed sequence number and :func:`verify_chain` reports the
  older ones as unkeyed, never as sealed.
- **Rows** (users, sessions): a ``mac`` column is the HMAC of the row's other columns. A row
  changed behind OpenDSO's back (``UPDATE users SET roles=...``) no longer matches; the
  service refuses it and reports an integrity violation.
- **The anchor** (:class:`HeadAnchor`): after each append the newest sequence number and hash
  of each chain are written to a file beside the key (one per database). Deleting the newest
  records leaves a valid but shorter chain; the anchor shows the chain once reached further.
  An anchor behind the database is fine (it is written after the commit); one ahead of it, or
  one whose hash differs from the record at its sequence number, is a finding.

A local attacker who can read the key file can still forge all of this; that is why audit
records are also forwarded off the host (:mod:`opendso.service.syslog`), and ``opendso audit
verify --syslog-copy`` compares the chain with the collector's copy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from opendso.errors import InputError, IntegrityError, IntegrityKeyMissingError
from opendso.settings import get_settings
from opendso.store.engine import data_dir

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
KEY_FILE = "integrity.key"
_KEY_BYTES = 32


def private_folder(folder: Path) -> Path:
    """Create ``folder`` (and parents) if needed and make it accessible to its owner only (700)."""
    folder.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        try:
            folder.chmod(0o700)
        except PermissionError:  # a shared folder someone else owns: leave it, the files are still 600
            log.warning("event=folder_mode_not_changed folder=%s mode=%o", folder, mode)
    return folder


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it), mode 600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def canonical(body: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a record: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def plain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """The unkeyed ``sha256(prev_hash + canonical JSON)`` of records written before a key existed."""
    return hashlib.sha256(prev_hash.encode() + canonical(body)).hexdigest()


class IntegrityKey:
    """The secret key that seals chains and rows (see the module docstring)."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) < 16:
            raise InputError(f"integrity key {path}: too short ({len(key)} bytes)")
        self.path = path
        self._key = key

    @property
    def folder(self) -> Path:
        """The folder of the key file (the anchors live there too)."""
        return self.path.parent

    @classmethod
    def load(cls, path: Path) -> IntegrityKey:
        """Read a key file (hex); raise :class:`InputError` when it is unreadable or malformed."""
        try:
            text = path.read_text().strip()
            key = bytes.fromhex(text)
        except OSError as exc:
            raise InputError(f"integrity key {path}: cannot be read ({exc.strerror})") from None
        except ValueError:
            raise InputError(f"integrity key {path}: not a hexadecimal key") from None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("event=integrity_key_mode path=%s mode=%o expected=600", path, mode)
        return cls(path, key)

    @classmethod
    def create(cls, path: Path) -> IntegrityKey:
        """Make a new random key file (mode 600, folder 700); raise :class:`InputError` when one exists."""
        private_folder(path.parent)
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InputError(f"integrity key {path} exists already") from None
        try:
            os.write(fd, key.hex().encode() + b"\n")
        finally:
            os.close(fd)
        log.info("event=integrity_key_created path=%s", path)
        return cls(path, key)

    def mac(self, domain: str, data: bytes) -> str:
        """``HMAC-SHA256(key, domain NUL data)`` as hex; the domain separates chains and tables."""
        return hmac.new(self._key, domain.encode() + b"\x00" + data, hashlib.sha256).hexdigest()

    def chain_hash(self, domain: str, prev_hash: str, body: Mapping[str, Any]) -> str:
        """The keyed hash of one chain record linked to ``prev_hash``."""
        return self.mac(domain, prev_hash.encode() + b"|" + canonical(body))

    def row_mac(self, table: str, row: Mapping[str, Any]) -> str:
        """The seal of a table row (every column but ``mac``)."""
        return self.mac(f"row:{table}", canonical({k: v for k, v in row.items() if k != "mac"}))

    def check_row(self, table: str, row: Mapping[str, Any]) -> bool:
        """Whether a row's ``mac`` matches its other columns."""
        stored = row.get("mac")
        return isinstance(stored, str) and hmac.compare_digest(stored, self.row_mac(table, row))


@dataclass(frozen=True)
class ChainHead:
    """Where a chain stood: the first keyed sequence number, the newest one and its hash.

    ``before``: what the records before ``keyed_from`` are: ``plain`` (an older OpenDSO's
    SHA-256 chain, still checked) or ``lost-key`` (sealed with a key that was lost and replaced
    by ``opendso audit reseal``: only their links can be checked).
    """

    keyed_from: int
    seq: int
    hash: str
    before: str = "plain"


class HeadAnchor:
    """The heads of a database's chains, kept in a file beside the key (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, ChainHead]:
        """The anchored heads by chain name (empty when there is no anchor file yet)."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"chain anchor {self.path} is unreadable: {exc}") from None
        out: dict[str, ChainHead] = {}
        for name, head in dict(raw.get("chains", {})).items():
            out[str(name)] = ChainHead(
                int(head["keyed_from"]), int(head["seq"]), str(head["hash"]), str(head.get("before", "plain"))
            )
        return out

    def exists(self) -> bool:
        """Whether the anchor file exists."""
        return self.path.exists()

    def advance(self, chain: str, seq: int, digest: str, *, keyed_from: int | None = None) -> None:
        """Record that ``chain`` reached ``seq`` with ``digest`` (never moves a head backwards)."""
        with self._lock:
            heads = self.read()
            old = heads.get(chain)
            if old is not None and old.seq >= seq:
                return
            # no head yet (the anchor file was deleted): claim the whole chain, so nothing escapes the check
            first = old.keyed_from if old is not None else (keyed_from if keyed_from is not None else 1)
            heads[chain] = ChainHead(first, seq, digest, old.before if old is not None else "plain")
            self._write(heads)

    def set(self, chain: str, head: ChainHead) -> None:
        """Replace a chain's head (used when a key is made: the chain is anchored where it stands)."""
        with self._lock:
            heads = self.read()
            heads[chain] = head
            self._write(heads)

    def _write(self, heads: Mapping[str, ChainHead]) -> None:
        body = {
            "chains": {
                n: {"keyed_from": h.keyed_from, "seq": h.seq, "hash": h.hash, "before": h.before}
                for n, h in sorted(heads.items())
            }
        }
        write_private(self.path, json.dumps(body, indent=1).encode())


@dataclass(frozen=True)
class Sealer:
    """The key and the anchor of one database: what every sealed write and every check needs."""

    key: IntegrityKey
    anchor: HeadAnchor
    database: str

    def chain_hash(self, chain: str, prev_hash: str, body: Mapping[str, Any]) -> str:
        """The keyed hash of one record of ``chain``."""
        return self.key.chain_hash(f"chain:{chain}", prev_hash, body)

    def keyed_from(self, chain: str) -> int:
        """The first sequence number of ``chain`` that is keyed (1 for a chain begun with a key)."""
        head = self.anchor.read().get(chain)
        return head.keyed_from if head is not None else 1


# -- checking a chain ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One finding of :func:`verify_rows`.

    ``kind``: ``edited`` (a record does not match its hash), ``gap`` (missing or out-of-order
    sequence numbers), ``broken_link`` (a record does not link to the one before),
    ``truncated`` (the anchor shows the chain once reached further), ``anchor_mismatch`` (the
    record at the anchored sequence number has another hash: rewritten) or ``anchor_missing``.
    """

    seq: int
    kind: str
    message: str


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_rows` found in one chain."""

    chain: str
    records: int
    last_seq: int
    head_hash: str
    unkeyed: int  # records from before the key existed (checked with the plain hash where they have one)
    keyed_from: int
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        """Whether nothing was found."""
        return not self.problems


def verify_rows(
    chain: str, sealer: Sealer, rows: Iterable[Any], body: Callable[[Any], Mapping[str, Any]]
) -> ChainReport:
    """Check a chain's records (in sequence order, each with ``seq``, ``prev_hash``, ``hash``) and its anchor."""
    heads = sealer.anchor.read()
    head = heads.get(chain)
    problems: list[ChainProblem] = []
    keyed_from = head.keyed_from if head is not None else 1
    before = head.before if head is not None else "plain"
    expected, prev, count, unkeyed, last_seq = 1, GENESIS_HASH, 0, 0, 0
    anchored_hash: str | None = None
    for row in rows:
        seq = int(row.seq)
        count += 1
        if seq != expected:
            missing = seq - expected
            problems.append(
                ChainProblem(
                    seq,
                    "gap",
                    f"record {seq} follows {expected - 1}: {missing} record(s) missing (deleted?)"
                    if missing > 0
                    else f"record {seq} is out of order after {expected - 1}",
                )
            )
        stored = row.hash
        if seq < keyed_from:
            unkeyed += 1
            if stored is not None:  # a record of an older OpenDSO (a plain hash chain), or of a lost key
                if row.prev_hash != prev:
                    problems.append(ChainProblem(seq, "broken_link", f"record {seq} does not link to the one before"))
                if before == "plain" and plain_hash(row.prev_hash, body(row)) != stored:
                    problems.append(ChainProblem(seq, "edited", f"record {seq} does not match its hash (edited?)"))
            prev = stored if stored is not None else GENESIS_HASH
        else:
            if row.prev_hash != prev:
                problems.append(ChainProblem(seq, "broken_link", f"record {seq} does not link to the one before"))
            if stored is None or not hmac.compare_digest(
                str(stored), sealer.chain_hash(chain, row.prev_hash, body(row))
            ):
                problems.append(ChainProblem(seq, "edited", f"record {seq} does not match its keyed hash (edited?)"))
            prev = str(stored)
        if head is not None and seq == head.seq:
            anchored_hash = prev
        expected, last_seq = seq + 1, seq
    if head is None:
        if count and not sealer.anchor.exists():
            problems.append(
                ChainProblem(last_seq, "anchor_missing", f"the anchor file {sealer.anchor.path} is missing")
            )
    elif head.seq > last_seq:
        problems.append(
            ChainProblem(
                last_seq,
                "truncated",
                f"the chain ends at record {last_seq}, but it reached record {head.seq} (newest records deleted?)",
            )
        )
    elif head.seq > 0 and anchored_hash is not None and anchored_hash != head.hash:
        problems.append(
            ChainProblem(head.seq, "anchor_mismatch", f"record {head.seq} is not the one anchored (chain rewritten?)")
        )
    return ChainReport(chain, count, last_seq, prev, unkeyed, keyed_from, problems)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A sealed row that does not match its seal (``table``, the row's key, what is wrong)."""

    table: str
    key: str
    message: str


def verify_sealed_rows(engine: sa.Engine, sealer: Sealer) -> list[RowProblem]:
    """Check the seal of every ``users`` and ``sessions`` row."""
    from opendso.store.security_schema import sessions, users

    problems: list[RowProblem] = []
    with engine.connect() as conn:
        for row in conn.execute(sa.select(users)).all():
            if not sealer.key.check_row("users", {**user_row(row), "mac": row.mac}):
                problems.append(RowProblem("users", row.username, f"user {row.username!r} was changed outside OpenDSO"))
        for row in conn.execute(sa.select(sessions)).all():
            if not sealer.key.check_row("sessions", {**session_row(row), "mac": row.mac}):
                problems.append(
                    RowProblem("sessions", row.token_hash[:12], f"a session of user id {row.user_id} was forged")
                )
    return problems


# -- where the key lives, and one sealer per engine ------------------------------------------------
_SEALERS: weakref.WeakKeyDictionary[sa.Engine, Sealer] = weakref.WeakKeyDictionary()
_SEALERS_LOCK = threading.Lock()


def default_key_path(url: str) -> Path:
    """``OPENDSO_INTEGRITY_KEY``, else ``integrity.key`` beside a SQLite file, else in the data folder."""
    configured = get_settings().database.integrity_key
    if configured is not None:
        return configured.expanduser()
    parsed = make_url(url)
    database = parsed.database
    embedded = database and database != ":memory:" and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and embedded:
        return Path(str(database)).expanduser().resolve().parent / KEY_FILE
    return data_dir() / KEY_FILE


def anchor_path(key_path: Path, url: str) -> Path:
    """The anchor file of one database, beside the key: ``integrity-heads-<digest of the URL>.json``."""
    safe = make_url(url).render_as_string(hide_password=True)
    digest = hashlib.sha256(safe.encode()).hexdigest()[:16]
    return key_path.parent / f"integrity-heads-{digest}.json"


def _has_sealed_data(conn: sa.Connection) -> bool:
    """Whether the database holds anything a key sealed (so a missing key is not a first start)."""
    from opendso.store.schema import events
    from opendso.store.security_schema import audit, sessions, users

    for table in (users, sessions):
        if conn.execute(sa.select(table.c.mac).where(table.c.mac.is_not(None)).limit(1)).first() is not None:
            return True
    if conn.execute(sa.select(events.c.seq).where(events.c.hash.is_not(None)).limit(1)).first() is not None:
        return True
    last = conn.execute(sa.select(audit).order_by(audit.c.seq.desc()).limit(1)).first()
    return last is not None and plain_hash(last.prev_hash, audit_body(last)) != last.hash


def audit_body(row: Any) -> dict[str, Any]:
    """The hashed body of an audit record (a row or a record with the same attributes)."""
    return {
        "seq": int(row.seq),
        "ts_us": int(row.ts_us),
        "actor": row.actor,
        "source_ip": row.source_ip,
        "action": row.action,
        "element": row.element,
        "result": row.result,
        "reason": row.reason,
        "details": dict(row.details or {}),
    }


def event_body(row: Any) -> dict[str, Any]:
    """The hashed body of an event (a row or an :class:`~opendso.store.events.Event`)."""
    return {
        "seq": int(row.seq),
        "ts_us": int(row.ts_us),
        "actor": row.actor,
        "kind": row.kind,
        "element": row.element,
        "payload": dict(row.payload or {}),
    }


def user_row(row: Any) -> dict[str, Any]:
    """The sealed columns of a ``users`` row."""
    return {
        "id": int(row.id),
        "username": row.username,
        "password_hash": row.password_hash,
        "roles": list(row.roles),
        "disabled": bool(row.disabled),
        "created_us": int(row.created_us),
        "updated_us": int(row.updated_us),
        "must_change_password": bool(row.must_change_password),
    }


def session_row(row: Any) -> dict[str, Any]:
    """The sealed columns of a ``sessions`` row."""
    return {
        "token_hash": row.token_hash,
        "user_id": int(row.user_id),
        "kind": row.kind,
        "csrf_token": row.csrf_token,
        "source_ip": row.source_ip,
        "created_us": int(row.created_us),
        "expires_us": int(row.expires_us),
    }


def open_sealer(engine: sa.Engine, url: str, key_path: Path | None = None, *, create: bool = True) -> Sealer:
    """Load (or, on a database with nothing sealed yet, make) the key of ``engine``'s database.

    A database with nothing sealed yet (a new one, or one of an older OpenDSO) is sealed as it
    stands when it is first opened with a key: its users and sessions get their ``mac`` and
    each chain is anchored at its present head, so later records are keyed and earlier ones are
    reported as unkeyed. One key may serve several databases (each has its own anchor file).
    Raises :class:`IntegrityKeyMissingError` when the key file is missing but sealed data
    exist, or when ``create`` is false and there is no key.
    """
    path = key_path or default_key_path(url)
    anchor = HeadAnchor(anchor_path(path, url))
    database = make_url(url).render_as_string(hide_password=True)
    with engine.connect() as conn:
        sealed = _has_sealed_data(conn)
    if path.exists():
        key = IntegrityKey.load(path)
        if not sealed and not anchor.exists():
            return _seal(engine, key, anchor, database)[0]
        # sealed data without an anchor file (deleted), or an anchor with history over an empty
        # database (the database deleted or replaced): verify_rows reports both
        if not sealed and any(h.seq for h in anchor.read().values()):
            log.error("event=integrity_anchor_ahead database=%s anchor=%s", database, anchor.path)
        return Sealer(key, anchor, database)
    if sealed:
        raise IntegrityKeyMissingError(
            f"integrity key {path} is missing, but database {database} holds data sealed with a key: give the "
            "data folder it was made in (--data-dir), restore the key file (or set OPENDSO_INTEGRITY_KEY), or "
            "accept the database as it is with 'opendso audit reseal --yes'"
        )
    if not create:
        raise IntegrityKeyMissingError(f"no integrity key at {path} for database {database}")
    return _seal(engine, IntegrityKey.create(path), anchor, database)[0]


def reseal(engine: sa.Engine, url: str, key_path: Path) -> dict[str, int]:
    """Make a new key for a database whose key is lost, sealing its present state; return what was sealed."""
    from opendso.store.migrate import upgrade as upgrade_schema

    upgrade_schema(engine)
    database = make_url(url).render_as_string(hide_password=True)
    key = IntegrityKey.create(key_path)
    return _seal(engine, key, HeadAnchor(anchor_path(key_path, url)), database, before="lost-key")[1]


def _seal(
    engine: sa.Engine, key: IntegrityKey, anchor: HeadAnchor, database: str, *, before: str = "plain"
) -> tuple[Sealer, dict[str, int]]:
    """Seal the users and sessions as they are and anchor both chains at their heads."""
    from opendso.store.schema import events
    from opendso.store.security_schema import audit, sessions, users

    sealer = Sealer(key, anchor, database)
    with engine.begin() as conn:
        user_rows = conn.execute(sa.select(users)).all()
        for row in user_rows:
            mac = key.row_mac("users", user_row(row))
            conn.execute(sa.update(users).where(users.c.id == row.id).values(mac=mac))
        session_rows = conn.execute(sa.select(sessions)).all()
        for row in session_rows:
            mac = key.row_mac("sessions", session_row(row))
            conn.execute(sa.update(sessions).where(sessions.c.token_hash == row.token_hash).values(mac=mac))
        last_audit = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        last_event = conn.execute(sa.select(events.c.seq, events.c.hash).order_by(events.c.seq.desc()).limit(1)).first()
    a_seq, a_hash = (int(last_audit.seq), str(last_audit.hash)) if last_audit is not None else (0, GENESIS_HASH)
    e_seq = int(last_event.seq) if last_event is not None else 0
    e_hash = str(last_event.hash) if last_event is not None and last_event.hash is not None else GENESIS_HASH
    anchor.set("audit", ChainHead(a_seq + 1, a_seq, a_hash, before))
    anchor.set("events", ChainHead(e_seq + 1, e_seq, e_hash, before))
    counts = {"users": len(user_rows), "sessions": len(session_rows), "audit_records": a_seq, "events": e_seq}
    if a_seq or e_seq:
        log.warning(
            "event=integrity_sealed_existing database=%s %s", database, " ".join(f"{k}={v}" for k, v in counts.items())
        )
    return sealer, counts


def register(engine: sa.Engine, sealer: Sealer) -> None:
    """Make ``sealer`` the one every writer and checker of ``engine``'s database uses."""
    with _SEALERS_LOCK:
        _SEALERS[engine] = sealer


def sealer_of(engine: sa.Engine) -> Sealer:
    """The sealer registered for ``engine`` (by :meth:`Historian.open`); raise when there is none."""
    with _SEALERS_LOCK:
        sealer = _SEALERS.get(engine)
    if sealer is None:
        raise IntegrityError("this database was not opened with its integrity key: open it with Historian.open")
    return sealer


__all__ = [
    "GENESIS_HASH",
    "ChainHead",
    "ChainProblem",
    "ChainReport",
    "HeadAnchor",
    "IntegrityError",
    "IntegrityKey",
    "IntegrityKeyMissingError",
    "RowProblem",
    "Sealer",
    "anchor_path",
    "audit_body",
    "canonical",
    "default_key_path",
    "event_body",
    "open_sealer",
    "plain_hash",
    "private_folder",
    "register",
    "reseal",
    "sealer_of",
    "session_row",
    "user_row",
    "verify_rows",
    "verify_sealed_rows",
    "write_private",
]
