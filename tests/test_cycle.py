"""The real-time cycle on a SimBench MV grid: telemetry -> topology -> state estimation -> alarms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import feeder_breaker

from opendso.calc.estimation import measurements_from_power_flow
from opendso.calc.powerflow import run_power_flow
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.alarms import Transition, group_alarms
from opendso.operations.cycle import CycleSettings, Reading, RealTimeCycle, is_raise
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


def field_readings(grid: Grid, when: datetime) -> dict[str, Reading]:
    """What the field reports: exact values of a power flow of the true state at every placement."""
    truth = run_power_flow(grid)
    meas = measurements_from_power_flow(grid, truth, noise=0.0, rng=np.random.default_rng(0), pseudo_loads=False)
    readings: dict[str, Reading] = {}
    for component, quantities in FIELDS.items():
        names = grid.names.get(component)
        if names is None or component not in meas:
            continue
        by_id = {int(i): row for row, i in enumerate(meas[component]["id"])}
        for row, (sid, name) in enumerate(zip(grid.sensors[component]["id"], names, strict=True)):
            del row
            for q, fld in quantities.items():
                value = float(meas[component][fld][by_id[int(sid)]])
                readings[f"{name}/{q}"] = Reading(value, 0, when)
    for name, closed in zip(grid.switch_names, grid.switches["closed"], strict=True):
        readings[f"{name}/switch"] = Reading(float(closed), 0, when)
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
    tripped[f"{name}/switch"] = Reading(0.0, 0, T0 + timedelta(seconds=2))
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
    opened[f"{name}/switch"] = Reading(0.0, 0, T0)
    result = cycle.run(opened, T0 + timedelta(seconds=2))
    assert not [e for e in result.alarm_events if e.monitor == "switch"]
    with pytest.raises(InputError, match="unknown switch"):
        cycle.command_switch("no such switch", closed=True)


def test_bad_and_stale_points_are_not_used_and_raise_telemetry_alarms(grid: Grid) -> None:
    cycle = RealTimeCycle(grid, points_of(grid))
    readings = field_readings(grid, T0)
    volt = next(p for p in readings if p.endswith("/u"))
    readings[volt] = Reading(5 * readings[volt].value, int(Quality.INVALID), T0)  # invalid: must not be used
    stale = next(p for p in readings if p.endswith("/p"))
    readings[stale] = Reading(readings[stale].value, int(Quality.STALE), T0)
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
