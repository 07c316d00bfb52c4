"""The audit trail on SQLite and PostgreSQL: hash-chained, append-only, tampering detected; user changes audited.

PostgreSQL: see the policy in ``test_historian.py`` (skip when unreachable, fail under CI=true).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from opendso.cli.audit import audit_verify_command
from opendso.cli.users import users_command
from opendso.errors import AuthError, InputError
from opendso.service.audit import GENESIS_HASH, AuditTrail, record_hash, verify_chain
from opendso.service.security import Role, Security, SecuritySettings
from opendso.store import Historian
from opendso.store.security_schema import audit

FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@pytest.fixture
def historian(db_url: str, tmp_path: Path) -> Iterator[Historian]:
    h = Historian.open(db_url, buffer_path=tmp_path / "buffer.bin")
    yield h
    h.close()


def fill(trail: AuditTrail, n: int = 6) -> None:
    for i in range(n):
        trail.append(
            "alarm.acknowledge",
            actor=f"operator{i % 2}",
            element=f"voltage:node{i}",
            source_ip="192.0.2.7",
            reason=None if i % 2 else "seen",
            details={"i": i, "note": "ünïcode"},
        )


def drop_guard(engine: sa.Engine) -> None:
    """What an attacker with database rights would do first."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER audit_append_only ON audit")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_no_delete")


def test_records_chain_and_the_chain_verifies(historian: Historian) -> None:
    trail = AuditTrail(historian.engine)
    assert verify_chain(historian).ok
    fill(trail)
    records = trail.read()
    assert [r.seq for r in records] == list(range(1, 7))
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result = verify_chain(historian)
    assert result.ok
    assert result.records == 6
    assert result.last_seq == 6
    assert result.head_hash == records[-1].hash
    assert records[2].source_ip == "192.0.2.7"
    assert records[2].details == {"i": 2, "note": "ünïcode"}


def test_the_database_refuses_update_and_delete(historian: Historian) -> None:
    fill(AuditTrail(historian.engine), 2)
    for statement in (sa.update(audit).values(reason="nothing happened"), sa.delete(audit)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), historian.engine.begin() as conn:
            conn.execute(statement)
    assert verify_chain(historian).ok


def test_an_edited_record_is_detected(historian: Historian) -> None:
    fill(AuditTrail(historian.engine))
    drop_guard(historian.engine)
    with historian.engine.begin() as conn:
        conn.execute(sa.update(audit).where(audit.c.seq == 3).values(actor="someone else"))
    result = verify_chain(historian)
    assert not result.ok
    assert [(p.seq, p.kind) for p in result.problems] == [(3, "edited")]


def test_a_deleted_record_is_detected_as_a_gap(historian: Historian) -> None:
    fill(AuditTrail(historian.engine))
    drop_guard(historian.engine)
    with historian.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.seq == 4))
    result = verify_chain(historian)
    kinds = {(p.seq, p.kind) for p in result.problems}
    assert (5, "gap") in kinds
    assert (5, "broken_link") in kinds


