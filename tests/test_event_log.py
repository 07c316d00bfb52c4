"""The event log on SQLite and on the real PostgreSQL server: append-only, monotonic sequence numbers.

PostgreSQL: see the policy in ``test_historian.py`` (skip when unreachable, fail under CI=true).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from opendso.errors import StoreInputError
from opendso.store import Event, Historian


@pytest.fixture
def historian(db_url: str, tmp_path: Path) -> Iterator[Historian]:
    """A historian (and so an event log) on a fresh database."""
    h = Historian.open(db_url, buffer_path=tmp_path / "buffer.bin")
    yield h
    h.close()


def test_sequence_numbers_only_grow_and_survive_a_reopen(historian: Historian, db_url: str, tmp_path: Path) -> None:
    log = historian.events
    assert log.last_seq() == 0
    appended = [log.append("alarm.raised", actor="alarms", element=f"line{i}", payload={"i": i}) for i in range(50)]
    seqs = [e.seq for e in appended]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 50
    assert seqs[0] >= 1
    historian.close()
    with Historian.open(db_url, buffer_path=tmp_path / "buffer.bin") as again:
        later = again.events.append("command.switch", actor="operator:ann", element="sw7", payload={"to": "open"})
        assert later.seq > seqs[-1]
        assert again.events.last_seq() == later.seq
        assert [e.seq for e in again.events.read()] == [*seqs, later.seq]


def test_reading_by_sequence_range(historian: Historian) -> None:
    log = historian.events
    ts = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    appended = [
        log.append("alarm.ack", actor="op", payload={"n": i, "nested": [1, {"a": None}]}, ts=ts) for i in range(10)
    ]
    window = log.read(appended[3].seq, appended[6].seq)
    assert window == appended[3:7]
    assert log.read(appended[8].seq) == appended[8:]
    assert log.read(appended[0].seq, limit=2) == appended[:2]
    assert window[0] == Event(appended[3].seq, ts, "op", "alarm.ack", None, {"n": 3, "nested": [1, {"a": None}]})


def test_the_database_refuses_updates_and_deletes(historian: Historian) -> None:
    event = historian.events.append("command.setpoint", actor="ems", element="pv1", payload={"p_w": 1000.0})
    for statement in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), historian.engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert historian.events.read() == [event]
    assert not hasattr(historian.events, "delete")
    assert not hasattr(historian.events, "update")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "x", "actor": "op", "payload": {"v": math.nan}}, "payload is not plain JSON"),
        ({"kind": "x", "actor": "op", "payload": {"v": object()}}, "payload is not plain JSON"),
        ({"kind": "", "actor": "op"}, "kind must be a non-empty string"),
        ({"kind": "x", "actor": " "}, "actor must be a non-empty string"),
        ({"kind": "x", "actor": "op", "ts": datetime(2026, 1, 1)}, "naive datetime"),
    ],
)
def test_bad_events_are_named_and_append_nothing(historian: Historian, kwargs: dict, message: str) -> None:
    historian.events.append("first", actor="op")
    kwargs = dict(kwargs)
    kind = kwargs.pop("kind")
    with pytest.raises(StoreInputError, match=message):
        historian.events.append(kind, **kwargs)
    assert [e.kind for e in historian.events.read()] == ["first"]


def test_find_filters_by_kind_time_and_sequence(historian: Historian) -> None:
    log = historian.events
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    kinds = ["alarm.raised", "shift.note", "alarm.cleared", "alarmXraised", "ALARM.acknowledged", "alarm.raised"]
    appended = [
        log.append(kind, actor="op", element=f"e{i}", ts=t0 + timedelta(minutes=i)) for i, kind in enumerate(kinds)
    ]
    seqs = [e.seq for e in appended]
    assert log.find() == appended
    assert [e.seq for e in log.find(kind="shift.note")] == [seqs[1]]
    # the prefix is literal text: "." is no wildcard, and neither are "%" and "_"
    alarm = [e.seq for e in log.find(kind_prefix="alarm.")]
    assert {seqs[0], seqs[2], seqs[5]} <= set(alarm)
    assert seqs[3] not in alarm
    assert log.find(kind_prefix="%") == []
    assert log.find(kind_prefix="alarm_") == []
    window = log.find(start=t0 + timedelta(minutes=1), end=t0 + timedelta(minutes=3))  # start <= ts < end
    assert [e.seq for e in window] == seqs[1:3]
    assert [e.seq for e in log.find(kind="alarm.raised", newest_first=True)] == [seqs[5], seqs[0]]
    assert [e.seq for e in log.find(before=seqs[3], newest_first=True, limit=2)] == [seqs[2], seqs[1]]
    assert log.find(kind="alarm.raised", start=t0 + timedelta(hours=1)) == []


def test_find_refuses_naive_times(historian: Historian) -> None:
    historian.events.append("alarm.raised", actor="op")
    with pytest.raises(StoreInputError, match="naive start"):
        historian.events.find(start=datetime(2026, 5, 1, 12, 0))
    with pytest.raises(StoreInputError, match="naive end"):
        historian.events.find(end=datetime(2026, 5, 1, 12, 0))
