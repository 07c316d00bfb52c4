"""Audit records forwarded off the host as RFC 5424 syslog over TLS (RFC 5425) to a real rsyslog collector.

rsyslog (Debian's rsyslog and rsyslog-gnutls packages) runs as the collector on an ephemeral
loopback port with a certificate from a test CA (trustme); it writes each message raw and, in a
second file, the fields its RFC 5424 parser found. Without rsyslogd the tests are skipped,
except under ``CI=true`` where they fail (see ``conftest.require_service``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import require_service

from opendso.cli.audit import audit_verify_command
from opendso.service.audit import AuditTrail
from opendso.service.security import Security, SecuritySettings
from opendso.service.syslog import SyslogForwarder, SyslogSettings, compare_with_copy, parse_copy
from opendso.store import Historian
from opendso.store.integrity import audit_body, sealer_of
from opendso.store.security_schema import audit

FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@dataclass
class Collector:
    port: int
    ca: Path
    raw: Path
    parsed: Path
    process: subprocess.Popen[bytes]

    def lines(self, path: Path, count: int, timeout_s: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"the collector wrote {len(lines)} of {count} lines to {path.name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    rsyslogd = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if rsyslogd is None:
        require_service("rsyslogd not found: apt-get install rsyslog rsyslog-gnutls")
    import trustme

    folder = tmp_path / "collector"
    folder.mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    port = _free_port()
    raw, parsed = folder / "audit.log", folder / "parsed.log"
    (folder / "rsyslog.conf").write_text(
        f"""global(workDirectory="{folder}"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{folder / "ca.pem"}"
  DefaultNetstreamDriverCertFile="{folder / "cert.pem"}"
  DefaultNetstreamDriverKeyFile="{folder / "key.pem"}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\\n")
template(name="fields" type="string"
  string="%syslogfacility%|%syslogseverity%|%protocol-version%|%app-name%|%msgid%|%structured-data%\\n")
