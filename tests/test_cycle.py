"""The real-time cycle on a SimBench MV grid: telemetry -> topology -> state estimation -> alarms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import feeder_breaker

from opendso.calc import measurements_from_power_flow
from opendso.calc.powerflow import run_power_flow
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import Measurement
from opendso.operations.alarms import Transition, group_alarms
from opendso.operations.cycle import CycleSettings, RealTimeCycle, is_raise
from opendso.quality import Quality

CODE = "simbench:1-MV-urban--0-sw"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
FIELDS = {
    "sym_voltage_sensor": {"u": "u_measured"},
    "sym_power_sensor": {"p": "p_measured", "q": "q_measured"},
    "sym_current_sensor": {"i": "i_measured"},
}


def points_of(grid: Grid) -> dict[str, tuple[str, str]]:
    points: dict[str, tuple[str, str]] = {}
    for component, quantities in FIELDS.items():
        for name in grid.names.get(component, []):
            for q in quantities:
                points[f"{name}/{q}"] = (str(name), q)
    for name in grid.switch_names:
        points[f"{name}/switch"] = (str(name), "switch")
    return points


def field_readings(grid: Grid, when: datetime) -> dict[str, Measurement]:
    """What the field reports: exact values of a power flow of the true state at every placement."""
    truth = run_power_flow(grid)
    meas = measurements_from_power_flow(grid, truth, noise=0.0, rng=np.random.default_rng(0), pseudo_loads=False)
    readings: dict[str, Measurement] = {}
    for component, quantities in FIELDS.items():
        names = grid.names.get(component)
        if names is None or component not in meas:
            continue
        by_id = {int(i): row for row, i in enumerate(meas[component]["id"])}
        for row, (sid, name) in enumerate(zip(grid.sensors[component]["id"], names, strict=True)):
            del row
            for q, fld in quantities.items():
                value = float(meas[component][fld][by_id[int(sid)]])
                readings[f"{name}/{q}"] = Measurement(f"{name}/{q}", when, value, 0)
    for name, closed in zip(grid.switch_names, grid.switches["closed"], strict=True):
        readings[f"{name}/switch"] = Measurement(f"{name}/switch", when, float(closed), 0)
    return readings


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


def test_estimated_state_reproduces_the_field(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid))
    readings = field_readings(grid, T0)
    result = cycle.run(readings, T0)
    assert result.observable
    assert result.estimation.converged
    truth = run_power_flow(grid)
    error = np.abs(result.estimation.output["node"]["u_pu"] - truth.output["node"]["u_pu"])
    assert error.max() < 1e-6
    assert result.used_points == len(readings) - grid.switches.size
    assert result.alarm_events == []  # a healthy base case raises nothing
    assert set(result.timings_ms) == {"topology", "measurements", "state_estimation", "alarms", "cycle"}


def test_breaker_trip_gives_one_alarm_group_and_an_uncommanded_change(grid: Grid) -> None:
    topo = analyse_topology(grid)
    cycle = RealTimeCycle(grid, points_of(grid), feeder_of_node=topo.node_feeder)
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker = feeder_breaker(grid)
    name = str(grid.switch_names[breaker])
    tripped = dict(readings)
    tripped[f"{name}/switch"] = Measurement(f"{name}/switch", T0 + timedelta(seconds=2), 0.0, 0)
    result = cycle.run(tripped, T0 + timedelta(seconds=2))
    assert result.switch_changes == [name]
    assert (~result.energised).sum() > 5
    raised = [e for e in result.alarm_events if is_raise(e)]
    supply = [e for e in raised if e.monitor == "supply"]
    assert supply, "loss of supply must be alarmed"
    assert len({e.group for e in supply}) == 1  # one feeder, one group
    assert [e.channel for e in raised if e.monitor == "switch"] == [name]
    groups = group_alarms([a for m in cycle.monitors if m.name == "supply" for a in m.active()])
    assert len(groups) == 1
    assert groups[0].count == len(supply)


def test_commanded_switching_is_not_an_alarm(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid))
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker = feeder_breaker(grid)
    name = str(grid.switch_names[breaker])
    cycle.command_switch(name, closed=False)
    opened = dict(readings)
    opened[f"{name}/switch"] = Measurement(f"{name}/switch", T0, 0.0, 0)
    result = cycle.run(opened, T0 + timedelta(seconds=2))
    assert not [e for e in result.alarm_events if e.monitor == "switch"]
    with pytest.raises(InputError, match="unknown switch"):
        cycle.command_switch("no such switch", closed=True)


def test_bad_and_stale_points_are_not_used_and_raise_telemetry_alarms(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid))
    readings = field_readings(grid, T0)
    volt = next(p for p in readings if p.endswith("/u"))
    readings[volt] = Measurement(volt, T0, 5 * readings[volt].value, int(Quality.INVALID))  # invalid: must not be used
    stale = next(p for p in readings if p.endswith("/p"))
    readings[stale] = Measurement(stale, T0, readings[stale].value, int(Quality.STALE))
    result = cycle.run(readings, T0)
    assert result.bad_points == 2
    truth = run_power_flow(grid)
    assert np.abs(result.estimation.output["node"]["u_pu"] - truth.output["node"]["u_pu"]).max() < 1e-4
    raised = {e.channel for e in result.alarm_events if e.monitor == "telemetry" and e.transition == Transition.RAISED}
    assert raised == {volt, stale}


def test_points_that_do_not_match_the_grid_are_named(grid: Grid) -> None:
    with pytest.raises(InputError) as err:
        RealTimeCycle(grid, {"x/u": ("no such element", "u"), "y/switch": ("nope", "switch")})
    assert "no such element" in str(err.value)
    assert "nope" in str(err.value)


def test_a_point_never_received_fails_only_after_the_grace_period(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid), settings=CycleSettings(telemetry_grace_s=10))
    readings = field_readings(grid, T0)
    missing = next(p for p in readings if p.endswith("/u"))
    del readings[missing]
    assert not [e for e in cycle.run(readings, T0).alarm_events if e.monitor == "telemetry"]
    assert not [e for e in cycle.run(readings, T0 + timedelta(seconds=8)).alarm_events if e.monitor == "telemetry"]
    late = [e for e in cycle.run(readings, T0 + timedelta(seconds=10)).alarm_events if e.monitor == "telemetry"]
    assert [(e.channel, e.transition) for e in late] == [(missing, Transition.RAISED)]


def test_an_unobservable_estimate_is_itself_an_alarm(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid), settings=CycleSettings(telemetry_grace_s=5))
    result = cycle.run({}, T0)  # no telemetry at all: only pseudo-measurements, no voltage reference
    assert not result.observable
    assert not [e for e in result.alarm_events if e.monitor == "system"]  # start-up: values still on their way
    result = cycle.run({}, T0 + timedelta(seconds=6))
    raised = [(e.monitor, e.channel) for e in result.alarm_events if e.transition == Transition.RAISED]
    assert ("system", "state estimation") in raised
    healthy = cycle.run(field_readings(grid, T0), T0 + timedelta(seconds=8))
    cleared = [(e.monitor, e.channel) for e in healthy.alarm_events if e.transition == Transition.CLEARED]
    assert ("system", "state estimation") in cleared


# -- issue 8: floods grouped under their cause, designed suppression, chattering defaults, restarts -----------
def _feeder_labels(grid: Grid) -> np.ndarray:
    topo = analyse_topology(grid)
    names = dict(zip(topo.feeders.id.tolist(), topo.feeders.name.tolist(), strict=True))
    return np.array([names.get(int(f)) for f in topo.node_feeder], dtype=object)


def _tripped(grid: Grid, readings: dict[str, Measurement], when: datetime) -> tuple[str, dict[str, Measurement]]:
    name = str(grid.switch_names[feeder_breaker(grid)])
    tripped = dict(readings)
    tripped[f"{name}/switch"] = Measurement(f"{name}/switch", when, 0.0, 0)
    return name, tripped


def test_a_trip_is_one_group_headed_by_the_breaker_with_its_consequences_under_it(grid: Grid) -> None:
    from opendso.operations.alarms import count_alarms

    cycle = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker, tripped = _tripped(grid, readings, T0)
    result = cycle.run(tripped, T0 + timedelta(seconds=2))
    supply = [e for e in result.alarm_events if e.monitor == "supply"]
    assert len(supply) > 5
    assert all(e.cause == f"switch:{breaker}" for e in supply)  # the event log names the cause too
    groups = group_alarms([a for m in cycle.monitors for a in m.active()])
    (group,) = [g for g in groups if g.count > 1]
    assert group.head.key == f"switch:{breaker}"  # the cause heads: before, the breaker stood outside the group
    assert {a.key for a in group.alarms[1:]} == {e.key for e in supply}
    assert group.count == len(supply) + 1
    assert count_alarms(cycle.monitors).standing == group.count


def test_commanded_switching_suppresses_its_consequences_by_design(grid: Grid) -> None:
    from opendso.operations.alarms import count_alarms

    cycle = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker, opened = _tripped(grid, readings, T0)
    cycle.command_switch(breaker, closed=False)
    result = cycle.run(opened, T0 + timedelta(seconds=2))
    supply = [e for e in result.alarm_events if e.monitor == "supply"]
    assert supply, "the loss of supply is still logged"
    assert all(e.suppressed and not e.announced for e in supply)
    counts = count_alarms(cycle.monitors)
    assert (counts.standing, counts.unacknowledged, counts.suppressed) == (0, 0, len(supply))
    reasons = {a.suppressed_reason for m in cycle.monitors for a in m.listed()}
    assert reasons == {f"intended switching: {breaker} opened on command"}
    # closed again on command: supply returns, nothing is left to acknowledge
    cycle.command_switch(breaker, closed=True)
    cycle.run(readings, T0 + timedelta(seconds=4))
    assert count_alarms(cycle.monitors) == type(counts)()


def test_an_area_under_a_permit_is_suppressed_by_design_until_released(grid: Grid) -> None:
    from opendso.errors import AlarmStateError
    from opendso.operations.alarms import count_alarms

    cycle = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker, tripped = _tripped(grid, readings, T0)
    area = cycle.switching.groups[list(cycle.switching.channels).index(breaker)]
    assert area in cycle.areas()
    with pytest.raises(InputError, match="no alarm area"):
        cycle.suppress_area("no such feeder", reason="permit 12", actor="eng", time=T0)
    cycle.suppress_area(area, reason="permit 12", actor="eng", time=T0)
    with pytest.raises(AlarmStateError, match="suppressed already"):
        cycle.suppress_area(area, reason="permit 12", actor="eng", time=T0)
    result = cycle.run(tripped, T0 + timedelta(seconds=2))
    assert [e for e in result.alarm_events if e.announced] == []  # the whole feeder is under the permit
    counts = count_alarms(cycle.monitors)
    assert counts.standing == 0
    assert counts.suppressed > 5
    released = cycle.release_area(area, time=T0 + timedelta(seconds=3))
    raised = [e for e in released if e.announced]
    assert {e.key for e in raised} >= {f"switch:{breaker}"}  # still active: announced again
    assert count_alarms(cycle.monitors).unacknowledged == counts.suppressed


#: The alarm settings before issue 8: a 0.005 p.u. deadband and no delays.
OLD_VOLTAGE_ALARMS = CycleSettings(voltage_deadband_pu=0.005, alarm_delay_s=0.0, alarm_off_delay_s=0.0)


def test_default_deadband_and_delay_stop_voltage_chattering_at_the_limit(grid: Grid) -> None:
    """Nodes near 1.05 p.u. with the voltage class's noise (0.5 %), estimated every cycle for ten minutes."""
    rng = np.random.default_rng(8)
    n = grid.count("node")
    period = CycleSettings().period_s
    for mean in (1.045, 1.05, 1.055):
        noise = rng.normal(0.0, 0.005, (300, n))
        old = RealTimeCycle(grid, points_of(grid), settings=OLD_VOLTAGE_ALARMS)
        new = RealTimeCycle(grid, points_of(grid))
        raised = {"old": 0, "new": 0}
        chattering = {"old": 0, "new": 0}
        for k in range(300):
            when = T0 + timedelta(seconds=period * k)
            u = np.full(n, mean) + noise[k]
            for name, cycle in (("old", old), ("new", new)):
                events = cycle.voltage.update_values(when, u)
                raised[name] += sum(e.transition == Transition.RAISED for e in events)
                chattering[name] += sum(e.transition == Transition.CHATTERING for e in events)
        assert chattering["old"] > n // 4, (mean, chattering)  # the old defaults chattered
        assert chattering["new"] == 0, (mean, chattering)
        assert raised["new"] <= n, (mean, raised)  # at most one raise per node in ten minutes
        assert raised["old"] > 3 * n, (mean, raised)


