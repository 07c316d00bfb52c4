"""Tamper evidence (issue item 5): a keyed chain, an anchor outside the database, sealed users and sessions.

Each test does what someone with write access to the database would do (on SQLite and
PostgreSQL: the append-only triggers dropped first) and shows that OpenDSO notices: re-chaining
with the public hash function, deleting the newest records, editing the event log, giving a
viewer the security administrator's role with one UPDATE, forging a session.
"""

from __future__ import annotations

import argparse
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import UNLIMITED_LOGINS
from fastapi.testclient import TestClient

from opendso.cli.audit import audit_reseal_command, audit_verify_command
from opendso.cli.users import users_command
from opendso.errors import AuthError, IntegrityKeyMissingError
from opendso.service import ServiceSettings, create_app
from opendso.service.audit import (
    GENESIS_HASH,
    AuditTrail,
    integrity_report,
    record_hash,
    verify_chain,
)
from opendso.service.security import Role, Security, SecuritySettings
from opendso.store import Historian, migrate
from opendso.store.engine import create_engine
from opendso.store.events import verify_events
from opendso.store.integrity import audit_body, sealer_of
from opendso.store.schema import events
from opendso.store.security_schema import audit, sessions, users

FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
PASSWORD = "correct horse battery"


@pytest.fixture
def historian(db_url: str, tmp_path: Path) -> Iterator[Historian]:
    h = Historian.open(db_url, buffer_path=tmp_path / "buffer.bin")
    yield h
    h.close()


