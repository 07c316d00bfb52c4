"""Audit records off the host: RFC 5424 syslog messages over TLS (RFC 5425) to a collector.

Whoever can rewrite the database on the control-room host may also read the integrity key
beside it. A copy of every audit record on another machine, written as it happens, is what such
a person cannot reach; IEC 62351-14 (cyber security event logging) and NERC CIP-007 R4 expect
security events to be sent to a central log. :class:`SyslogForwarder` sends each audit record,
with its sequence number and chained hash, to a collector (rsyslog, syslog-ng, a SIEM) and
``opendso audit verify --syslog-copy FILE`` compares the trail with the collector's copy
(:func:`compare_with_copy`, in :mod:`opendso.service.syslog_copy`).

Messages (RFC 5424 section 6), one per record::

    <PRI>1 TIMESTAMP HOSTNAME opendso PROCID MSGID [opendso-audit@32473 seq=".." hash=".." prev=".."
     events_seq=".." events_hash=".."] BOM{record as JSON}

- PRI: facility 13 (log audit, RFC 5424 table 1) with severity 5 (notice) for accepted
  actions, 4 (warning) for refused ones and 2 (critical) for integrity violations.
- TIMESTAMP: the record's time in UTC with microseconds; MSGID: the action (``login.failed``).
- Structured data ``opendso-audit@32473`` (32473 is the private enterprise number RFC 5612
  reserves for documentation; OpenDSO has none of its own yet): the record's sequence number,
  hash and previous hash, and the event log's head at the time, so the collector holds the
  heads of both chains. PARAM-VALUEs escape ``"``, ``\\`` and ``]`` (section 6.3.3).
- MSG: a UTF-8 BOM and the record as canonical JSON.

Transport (RFC 5425): TLS 1.2 or newer to the collector (default port 6514), its certificate
checked against the configured CA, optionally a client certificate; each message framed as
``MSG-LEN SP SYSLOG-MSG`` (octet counting). The forwarder never blocks the service: it runs in
its own thread, reads the records after the last one it delivered from the database (so nothing
is lost while the collector is away or across restarts; the position is kept in a file beside
the integrity key) and reconnects with a growing back-off. ``syslog+tcp://`` (RFC 6587 octet
counting without TLS) is accepted for a collector on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from opendso.errors import InputError
from opendso.service.audit import AuditRecord, AuditTrail, set_forwarder
from opendso.service.server import is_loopback
from opendso.service.syslog_copy import SD_ID, CopiedRecord, CopyComparison, compare_with_copy, parse_copy
from opendso.settings import get_settings
from opendso.store.integrity import canonical, sealer_of, write_private
from opendso.timeutil import Backoff

log = logging.getLogger(__name__)

FACILITY_LOG_AUDIT = 13
DEFAULT_PORT = 6514
_BOM = "\ufeff"
_MSGID_RE = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True)
class SyslogSettings:
    """Where and how audit records are forwarded (``OPENDSO_SYSLOG_*`` in :meth:`from_env`)."""

    url: str  # syslog+tls://host[:6514] or, for a collector on loopback, syslog+tcp://127.0.0.1:port
    ca_file: Path | None = None  # the collector's CA (default: the system's trust store)
    cert_file: Path | None = None  # our client certificate, for collectors that require one
    key_file: Path | None = None
    hostname: str = field(default_factory=socket.gethostname)
    batch: int = 500
    timeout_s: float = 5.0
    max_backoff_s: float = 60.0

    @classmethod
    def from_env(cls) -> SyslogSettings | None:
        """Settings from ``OPENDSO_SYSLOG_URL`` (None when unset), ``_CA``, ``_CERT`` and ``_KEY``."""
        env = get_settings().syslog
        if not env.url:
            return None

        def path(value: Path | None) -> Path | None:
            return value.expanduser() if value is not None else None

        return cls(env.url, ca_file=path(env.ca), cert_file=path(env.cert), key_file=path(env.key))

    def address(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the collector; :class:`InputError` for a bad or unsafe URL."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("syslog+tls", "syslog+tcp") or not parts.hostname:
            raise InputError(f"syslog collector {self.url!r}: use syslog+tls://host[:port]")
        tls = parts.scheme == "syslog+tls"
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise InputError(f"syslog collector {self.url!r}: bad port") from None
        if not tls and not is_loopback(parts.hostname):
            raise InputError(f"syslog collector {self.url!r}: without TLS only a collector on loopback is allowed")
        return parts.hostname, port, tls


def _sd_escape(value: str) -> str:
    """PARAM-VALUE escaping of RFC 5424 section 6.3.3: ``"``, ``\\`` and ``]``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _severity(record: AuditRecord) -> int:
    if record.action.startswith("integrity."):
        return 2
    return 4 if record.result != "ok" else 5


