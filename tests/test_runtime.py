"""`opendso run`'s process: simulator -> Modbus on loopback -> monitor -> historian, with the scripted demo day."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from opendso.grid.model import Grid
from opendso.operations.cycle import CycleResult
from opendso.runtime import ControlRoomProcess, demo_scenario, demo_start_step
from opendso.telemetry.scenario import ScenarioEvent, scenario_of


def test_demo_day_is_a_valid_scenario(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("demo")
    scenario = demo_scenario(grid)
    kinds = [e.kind for e in scenario.events]
    assert "pv_scale" in kinds
    assert "breaker_trip" in kinds
    assert grid.profiles is not None
    start = grid.profiles.time[demo_start_step(grid)]
    assert str(start).startswith("2016-06-21T05:00")


@pytest.mark.asyncio
async def test_control_room_process_runs_and_trips_a_breaker(grid_of: Callable[[str], Grid], tmp_path: Path) -> None:
    grid = grid_of("demo")
    day = demo_scenario(grid)
    trip = next(e for e in day.events if e.kind == "breaker_trip")
    # a short day: the breaker trips 60 simulated seconds (0.5 s real) in
    scenario = scenario_of([ScenarioEvent(60.0, "breaker_trip", switch=trip.switch)])
    cycles: list[CycleResult] = []
    process = ControlRoomProcess(grid, tmp_path, speed=120.0, period_s=0.5, scenario=scenario, on_cycle=cycles.append)
    await process.run(duration_s=6.0, install_signals=False)
    assert any(c.observable for c in cycles)
    assert any(trip.switch in c.switch_changes for c in cycles)
    reopened = process.historian.__class__.open(f"sqlite:///{tmp_path / 'opendso.db'}")
    try:
        assert reopened.count() > 0
        kinds = [e.kind for e in reopened.events.read()]
        assert "alarm.raised" in kinds
    finally:
        reopened.close()
