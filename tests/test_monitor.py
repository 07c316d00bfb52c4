"""The headless monitor: adapters -> historian -> cycle -> alarms -> event log, with an in-process adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.cycle import CycleResult, CycleSettings
from opendso.operations.monitor import Monitor
from opendso.store import Historian
from opendso.telemetry import InProcessAdapter, point_map_for_grid

CODE = "simbench:1-MV-urban--0-sw"


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


def _field(grid: Grid, when: datetime) -> list[Measurement]:
    from test_cycle import field_readings

    return [Measurement(point, when, r.value, r.quality) for point, r in field_readings(grid, when).items()]


@pytest.mark.asyncio
async def test_monitor_stores_everything_and_logs_a_breaker_trip(grid: Grid, tmp_path: Path) -> None:
    from conftest import feeder_breaker

    point_map = point_map_for_grid(grid, protocol="mqtt")
    historian = Historian.open(f"sqlite:///{tmp_path / 'h.db'}")
    adapter = InProcessAdapter(name="field")
    cycles: list[CycleResult] = []
    monitor = Monitor(
        grid, point_map, historian, [adapter], settings=CycleSettings(period_s=0.2), on_cycle=cycles.append
    )
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    known = {p.name for p in point_map.points}
    first = [m for m in _field(grid, t0) if m.point in known]
    breaker = str(grid.switch_names[feeder_breaker(grid)])

    async def feed() -> None:
        await adapter.push(first)
        await asyncio.sleep(0.5)
        await adapter.push([Measurement(f"{breaker}/switch", t0 + timedelta(seconds=2), 0.0)])
        await asyncio.sleep(0.6)
        monitor.stop()

    await asyncio.gather(monitor.run(duration_s=10), feed())
    assert monitor.stats.measurements == len(first) + 1
    assert historian.count() == len(first) + 1  # every measurement is in the historian
    assert cycles
    assert cycles[0].observable
    kinds = [e.kind for e in historian.events.read()]
    assert "alarm.raised" in kinds
    raised = [e for e in historian.events.read() if e.kind == "alarm.raised"]
    assert any(e.payload["monitor"] == "supply" for e in raised)
    assert any(e.payload["monitor"] == "switch" and e.payload["channel"] == breaker for e in raised)
    seqs = [e.seq for e in historian.events.read()]
    assert seqs == sorted(seqs)
    historian.close()
