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


# -- issue 8: alarms an operator can rely on (ISA-18.2 states, one count definition, chattering) ----------------
def test_only_an_active_or_unacknowledged_alarm_can_be_shelved() -> None:
    from opendso.errors import AlarmStateError

    mon = voltage_monitor()
    mon.update_values(at(0), [1.0, 1.0, 1.0])
    # a breaker shelved in advance raised its trip alarm shelved and nobody saw it: refused now
    with pytest.raises(AlarmStateError, match="normal: only an alarm that is active or unacknowledged"):
        mon.shelve(at(1), "node0", until=at(60), reason="in advance", actor="op")
    (raised,) = mon.update_values(at(2), [1.12, 1.0, 1.0])
    assert raised.announced  # the trip is announced, not hidden
    mon.update_values(at(4), [1.0, 1.0, 1.0])  # returned to normal, still unacknowledged: may be shelved
    assert mon.shelve(at(5), "node0", until=at(60), reason="sensor work", actor="op").transition is Transition.SHELVED
    mon.acknowledge(at(6), "node0", actor="op")
    mon.unshelve(at(7), "node0", actor="op")
    with pytest.raises(AlarmStateError, match="normal"):  # normal and acknowledged again
        mon.shelve(at(8), "node0", until=at(60), reason="sensor work", actor="op")


def test_a_shelf_is_limited_to_the_maximum() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [1.12, 1.0, 1.0])
    year_9999 = datetime(9999, 12, 31, tzinfo=UTC)
    with pytest.raises(InputError, match="at most 8 h"):
        mon.shelve(at(1), "node0", until=year_9999, reason="forever", actor="op")
    with pytest.raises(InputError, match="at most 8 h"):
        mon.shelve(at(1), "node0", until=at(1 + 8 * 3600 + 1), reason="a shift and a second", actor="op")
    assert mon.shelve(at(1), "node0", until=at(1 + 8 * 3600), reason="one shift", actor="op").shelved
    short = voltage_monitor(max_shelve_s=600)  # configurable
    short.update_values(at(0), [1.12, 1.0, 1.0])
    with pytest.raises(InputError, match=r"at most 0\.166667 h"):
        short.shelve(at(1), "node0", until=at(1 + 601), reason="too long", actor="op")
    assert not short.shelved.any()  # a refused shelf changes nothing


def test_an_expired_shelf_announces_a_still_active_alarm_again() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [1.12, 1.0, 1.0])
    mon.acknowledge(at(1), "node0", actor="op")
    mon.shelve(at(2), "node0", until=at(60), reason="crew on site", actor="op")
    (listed,) = mon.listed()
    assert (listed.state, listed.shelved_by, listed.shelve_reason) == ("shelved", "op", "crew on site")
    assert listed.shelved_until == at(60)
    events = mon.update_values(at(61), [1.12, 1.0, 1.0])
    assert [(e.transition, e.reason) for e in events] == [
        (Transition.UNSHELVED, "shelf expired"),
        (Transition.RAISED, "shelf expired, still in alarm"),
    ]
    assert events[1].announced  # with the cue
    (again,) = mon.active()
    assert again.state == "unacknowledged"
    assert not again.acknowledged


def test_unshelve_returns_the_alarm_and_refuses_what_is_not_shelved() -> None:
    from opendso.errors import AlarmStateError

    mon = voltage_monitor()
    mon.update_values(at(0), [1.12, 0.85, 1.0])
    mon.shelve(at(1), "node0", until=at(600), reason="known", actor="op")
    mon.shelve(at(1), "node1", until=at(600), reason="known", actor="op")
    mon.update_values(at(2), [1.12, 1.0, 1.0])  # node1 returns to normal while shelved
    mon.acknowledge(at(3), "node1", actor="op")
    unshelved, announced = mon.unshelve(at(4), "node0", actor="op2")
    assert (unshelved.transition, unshelved.actor) == (Transition.UNSHELVED, "op2")
    assert announced.transition is Transition.RAISED
    assert announced.announced
    assert [e.transition for e in mon.unshelve(at(4), "node1", actor="op2")] == [Transition.UNSHELVED]  # normal now
    with pytest.raises(AlarmStateError, match="not shelved"):
        mon.unshelve(at(5), "node2", actor="op")


def test_out_of_service_and_suppressed_by_design_are_separate_states() -> None:
    from opendso.errors import AlarmStateError
    from opendso.operations.alarms import count_alarms

    mon = voltage_monitor(4)
    mon.update_values(at(0), [1.0, 1.0, 1.0, 1.0])
    # out of service: maintenance, may be set while normal, with a reason
    oos = mon.remove_from_service(at(1), "node0", reason="VT replaced", actor="eng")
    assert (oos.transition, oos.reason, oos.actor) == (Transition.OUT_OF_SERVICE, "VT replaced", "eng")
    with pytest.raises(AlarmStateError, match="already out of service"):
        mon.remove_from_service(at(1), "node0", reason="again", actor="eng")
    with pytest.raises(AlarmStateError, match="out of service"):
        mon.shelve(at(1), "node0", until=at(60), reason="x", actor="op")
    mon.set_designed_suppression(at(1), [False, True, False, False], ["intended switching"] * 4)
    events = mon.update_values(at(2), [1.12, 1.12, 1.12, 1.0])
    hidden = {e.channel: e for e in events}
    assert hidden["node0"].out_of_service
    assert not hidden["node0"].announced
    assert hidden["node1"].suppressed
    assert not hidden["node1"].announced
    assert hidden["node2"].announced
    states = {a.channel: a.state for a in mon.listed()}
    assert states == {"node0": "out_of_service", "node1": "suppressed", "node2": "unacknowledged"}
    counts = count_alarms([mon])
    assert (counts.standing, counts.unacknowledged, counts.out_of_service, counts.suppressed) == (1, 1, 1, 1)
    # both come back announced when their state ends while the alarm is still active
    back = mon.return_to_service(at(3), "node0", actor="eng")
    assert [e.transition for e in back] == [Transition.RETURNED_TO_SERVICE, Transition.RAISED]
    lifted = mon.set_designed_suppression(at(3), [False, False, False, False])
    assert [e.transition for e in lifted] == [Transition.UNSUPPRESSED, Transition.RAISED]
    assert lifted[1].announced
    assert count_alarms([mon]).unacknowledged == 3