def drop_guards(engine: sa.Engine) -> None:
    """What an attacker with database rights does first: drop the append-only triggers."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER audit_append_only ON audit")
            conn.exec_driver_sql("DROP TRIGGER events_append_only ON events")
        else:
            for name in ("audit_no_update", "audit_no_delete", "events_no_update", "events_no_delete"):
                conn.exec_driver_sql(f"DROP TRIGGER {name}")


def fill(historian: Historian) -> Security:
    security = Security(historian.engine, settings=FAST)
    security.add_user("olga", PASSWORD, ["operator"])
    security.add_user("victor", PASSWORD, ["viewer"])
    for _ in range(3):
        with pytest.raises(AuthError):
            security.authenticate("olga", "not her password", source_ip="192.0.2.1")
    security.audit.flush()
    for k in range(4):
        historian.events.append("shift.note", actor="olga", payload={"text": f"note {k}"})
    return security


def rechain_with_public_hash(engine: sa.Engine) -> None:
    """Re-link every record after the first gap with sha256, as an attacker without the key can."""
    with engine.begin() as conn:
        rows = conn.execute(sa.select(audit).order_by(audit.c.seq)).all()
        conn.execute(sa.delete(audit))
        prev = GENESIS_HASH
        for seq, row in enumerate(rows, start=1):
            body = {**audit_body(row), "seq": seq}
            digest = record_hash(prev, body)
            values = {**row._mapping, "seq": seq, "prev_hash": prev, "hash": digest}
            conn.execute(sa.insert(audit).values(**values))
            prev = digest


def test_deleting_failed_logins_and_rechaining_without_the_key_is_detected(historian: Historian) -> None:
    fill(historian)
    assert verify_chain(historian).ok
    drop_guards(historian.engine)
    with historian.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.action == "login.failed"))
    rechain_with_public_hash(historian.engine)
    result = verify_chain(historian)
    assert not result.ok
    kinds = {p.kind for p in result.problems}
    assert "edited" in kinds  # no record matches its keyed hash any more
    assert "truncated" in kinds or "anchor_mismatch" in kinds  # and the chain is shorter than anchored


def test_deleting_the_newest_records_is_detected(historian: Historian) -> None:
    fill(historian)
    last = AuditTrail(historian.engine).last_seq()
    drop_guards(historian.engine)
    with historian.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.seq >= last - 1))
        conn.execute(sa.delete(events).where(events.c.seq == historian.events.last_seq()))
    audit_result = verify_chain(historian)
    assert [(p.kind, p.seq) for p in audit_result.problems] == [("truncated", last - 2)]
    events_result = verify_events(historian.engine)
    assert [p.kind for p in events_result.problems] == ["truncated"]


def test_an_edited_or_deleted_event_is_detected(historian: Historian) -> None:
    fill(historian)
    assert verify_events(historian.engine).ok
    drop_guards(historian.engine)
    with historian.engine.begin() as conn:
        conn.execute(sa.update(events).where(events.c.seq == 2).values(payload={"text": "nothing to report"}))
        conn.execute(sa.delete(events).where(events.c.seq == 3))
    result = verify_events(historian.engine)
    assert {(p.seq, p.kind) for p in result.problems} >= {(2, "edited"), (4, "gap"), (4, "broken_link")}


def test_a_role_given_with_one_update_is_refused_and_reported(historian: Historian, tmp_path: Path) -> None:
    security = fill(historian)
    token, _ = security.open_session(security.authenticate("victor", PASSWORD), kind="bearer")
    with historian.engine.begin() as conn:
        conn.execute(sa.update(users).where(users.c.username == "victor").values(roles=["security_administrator"]))
    with pytest.raises(AuthError):
        security.session(token)  # the open session of the tampered user is refused
    with pytest.raises(AuthError):
        security.authenticate("victor", PASSWORD)  # and so is a new login
    info = {u.user.username: u for u in security.list_users()}
    assert info["victor"].intact is False
    assert info["olga"].intact is True
    security.audit.flush()
    violations = [r for r in security.audit.read() if r.action == "integrity.violation"]
    assert violations
    assert violations[0].element == "user:victor"
    report = integrity_report(historian.engine)
    assert report["ok"] is False
    assert [(r["table"], r["key"]) for r in report["rows"]] == [("users", "victor")]
    # an administrator repairs the row by setting the roles and a new password through OpenDSO
    security.set_roles("victor", ["viewer"], actor="admin")
    security.set_password("victor", "victor's brand new password", actor="admin")
    assert security.authenticate("victor", "victor's brand new password").roles == (Role.VIEWER,)
    assert integrity_report(historian.engine)["rows"] == []


def test_a_forged_session_row_is_refused(historian: Historian) -> None:
    security = fill(historian)
    token, session = security.open_session(security.authenticate("olga", PASSWORD), kind="bearer")
    with historian.engine.begin() as conn:
        row = conn.execute(sa.select(sessions).where(sessions.c.token_hash == session.token_hash)).one()
        forged = {**row._mapping, "token_hash": "f" * 64, "user_id": security.get_user("victor").id}
        conn.execute(sa.insert(sessions).values(**forged))
        # the forger knows the token of the forged row: make its hash match a token of theirs
        import hashlib

        conn.execute(
            sa.update(sessions)
            .where(sessions.c.token_hash == "f" * 64)
            .values(token_hash=hashlib.sha256(b"forged").hexdigest())
        )
    assert security.session(token).user.username == "olga"
    with pytest.raises(AuthError):
        security.session("forged")
    assert [r["table"] for r in integrity_report(historian.engine)["rows"]] == ["sessions"]


def test_the_key_and_the_database_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with Historian.open(f"sqlite:///{folder / 'opendso.db'}") as h:
        h.events.append("test", actor="t")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("opendso.db", "integrity.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    anchors = list(folder.glob("integrity-heads-*.json"))
    assert len(anchors) == 1
    assert stat.S_IMODE(anchors[0].stat().st_mode) == 0o600
    heads = json.loads(anchors[0].read_text())["chains"]
    assert heads["events"]["seq"] == 1


def test_a_missing_key_stops_the_database_from_opening(db_url: str, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "integrity.key"
    with Historian.open(db_url, key_path=key) as h:
        fill(h)
    key.unlink()
    with pytest.raises(IntegrityKeyMissingError, match="missing"):
        Historian.open(db_url, key_path=key)


def test_reseal_accepts_the_present_state_with_a_new_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as h:
        fill(h)
    (tmp_path / "integrity.key").unlink()
    args = argparse.Namespace(data_dir=str(tmp_path), database_url=None, yes=False)
    with pytest.raises(Exception, match="--yes"):
        audit_reseal_command(args)
    args.yes = True
    assert audit_reseal_command(args) == 0
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as h:
        report = integrity_report(h.engine)
        assert report["ok"] is True
        assert report["audit"]["unkeyed"] > 0  # the old records are reported, not blessed
        assert AuditTrail(h.engine).read()[-1].action == "integrity.reseal"


@pytest.mark.parametrize("key_exists", [False, True])
def test_a_database_from_before_the_key_is_sealed_from_then_on(tmp_path: Path, key_exists: bool) -> None:
    """An older OpenDSO's plain-hash records stay verifiable and are reported as unkeyed.

    Also when the key already exists because another database of the same folder made it.
    """
    if key_exists:
        with Historian.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
            other.events.append("test", actor="t")
        assert (tmp_path / "integrity.key").exists()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine, "0003")
    prev = GENESIS_HASH
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (username, password_hash, roles, disabled, failed_logins, created_us, updated_us) "
            "VALUES ('old', 'x', '[\"viewer\"]', 0, 0, 0, 0)"
        )
        for seq in (1, 2):
            body = {
                "seq": seq,
                "ts_us": seq,
                "actor": "a",
                "source_ip": None,
                "action": "login",
                "element": None,
                "result": "ok",
                "reason": None,
                "details": {},
            }
            digest = record_hash(prev, body)
            conn.execute(sa.insert(audit).values(**body, prev_hash=prev, hash=digest))
            prev = digest
    engine.dispose()
    with Historian.open(url) as h:
        AuditTrail(h.engine).append("login", actor="new")
        report = integrity_report(h.engine)
        assert report["ok"] is True
        assert report["audit"]["unkeyed"] == 2
        assert report["audit"]["records"] == 3
        assert sealer_of(h.engine).keyed_from("audit") == 3


def test_audit_verify_names_the_database_and_refuses_an_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "nothing-here"
    with pytest.raises(Exception, match="no database at"):
        audit_verify_command(argparse.Namespace(data_dir=str(empty), database_url=None, json=False, syslog_copy=None))
    assert not empty.exists()  # verify creates nothing
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}"):
        pass
    with pytest.raises(Exception, match="has no audit trail"):
        audit_verify_command(
            argparse.Namespace(data_dir=str(tmp_path), database_url=None, json=False, syslog_copy=None)
        )
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as h:
        fill(h)
    args = argparse.Namespace(data_dir=str(tmp_path), database_url=None, json=False, syslog_copy=None)
    assert audit_verify_command(args) == 0
    out = capsys.readouterr().out
    assert f"database: sqlite:///{tmp_path / 'opendso.db'}" in out
    assert "audit trail intact" in out
    assert "event log intact" in out
    assert "every row matches its seal" in out


def test_the_audit_page_api_checks_each_record(tmp_path: Path, grid_of: object) -> None:
    from serving import control_room

    room = control_room(grid_of("simbench:1-MV-urban--0-sw"), tmp_path)  # type: ignore[operator]
    try:
        app = create_app(room, ServiceSettings(security=FAST, login=UNLIMITED_LOGINS))
        client = TestClient(app)
        r = client.post("/api/auth/login", json={"username": "security_auditor", "password": PASSWORD})
        assert r.status_code == 200
        records = client.get("/api/audit").json()
        assert records
        assert all(rec["verified"] is True for rec in records)
        assert client.get("/api/audit/verify").json()["ok"] is True
        drop_guards(room.historian.engine)
        with room.historian.engine.begin() as conn:
            conn.execute(sa.update(audit).where(audit.c.seq == 2).values(actor="someone else"))
        records = client.get("/api/audit").json()
        assert [rec["seq"] for rec in records if not rec["verified"]] == [2]
        verdict = client.get("/api/audit/verify").json()
        assert verdict["ok"] is False
        assert verdict["audit"]["problems"][0]["kind"] == "edited"
    finally:
        room.historian.close()


def test_users_command_attributes_changes_to_the_os_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import pwd

    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("OPENDSO_PASSWORD", "a perfectly good password")
    args = argparse.Namespace(data_dir=str(tmp_path), database_url=None, users_action="add", username="tina")
    args.roles, args.temporary = "viewer", False
    assert users_command(args) == 0
    with Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}") as h:
        record = AuditTrail(h.engine).read()[-1]
    assert record.actor == f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"
    assert "mallory" not in record.actor


def test_the_anchor_names_its_database(historian: Historian) -> None:
    fill(historian)
    sealer = sealer_of(historian.engine)
    assert sealer.anchor.path.parent == sealer.key.folder
    heads = sealer.anchor.read()
    assert heads["audit"].seq == AuditTrail(historian.engine).last_seq()
    assert heads["events"].seq == historian.events.last_seq()


def test_a_batch_of_events_is_chained_in_one_transaction_all_or_nothing(historian: Historian) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    batch = [("alarm.raised", "opendso", f"voltage:n{k}", {"k": k}, now) for k in range(5)]
    with pytest.raises(Exception, match="plain JSON"):
        historian.events.append_many([*batch, ("alarm.raised", "opendso", None, {"bad": float("nan")}, now)])
    assert historian.events.last_seq() == 0
    appended = historian.events.append_many(batch)
    assert [e.seq for e in appended] == [1, 2, 3, 4, 5]
    report = verify_events(historian.engine)
    assert report.ok
    assert report.records == 5
    assert sealer_of(historian.engine).anchor.read()["events"].seq == 5


def test_one_key_serves_several_new_databases(db_url: str, tmp_path: Path) -> None:
    key = tmp_path / "shared" / "integrity.key"
    urls = [db_url, f"sqlite:///{tmp_path / 'second.db'}"]
    for url in urls:
        with Historian.open(url, key_path=key) as h:
            h.events.append_many([("test", "t", None, {"k": k}, None) for k in range(3)])
            AuditTrail(h.engine).append("login", actor="t")
    for url in urls:
        with Historian.open(url, key_path=key) as h:
            report = integrity_report(h.engine)
            assert report["ok"], report
            assert report["audit"]["unkeyed"] == report["events"]["unkeyed"] == 0
    assert len(list(key.parent.glob("integrity-heads-*.json"))) == 2