def test_an_edit_rehashed_with_the_public_hash_function_is_detected(historian: Historian) -> None:
    """The chain is keyed: recomputing a record's hash without the key does not make an edit pass."""
    trail = AuditTrail(historian.engine)
    fill(trail)
    drop_guard(historian.engine)
    rec = trail.read(2, limit=1)[0]
    body = {
        "seq": rec.seq,
        "ts_us": (rec.ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
        "actor": rec.actor,
        "source_ip": rec.source_ip,
        "action": rec.action,
        "element": rec.element,
        "result": "refused",
        "reason": rec.reason,
        "details": rec.details,
    }
    with historian.engine.begin() as conn:
        conn.execute(
            sa.update(audit).where(audit.c.seq == 3).values(result="refused", hash=record_hash(rec.prev_hash, body))
        )
    result = verify_chain(historian)
    assert [(p.seq, p.kind) for p in result.problems] == [(3, "edited"), (4, "broken_link")]


def test_audit_verify_command_reports_and_exits(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Historian.open(db_url) as h:
        fill(AuditTrail(h.engine), 3)
    assert audit_verify_command(argparse.Namespace(database_url=db_url, json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert out["audit"]["records"] == 3
    with Historian.open(db_url) as h:
        drop_guard(h.engine)
        with h.engine.begin() as conn:
            conn.execute(sa.delete(audit).where(audit.c.seq == 1))
    assert audit_verify_command(argparse.Namespace(database_url=db_url, json=False)) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_bad_audit_input_appends_nothing(historian: Historian) -> None:
    trail = AuditTrail(historian.engine)
    with pytest.raises(InputError):
        trail.append("", actor="x")
    with pytest.raises(InputError):
        trail.append("x", actor="x", details={"v": float("nan")})
    assert trail.last_seq() == 0


def test_user_changes_logins_and_failures_are_audited(historian: Historian) -> None:
    security = Security(historian.engine, settings=FAST)
    security.add_user("ann", "a long password", ["viewer"], actor="admin")
    security.set_roles("ann", ["operator", "engineer"], actor="admin")
    with pytest.raises(AuthError):
        security.authenticate("ann", "wrong password", source_ip="198.51.100.1")
    user = security.authenticate("ann", "a long password", source_ip="198.51.100.1")
    assert user.roles == (Role.OPERATOR, Role.ENGINEER)
    _, session = security.open_session(user, source_ip="198.51.100.1")
    security.close_session(session, source_ip="198.51.100.1")
    security.set_password("ann", "another long password", actor="admin")
    security.set_disabled("ann", actor="admin")
    with pytest.raises(AuthError):
        security.authenticate("ann", "another long password")
    with pytest.raises(InputError, match="unknown role"):
        security.set_roles("ann", ["superuser"])
    with pytest.raises(InputError, match="at least"):
        security.add_user("bob", "short", ["viewer"])
    with pytest.raises(InputError, match="exists"):
        security.add_user("ann", "a long password", ["viewer"])
    actions = [(r.action, r.actor, r.result) for r in AuditTrail(historian.engine).read()]
    assert actions == [
        ("user.add", "admin", "ok"),
        ("user.roles", "admin", "ok"),
        ("login.failed", "ann", "refused"),
        ("login", "ann", "ok"),
        ("logout", "ann", "ok"),
        ("user.password", "admin", "ok"),
        ("user.disable", "admin", "ok"),
        ("login.failed", "ann", "refused"),
    ]
    assert verify_chain(historian).ok


def test_users_command(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENDSO_PASSWORD", "a long enough password")

    def run(action: str, **kw: str | bool) -> int:
        if action in ("add", "set-password"):
            kw.setdefault("temporary", False)
        return users_command(argparse.Namespace(database_url=db_url, users_action=action, **kw))

    assert run("add", username="carol", roles="operator,viewer") == 0
    assert run("set-roles", username="carol", roles="security_auditor") == 0
    assert run("disable", username="carol") == 0
    capsys.readouterr()
    assert run("list") == 0
    assert capsys.readouterr().out == "carol\tsecurity_auditor (disabled)\n"
    with pytest.raises(InputError, match="no user"):
        run("disable", username="nobody")
    with Historian.open(db_url) as h:
        assert [r.action for r in AuditTrail(h.engine).read()] == ["user.add", "user.roles", "user.disable"]
    # a temporary password: the user must choose a new one at the next login
    assert run("add", username="tina", roles="viewer", temporary=True) == 0
    capsys.readouterr()
    run("list")
    assert "tina\tviewer (temporary password)\n" in capsys.readouterr().out
    assert run("set-password", username="tina") == 0
    with Historian.open(db_url) as h:
        assert Security(h.engine).get_user("tina").must_change_password is False