def test_start_up_keeps_restored_alarms_until_the_switch_positions_are_in(grid: Grid) -> None:
    first = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    first.run(readings, T0)
    breaker, tripped = _tripped(grid, readings, T0)
    first.run(tripped, T0 + timedelta(seconds=2))
    first.switching.acknowledge(T0, breaker, actor="op")
    saved = {s.key: s for m in first.monitors for s in m.take_dirty()}
    # a restart: the state comes back, but the first readings lack the switch positions
    second = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid), settings=CycleSettings())
    for m in second.monitors:
        m.restore(saved)
    no_switches = {p: r for p, r in tripped.items() if not p.endswith("/switch")}
    early = second.run(no_switches, T0 + timedelta(seconds=60))
    assert [e for e in early.alarm_events if e.monitor in ("supply", "switch")] == []
    later = second.run(tripped, T0 + timedelta(seconds=62))
    assert [e for e in later.alarm_events if e.announced] == []  # still active: no new announcement
    assert second.switching.acknowledged[list(second.switching.channels).index(breaker)]


def test_an_auto_reclose_sequence_announces_every_trip_of_the_breaker(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    cycle.run(readings, T0)
    breaker, tripped = _tripped(grid, readings, T0)
    announced = []
    for k in range(1, 8):  # trip, reclose, trip, reclose, ... lockout, all within half a minute
        result = cycle.run(tripped if k % 2 else readings, T0 + timedelta(seconds=4 * k))
        announced += [e for e in result.alarm_events if e.announced and e.key == f"switch:{breaker}"]
    assert len(announced) == 4  # every trip, the lockout included, reaches the operator
    assert not cycle.switching.chattering.any()


# -- issue 9: one binding, values scattered by point index ----------------------------------------------------
def test_latest_values_as_arrays_and_as_a_mapping_give_the_same_cycle(grid: Grid) -> None:
    from opendso.measurement import LatestValues

    by_arrays = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    by_mapping = RealTimeCycle(grid, points_of(grid), feeder_of_node=_feeder_labels(grid))
    readings = field_readings(grid, T0)
    bad = next(p for p in readings if p.endswith("/q"))
    readings[bad] = Measurement(bad, T0, 1.0, int(Quality.INVALID))
    readings["not a point"] = Measurement("not a point", T0, float("nan"))
    _, tripped = _tripped(grid, readings, T0)
    for k, values in enumerate([readings, tripped, tripped]):
        now = T0 + timedelta(seconds=2 * k)
        latest = LatestValues(by_arrays.binding.names)
        latest.update(values.values())
        a, b = by_arrays.run(latest.snapshot(), now), by_mapping.run(values, now)
        assert [e.to_dict() for e in a.alarm_events] == [e.to_dict() for e in b.alarm_events]
        assert (a.used_points, a.bad_points, a.switch_changes) == (b.used_points, b.bad_points, b.switch_changes)
        assert a.bad_points == 2  # the invalid point and the unknown one without a value
        assert np.array_equal(a.estimation.output["node"]["u_pu"], b.estimation.output["node"]["u_pu"])


def test_points_the_cycle_cannot_use_are_named_together_and_others_are_ignored(grid: Grid) -> None:
    from opendso.errors import PointMapError

    points = points_of(grid)
    line = str(grid.names_of("line")[0])
    points["line/tap"] = (line, "tap")  # not an input of the estimate: ignored
    points["line/fpi"] = (line, "fpi")
    cycle = RealTimeCycle(grid, points)
    assert "line/tap" not in cycle.telemetry.channels.tolist()
    gen = str(grid.names_of("sym_gen")[0])
    points["gen/p"] = (gen, "p")  # a generator's own p is no placement of the estimate
    points["x/u"] = ("no such bus", "u")
    with pytest.raises(PointMapError) as info:
        RealTimeCycle(grid, points)
    assert [f.point for f in info.value.findings] == ["gen/p", "x/u"]
    assert "the real-time cycle cannot use 'p'" in str(info.value)