def test_counts_have_one_definition() -> None:
    from opendso.operations.alarms import AlarmCounts, count_alarms, count_states

    mon = voltage_monitor(7)
    mon.update_values(at(0), [1.12, 1.12, 1.12, 1.12, 1.12, 1.0, 1.0])
    mon.acknowledge(at(1), "node1", actor="op")  # active acknowledged
    mon.update_values(at(2), [1.12, 1.12, 1.0, 1.12, 1.12, 1.0, 1.0])  # node2 returned unacknowledged
    mon.shelve(at(3), "node3", until=at(600), reason="x", actor="op")
    mon.remove_from_service(at(3), "node5", reason="maintenance", actor="eng")  # normal, out of service
    mon.set_designed_suppression(at(3), [False, False, False, False, True, False, False])
    counts = count_alarms([mon])
    assert counts == AlarmCounts(standing=3, unacknowledged=2, shelved=1, out_of_service=1, suppressed=1)
    # the list carries every alarm counted, in its state: the same function gives the same counts
    assert count_states(a.state for a in mon.listed()) == counts


def test_chattering_raises_are_not_announced_and_do_not_rearm_the_acknowledgement() -> None:
    mon = voltage_monitor(chatter_count=4, chatter_window_s=30)
    announced = []
    for k in range(12):
        events = mon.update_values(at(2 * k), [1.12 if k % 2 == 0 else 1.0, 1.0, 1.0])
        announced += [e for e in events if e.announced]
        if not mon.acknowledged[0]:
            mon.acknowledge(at(2 * k + 1), "node0", actor="op")
    assert len(announced) == 2  # before the chattering was detected; after it, nothing more
    assert mon.acknowledged[0]


def test_the_cause_heads_its_group() -> None:
    mon = AlarmMonitor("supply", [f"load{k}" for k in range(5)], conditions=("", "loss of supply"), groups=["A"] * 5)
    sw = AlarmMonitor("switch", ["brk"], conditions=("", "uncommanded change"), groups=["A"])
    sw.update_conditions(at(0), [True])
    mon.set_causes(["switch:brk"] * 5, ["A"] * 5)
    mon.update_conditions(at(0), [True] * 5)
    (group,) = group_alarms(mon.active() + sw.active())
    assert group.head.key == "switch:brk"
    assert group.count == 6
    assert all(a.cause == "switch:brk" for a in group.alarms[1:])
    # back to normal, unacknowledged: the consequences stay under their cause until acknowledged
    mon.set_causes([None] * 5)
    mon.update_conditions(at(2), [False] * 5)
    assert {a.cause for a in mon.active()} == {"switch:brk"}


def test_channel_state_round_trips_for_a_restart() -> None:
    mon = voltage_monitor()
    mon.update_values(at(0), [1.12, 0.85, 1.0])
    mon.acknowledge(at(1), "node0", actor="op")
    mon.shelve(at(2), "node1", until=at(600), reason="known", actor="op")
    mon.remove_from_service(at(2), "node2", reason="VT", actor="eng")
    saved = {s.key: s for s in mon.take_dirty()}
    assert mon.take_dirty() == []  # taken
    fresh = voltage_monitor()
    assert fresh.restore(saved) == 3
    assert [(a.key, a.state, a.acknowledged, a.shelved_until) for a in fresh.listed()] == [
        (a.key, a.state, a.acknowledged, a.shelved_until) for a in mon.listed()
    ]
    # the next values go on from the restored state: no new announcement of what was acknowledged
    assert [e for e in fresh.update_values(at(3), [1.12, 0.85, 1.0]) if e.announced] == []


def test_off_delay_keeps_an_alarm_through_a_short_return_to_normal() -> None:
    mon = voltage_monitor(off_delay_s=10)
    (raised,) = mon.update_values(at(0), [1.12, 1.0, 1.0])
    assert raised.transition is Transition.RAISED
    assert mon.update_values(at(2), [1.0, 1.0, 1.0]) == []  # back for less than the off-delay
    assert mon.update_values(at(6), [1.12, 1.0, 1.0]) == []  # and in alarm again: nothing happened
    assert mon.update_values(at(8), [1.0, 1.0, 1.0]) == []
    assert mon.update_values(at(16), [1.0, 1.0, 1.0]) == []
    (cleared,) = mon.update_values(at(18), [1.0, 1.0, 1.0])
    assert (cleared.transition, cleared.time) == (Transition.CLEARED, at(18))