def format_message(
    record: AuditRecord, *, hostname: str, procid: int, events_head: tuple[int, str] | None = None
) -> bytes:
    """One audit record as an RFC 5424 message (UTF-8 bytes, without transport framing)."""
    pri = FACILITY_LOG_AUDIT * 8 + _severity(record)
    ts = record.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = _MSGID_RE.sub("_", hostname)[:255] or "-"
    msgid = _MSGID_RE.sub("_", record.action)[:32] or "-"
    params = {"seq": str(record.seq), "hash": record.hash, "prev": record.prev_hash}
    if events_head is not None:
        params["events_seq"], params["events_hash"] = str(events_head[0]), events_head[1]
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    body = canonical(record.to_dict()).decode()
    return f"<{pri}>1 {ts} {host} opendso {procid} {msgid} {sd} {_BOM}{body}".encode()


class SyslogForwarder:
    """Forwards every audit record of a database to a syslog collector (see the module docstring)."""

    def __init__(self, engine: sa.Engine, settings: SyslogSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.host, self.port, self.tls = settings.address()
        self._context = self._tls_context() if self.tls else None
        sealer = sealer_of(engine)
        self._cursor_path = sealer.anchor.path.with_name(sealer.anchor.path.name.replace("heads", "syslog-cursor"))
        self._sent = self._read_cursor()
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        # the first retry after 1 s (or the maximum, when that is shorter), doubling up to the maximum
        self._backoff = Backoff(min(1.0, settings.max_backoff_s), settings.max_backoff_s)
        self.delivered = 0
        self.failures = 0

    def _tls_context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if s.cert_file is not None:
            context.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
        return context

    def _read_cursor(self) -> int:
        try:
            return int(json.loads(self._cursor_path.read_text())["sent"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("event=syslog_cursor_unreadable path=%s", self._cursor_path)
            return 0

    @property
    def sent(self) -> int:
        """The newest sequence number delivered to the collector."""
        return self._sent

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> SyslogForwarder:
        """Register for new records and start the sending thread (which first catches up)."""
        set_forwarder(self.engine, self)
        self._thread = threading.Thread(target=self._run, name="syslog-forwarder", daemon=True)
        self._thread.start()
        self._wake.set()
        return self

    def notify(self) -> None:
        """New records were appended: send them soon."""
        self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record appended so far is delivered; return whether that happened in time."""
        target = AuditTrail(self.engine).last_seq()
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        with self._idle:
            while self._sent < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.2))
                self._wake.set()
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is pending (for at most ``timeout_s``), then stop and disconnect."""
        if self._thread is not None and self._thread.is_alive():
            self.flush(timeout_s)
        set_forwarder(self.engine, None)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s + self.settings.timeout_s)
        self._close()

    # -- sending -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=30.0)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    more = self._send_batch()
                except (OSError, ssl.SSLError) as exc:
                    self.failures += 1
                    log.warning(
                        "event=syslog_forward_failed collector=%s:%d error=%r retry_s=%.0f",
                        self.host,
                        self.port,
                        exc,
                        self._backoff.current,
                    )
                    self._close()
                    if self._stop.wait(self._backoff.next()):
                        return
                    continue
                except Exception:
                    log.exception("event=syslog_forward_crashed")
                    if self._stop.wait(self._backoff.current):
                        return
                    continue
                self._backoff.reset()
                if not more:
                    break

    def _send_batch(self) -> bool:
        """Send the next records after the cursor; return whether more may be waiting."""
        trail = AuditTrail(self.engine)
        records = trail.read(self._sent, limit=self.settings.batch)
        if not records:
            with self._idle:
                self._idle.notify_all()
            return False
        from opendso.store.events import EventLog

        last_event = EventLog(self.engine).read_head()
        sock = self._connect()
        pid = os.getpid()
        payload = bytearray()
        for rec in records:
            msg = format_message(rec, hostname=self.settings.hostname, procid=pid, events_head=last_event)
            payload += f"{len(msg)} ".encode() + msg
        sock.sendall(bytes(payload))
        self._sent = records[-1].seq
        write_private(self._cursor_path, json.dumps({"sent": self._sent}).encode())
        self.delivered += len(records)
        with self._idle:
            self._idle.notify_all()
        return len(records) == self.settings.batch

    def _connect(self) -> socket.socket | ssl.SSLSocket:
        if self._sock is not None:
            return self._sock
        raw = socket.create_connection((self.host, self.port), timeout=self.settings.timeout_s)
        try:
            sock: socket.socket | ssl.SSLSocket = (
                self._context.wrap_socket(raw, server_hostname=self.host) if self._context is not None else raw
            )
        except BaseException:
            raw.close()
            raise
        log.info("event=syslog_connected collector=%s:%d tls=%s", self.host, self.port, self.tls)
        self._sock = sock
        return sock

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def start_forwarding(engine: sa.Engine, settings: SyslogSettings | None = None) -> SyslogForwarder | None:
    """Start forwarding ``engine``'s audit trail when a collector is configured (argument or environment)."""
    settings = settings or SyslogSettings.from_env()
    if settings is None:
        return None
    return SyslogForwarder(engine, settings).start()


__all__ = [
    "SD_ID",
    "CopiedRecord",
    "CopyComparison",
    "SyslogForwarder",
    "SyslogSettings",
    "compare_with_copy",
    "format_message",
    "parse_copy",
    "start_forwarding",
]
