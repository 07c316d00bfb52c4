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


@pytest.mark.asyncio
async def test_every_subscriber_gets_every_cycle_and_one_that_raises_stops_nothing(
    grid: Grid, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    point_map = point_map_for_grid(grid, protocol="mqtt")
    historian = Historian.open(f"sqlite:///{tmp_path / 'h.db'}")
    adapter = InProcessAdapter(name="field")
    first: list[CycleResult] = []
    last: list[CycleResult] = []

    def broken(result: CycleResult) -> None:
        raise RuntimeError("a subscriber's own bug")

    monitor = Monitor(
        grid, point_map, historian, [adapter], settings=CycleSettings(period_s=0.1), on_cycle=[first.append, broken]
    )
    monitor.subscribe(last.append)
    assert monitor.subscribers == (first.append, broken, last.append)
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    known = {p.name for p in point_map.points}

    async def feed() -> None:
        await adapter.push([m for m in _field(grid, t0) if m.point in known])
        while len(last) < 3:
            await asyncio.sleep(0.05)
        monitor.stop()

    with caplog.at_level("ERROR", logger="opendso.operations.monitor"):
        await asyncio.gather(monitor.run(duration_s=30), feed())
    assert len(first) == len(last) >= 3  # the cycles went on, and the subscriber after the broken one got each
    assert [r.time for r in first] == [r.time for r in last]
    failures = [r for r in caplog.records if "cycle_subscriber_failed" in r.getMessage()]
    assert len(failures) == len(first)
    assert "broken" in failures[0].getMessage()
    historian.close()


def test_the_latest_values_are_arrays_by_point_index_and_can_be_replaced(grid: Grid, tmp_path: Path) -> None:
    point_map = point_map_for_grid(grid, protocol="mqtt")
    historian = Historian.open(f"sqlite:///{tmp_path / 'h.db'}")
    monitor = Monitor(grid, point_map, historian, [InProcessAdapter(name="field")])
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    name = point_map.points[3].name
    monitor.accept([Measurement(name, t0, 5.0), Measurement(name, t0 - timedelta(seconds=1), 6.0)])
    assert monitor.latest.names == tuple(p.name for p in point_map.points)
    assert monitor.latest.value[3] == 5.0
    assert monitor.latest[name].value == 5.0
    assert (monitor.stats.measurements, monitor.stats.batches) == (2, 1)
    monitor.latest = {name: Measurement(name, t0, 7.0)}
    assert monitor.latest.value[3] == 7.0
    assert len(monitor.latest) == 1
    assert monitor.run_cycle(t0).bad_points == 0
    historian.close()