*.* action(type="omfile" file="{raw}" template="raw")
*.* action(type="omfile" file="{parsed}" template="fields")
"""
    )
    process = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(folder / "rsyslog.conf"), "-i", str(folder / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("rsyslogd did not start") from None
                time.sleep(0.05)
        yield Collector(port, folder / "ca.pem", raw, parsed, process)
    finally:
        process.terminate()
        process.wait(10)


def settings_for(collector: Collector) -> SyslogSettings:
    return SyslogSettings(f"syslog+tls://127.0.0.1:{collector.port}", ca_file=collector.ca, hostname="control-room-1")


def test_every_audit_record_reaches_the_collector_as_rfc5424_over_tls(collector: Collector, tmp_path: Path) -> None:
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as historian:
        historian.events.append("shift.note", actor="olga", payload={"text": "feeder 3 on backup"})
        forwarder = SyslogForwarder(historian.engine, settings_for(collector)).start()
        try:
            security = Security(historian.engine, settings=FAST)
            security.add_user("olga", "correct horse battery", ["operator"])
            security.audit.append(
                "shift.note", actor="olga", reason='a "quoted" ] reason \\ with escapes', element="event:1"
            )
            security.audit.refused("access.refused", actor="victor", source_ip="192.0.2.5", reason="403")
            assert forwarder.flush(20)
        finally:
            forwarder.stop()
        records = AuditTrail(historian.engine).read()
    raw = collector.lines(collector.raw, len(records))
    copied = list(parse_copy(raw))
    assert [(c.seq, c.hash, c.prev) for c in copied] == [(r.seq, r.hash, r.prev_hash) for r in records]
    fields = [line.split("|", 5) for line in collector.lines(collector.parsed, len(records))]
    # rsyslog's own RFC 5424 parser: facility 13 (log audit), version 1, app-name and msgid, structured data
    assert [f[0] for f in fields] == ["13"] * len(records)
    assert [f[1] for f in fields] == ["5", "5", "4"]  # notice, notice, warning for the refusal
    assert {f[2] for f in fields} == {"1"}
    assert {f[3] for f in fields} == {"opendso"}
    assert [f[4] for f in fields] == [r.action for r in records]
    assert all(f[5].startswith('[opendso-audit@32473 seq="') for f in fields)
    assert 'events_seq="1"' in fields[0][5]
    assert "control-room-1" in raw[0]


def test_records_appended_while_the_collector_is_away_arrive_later(collector: Collector, tmp_path: Path) -> None:
    away = SyslogSettings(f"syslog+tls://127.0.0.1:{_free_port()}", ca_file=collector.ca, max_backoff_s=0.2)
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as historian:
        trail = AuditTrail(historian.engine)
        forwarder = SyslogForwarder(historian.engine, away).start()
        for k in range(3):
            trail.append("login", actor=f"user{k}")
        assert not forwarder.flush(1.0)
        forwarder.stop(timeout_s=0.5)
        assert forwarder.failures >= 1
        assert forwarder.sent == 0
        # the next start (a restart of the service) delivers what was waiting, from the database
        forwarder = SyslogForwarder(historian.engine, settings_for(collector)).start()
        try:
            trail.append("login", actor="user3")
            assert forwarder.flush(20)
        finally:
            forwarder.stop()
    assert [c.seq for c in parse_copy(collector.lines(collector.raw, 4))] == [1, 2, 3, 4]


def test_verify_against_the_copy_finds_a_chain_rewritten_with_the_key(
    collector: Collector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone who read the key can re-chain the trail so that it verifies; not the collector's copy."""
    url = f"sqlite:///{tmp_path / 'opendso.db'}"
    with Historian.open(url) as historian:
        forwarder = SyslogForwarder(historian.engine, settings_for(collector)).start()
        try:
            trail = AuditTrail(historian.engine)
            for k in range(5):
                trail.append(
                    "login.failed" if k % 2 else "login", actor=f"user{k}", result="refused" if k % 2 else "ok"
                )
            assert forwarder.flush(20)
        finally:
            forwarder.stop()
        # the attacker: delete the failed logins, renumber and re-chain with the stolen key, fix the anchor
        sealer = sealer_of(historian.engine)
        with historian.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER audit_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_no_delete")
            rows = conn.execute(sa.select(audit).where(audit.c.action != "login.failed").order_by(audit.c.seq)).all()
            conn.execute(sa.delete(audit))
            prev = "0" * 64
            for seq, row in enumerate(rows, start=1):
                body = {**audit_body(row), "seq": seq}
                digest = sealer.chain_hash("audit", prev, body)
                conn.execute(sa.insert(audit).values(**{**row._mapping, "seq": seq, "prev_hash": prev, "hash": digest}))
                prev = digest
        from opendso.store.integrity import ChainHead

        sealer.anchor.set("audit", ChainHead(1, len(rows), prev))
    copy = collector.raw
    collector.lines(copy, 5)
    base = {"data_dir": str(tmp_path), "database_url": None, "json": False}
    assert audit_verify_command(argparse.Namespace(**base, syslog_copy=None)) == 0  # the local chain looks intact
    capsys.readouterr()
    assert audit_verify_command(argparse.Namespace(**base, syslog_copy=str(copy))) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out
    with Historian.open(url) as historian:
        found = compare_with_copy(AuditTrail(historian.engine).iter_all(), copy)
    kinds = {p.kind for p in found.problems}
    assert "rewritten" in kinds
    assert "truncated" in kinds


def test_a_collector_without_tls_is_refused_unless_on_loopback() -> None:
    with pytest.raises(Exception, match="only a collector on loopback"):
        SyslogSettings("syslog+tcp://192.0.2.9:514").address()
    with pytest.raises(Exception, match="syslog\\+tls://"):
        SyslogSettings("udp://192.0.2.9:514").address()
    assert SyslogSettings("syslog+tls://logs.example:6514").address() == ("logs.example", 6514, True)
