"""Alarm life cycle: limits with deadband and delay, acknowledgement, shelving, chattering, grouping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from opendso.errors import InputError
from opendso.operations.alarms import AlarmMonitor, Limits, Priority, Transition, group_alarms

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def voltage_monitor(n: int = 3, **kwargs: object) -> AlarmMonitor:
    limits = Limits(low_alarm=0.90, low_warning=0.95, high_warning=1.05, high_alarm=1.10, deadband=0.005)
    return AlarmMonitor("voltage", [f"node{k}" for k in range(n)], limits=limits, **kwargs)  # type: ignore[arg-type]


def test_limits_raise_escalate_and_clear_with_deadband() -> None:
    mon = voltage_monitor()
    assert mon.update_values(at(0), [1.0, 1.0, 1.0]) == []
    events = mon.update_values(at(2), [1.06, 0.94, 1.0])
    assert [(e.channel, e.transition, e.condition) for e in events] == [
        ("node0", Transition.RAISED, "high warning"),
        ("node1", Transition.RAISED, "low warning"),
    ]
    assert events[0].priority is Priority.MEDIUM
    (esc,) = mon.update_values(at(4), [1.11, 0.94, 1.0])
    assert esc.transition is Transition.ESCALATED
    assert esc.priority is Priority.HIGH
    # back inside the limit but within the deadband: the alarm holds
    assert mon.update_values(at(6), [1.097, 0.947, 1.0]) == []
    events = mon.update_values(at(8), [1.094, 0.956, 1.0])
    assert [(e.channel, e.transition) for e in events] == [
        ("node0", Transition.DEESCALATED),
        ("node1", Transition.CLEARED),
    ]


def test_on_delay_suppresses_short_excursions() -> None:
    mon = voltage_monitor(delay_s=10)
    assert mon.update_values(at(0), [1.07, 1.0, 1.0]) == []
    assert mon.update_values(at(4), [1.0, 1.0, 1.0]) == []  # gone before the delay: nothing raised
    assert mon.update_values(at(6), [1.07, 1.0, 1.0]) == []
    assert mon.update_values(at(12), [1.07, 1.0, 1.0]) == []
    (raised,) = mon.update_values(at(16), [1.07, 1.0, 1.0])
    assert raised.transition is Transition.RAISED
    assert raised.time == at(16)


def test_invalid_values_keep_the_state() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [1.07, 1.0, 1.0])
    assert mon.update_values(at(2), [np.nan, 1.0, 1.0]) == []
    assert mon.update_values(at(4), [1.0, 1.0, 1.0], valid=[False, True, True]) == []
    assert mon.severity[0] == 1


def test_acknowledge_and_return_to_normal_unacknowledged() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [0.85, 1.0, 1.0])
    (alarm,) = mon.active()
    assert alarm.condition == "low alarm"
    assert not alarm.acknowledged
    mon.update_values(at(2), [1.0, 1.0, 1.0])
    (cleared,) = mon.active()  # cleared but not acknowledged: stays in the list
    assert cleared.severity == 0
    ack = mon.acknowledge(at(3), "node0", actor="operator1")
    assert ack.transition is Transition.ACKNOWLEDGED
    assert ack.actor == "operator1"
    assert mon.active() == []
    with pytest.raises(InputError, match="unknown channel 'node9'"):
        mon.acknowledge(at(3), "node9", actor="operator1")


def test_shelving_hides_and_expires() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [1.12, 1.0, 1.0])
    with pytest.raises(InputError, match="reason"):
        mon.shelve(at(1), "node0", until=at(60), reason=" ", actor="op")
    with pytest.raises(InputError, match="future"):
        mon.shelve(at(1), "node0", until=at(0), reason="sensor work", actor="op")
    shelved = mon.shelve(at(1), "node0", until=at(60), reason="sensor work", actor="op")
    assert shelved.reason == "sensor work"
    assert mon.active() == []
    assert len(mon.active(include_shelved=True)) == 1
    (cleared,) = mon.update_values(at(10), [1.0, 1.0, 1.0])
    assert cleared.shelved  # logged, marked shelved
    events = mon.update_values(at(61), [1.0, 1.0, 1.0])
    assert [e.transition for e in events] == [Transition.UNSHELVED]


def test_chattering_is_suppressed_then_reported_once() -> None:
    mon = voltage_monitor(chatter_count=4, chatter_window_s=30)
    events = []
    for k in range(8):  # flaps across the alarm limit and well beyond the deadband every 2 s
        events += mon.update_values(at(2 * k), [1.12 if k % 2 == 0 else 1.0, 1.0, 1.0])
    kinds = [e.transition for e in events]
    assert kinds.count(Transition.CHATTERING) == 1
    assert all(e.suppressed for e in events[kinds.index(Transition.CHATTERING) + 1 :])
    assert all(not e.suppressed for e in events[: kinds.index(Transition.CHATTERING)])
    assert mon.active(include_shelved=True)[0].chattering
    (ended,) = mon.update_values(at(14 + 31), [1.0, 1.0, 1.0])
    assert ended.transition is Transition.CHATTERING_ENDED


def test_a_breaker_trip_is_one_group_not_a_flood() -> None:
    loads = [f"load{k}" for k in range(50)]
    feeder = ["feeder A"] * 40 + ["feeder B"] * 10
    mon = AlarmMonitor("supply", loads, conditions=("", "loss of supply"), groups=feeder)
    supplied = np.ones(50, dtype=bool)
    assert mon.update_conditions(at(0), ~supplied) == []
    supplied[:40] = False  # the breaker of feeder A trips
    events = mon.update_conditions(at(2), ~supplied)
    assert len(events) == 40
    assert {e.group for e in events} == {"feeder A"}
    (group,) = group_alarms(mon.active())
    assert group.group == "feeder A"
    assert group.count == 40
    assert group.unacknowledged == 40
    assert group.head.condition == "loss of supply"


def test_vectorised_over_ten_thousand_channels() -> None:
    n = 10_000
    mon = voltage_monitor(n)
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.03, n)
    events = mon.update_values(at(0), values)
    expected = int(np.sum((values > 1.05) | (values < 0.95)))
    assert len(events) == expected
    assert len(mon.active()) == expected


def test_size_mismatch_is_bad_input() -> None:
    mon = voltage_monitor()
    with pytest.raises(InputError, match="2 values for 3 channels"):
        mon.update_values(at(0), [1.0, 1.0])
