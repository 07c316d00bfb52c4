"""The event-driven cycle: a switch change in the field runs topology, estimation and alarms at once.

The schedule itself (:class:`~opendso.operations.monitor.CycleSchedule`) is pure and tested on a
made-up clock. The monitor is tested end to end with an in-process adapter and a long period
(30 s), so that a cycle within a few seconds can only be an extra (switch) one; waits are bounded
by a fraction of that period, never guessed from how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from opendso.grid.model import Grid
from opendso.measurement import LatestValues, Measurement
from opendso.operations.cycle import CycleResult, CycleSettings
from opendso.operations.monitor import EVENT_CYCLE_COVERS, CycleSchedule, Monitor
from opendso.quality import Quality
from opendso.store import Historian
from opendso.telemetry import InProcessAdapter, point_map_for_grid

CODE = "simbench:1-MV-urban--0-sw"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
#: long enough that a cycle seen within a fraction of it can only be an extra one
PERIOD_S = 30.0
#: how long a test waits for something that must happen at once: a sixth of the period
SOON_S = PERIOD_S / 6


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


# -- the latest values say what changed ---------------------------------------------------------------------
def test_an_update_returns_the_points_whose_value_or_quality_changed() -> None:
    latest = LatestValues(["a", "b", "c"])
    first = latest.update([Measurement("a", T0, 1.0), Measurement("b", T0, np.nan, Quality.IV)])
    assert sorted(first.tolist()) == [0, 1]  # a first value is a change, NaN too
    later = T0 + timedelta(seconds=1)
    again = latest.update([Measurement("a", later, 1.0), Measurement("b", later, np.nan, Quality.IV)])
    assert again.size == 0  # the same value and quality again (NaN equals NaN)
    assert latest.update([Measurement("a", later, 1.0, Quality.NT)]).tolist() == [0]  # quality alone
    assert latest.update([Measurement("a", T0, 0.0)]).size == 0  # older than the one held: not taken
    assert latest.update([Measurement("x", later, 5.0)]).size == 0  # not one of the points
    assert latest.update([]).size == 0


def test_a_large_update_returns_the_changed_points_too() -> None:
    names = [f"p{k}" for k in range(50)]
    latest = LatestValues(names)
    assert latest.update(Measurement(n, T0, float(k)) for k, n in enumerate(names)).size == 50
    later = T0 + timedelta(seconds=1)
    batch = [Measurement(n, later, float(k) + (k in (3, 17)), Quality.GOOD) for k, n in enumerate(names)]
    batch[40] = Measurement("p40", later, 40.0, Quality.NT)
    assert sorted(latest.update(batch).tolist()) == [3, 17, 40]
    assert latest.value[3] == 4.0
    assert latest.quality[40] == Quality.NT


# -- the schedule, on a made-up clock -----------------------------------------------------------------------
def test_the_schedule_runs_on_the_period_and_waits_in_between() -> None:
    s = CycleSchedule(2.0, start=100.0)
    assert s.next(100.0, pending=False) == ("period", 0.0, 0)
    trigger, wait, skipped = s.next(100.5, pending=False)
    assert (trigger, skipped) == (None, 0)
    assert wait == pytest.approx(1.5)
    assert s.next(102.0, pending=False).trigger == "period"


def test_a_switch_change_runs_an_extra_cycle_at_once_without_moving_the_deadlines() -> None:
    s = CycleSchedule(2.0, start=0.0)
    s.next(0.0, pending=False)
    assert s.next(0.7, pending=True) == ("switch", 0.0, 0)
    decision = s.next(0.75, pending=False)  # after the extra cycle: the periodic deadline is still 2.0
    assert decision.trigger is None
    assert decision.wait_s == pytest.approx(1.25)
    assert s.next(2.0, pending=False).trigger == "period"


def test_a_periodic_cycle_due_right_after_an_extra_one_is_left_out() -> None:
    s = CycleSchedule(2.0, start=0.0)
    s.next(0.0, pending=False)
    just_before = 2.0 - EVENT_CYCLE_COVERS * 2.0 + 0.01
    assert s.next(just_before, pending=True).trigger == "switch"
    decision = s.next(2.05, pending=False)  # the periodic cycle due at 2.0 would follow the extra one
    assert decision.trigger is None
    assert decision.skipped == 1
    assert decision.wait_s == pytest.approx(1.95)  # the next deadline stays on the grid: 4.0
    assert s.next(4.0, pending=False).trigger == "period"


def test_a_periodic_cycle_well_after_an_extra_one_runs() -> None:
    s = CycleSchedule(2.0, start=0.0)
    s.next(0.0, pending=False)
    assert s.next(1.0, pending=True).trigger == "switch"
    assert s.next(2.0, pending=False) == ("period", 0.0, 0)


def test_a_due_periodic_cycle_serves_a_waiting_switch_change() -> None:
    s = CycleSchedule(2.0, start=0.0)
    s.next(0.0, pending=False)
    assert s.next(2.1, pending=True).trigger == "period"  # the monitor clears the change: one cycle
    decision = s.next(2.2, pending=False)
    assert decision.trigger is None
    assert decision.wait_s == pytest.approx(1.8)  # a late start keeps the grid: 4.0


def test_an_overrun_starts_the_next_cycle_at_once_and_missed_deadlines_are_skipped() -> None:
    s = CycleSchedule(2.0, start=0.0)
    s.next(0.0, pending=False)
    assert s.next(2.5, pending=False) == ("period", 0.0, 0)  # the cycle from 0.0 overran: at once
    assert s.next(3.0, pending=False).wait_s == pytest.approx(1.0)  # next on the grid: 4.0
    assert s.next(9.3, pending=False).trigger == "period"  # 4, 6 and 8 were missed: not made up
    assert s.next(9.4, pending=False).wait_s == pytest.approx(1.9)


# -- the monitor ----------------------------------------------------------------------------------------------
class Cycles:
    """A subscriber that keeps every result and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.results: list[CycleResult] = []
        self._arrived = asyncio.Event()

    def __call__(self, result: CycleResult) -> None:
        self.results.append(result)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = SOON_S) -> CycleResult:
        async with asyncio.timeout(timeout):
            while len(self.results) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.results[count - 1]

    def triggers(self) -> list[str]:
        return [r.trigger for r in self.results]


class Field:
    """A monitor on the grid, fed in-process: the field's values are in before it starts."""

    def __init__(self, grid: Grid, folder: Path, *, event_driven: bool = True) -> None:
        from conftest import feeder_breaker
        from test_cycle import field_readings

        self.point_map = point_map_for_grid(grid, protocol="mqtt")
        self.historian = Historian.open(f"sqlite:///{folder / 'h.db'}")
        self.adapter = InProcessAdapter(name="field")
        self.cycles = Cycles()
        self.monitor = Monitor(
            grid,
            self.point_map,
            self.historian,
            [self.adapter],
            settings=CycleSettings(period_s=PERIOD_S, event_driven=event_driven),
            on_cycle=self.cycles,
        )
        known = {p.name for p in self.point_map.points}
        self.monitor.latest = {k: m for k, m in field_readings(grid, T0).items() if k in known}
        self.breaker = f"{grid.switch_names[feeder_breaker(grid)]}/switch"
        self.analog = next(p.name for p in self.point_map.points if p.quantity != "switch")
        self.time = T0

    def at(self, point: str, value: float, quality: int = Quality.GOOD) -> Measurement:
        self.time += timedelta(milliseconds=10)
        return Measurement(point, self.time, value, quality)

    async def accepted(self, measurements: int) -> None:
        """Wait until the monitor has taken ``measurements`` measurements in all (batches may merge)."""
        async with asyncio.timeout(SOON_S):
            while self.monitor.stats.measurements < measurements:
                await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def field(grid: Grid, tmp_path: Path) -> AsyncIterator[Field]:
    f = Field(grid, tmp_path)
    task = asyncio.create_task(f.monitor.run())
    try:
        await f.cycles.wait_for(1)  # the first periodic cycle, at the start
        yield f
    finally:
        f.monitor.stop()
        await task
        f.historian.close()


@pytest.mark.asyncio
async def test_a_switch_change_runs_a_cycle_well_before_the_period(field: Field) -> None:
    t0 = time.perf_counter()
    await field.adapter.push([field.at(field.breaker, 0.0)])
    result = await field.cycles.wait_for(2)
    assert time.perf_counter() - t0 < SOON_S
    assert field.cycles.triggers() == ["period", "switch"]
    assert result.summary()["trigger"] == "switch"
    assert result.switch_changes == [field.breaker.removesuffix("/switch")]
    assert any(e.monitor == "switch" for e in result.alarm_events)  # the alarms ran in it too
    assert field.monitor.stats.event_cycles == 1
    assert field.monitor.stats.switch_changes == 1
    assert field.monitor.stats.cycles == 2


@pytest.mark.asyncio
async def test_a_burst_of_switch_changes_costs_at_most_two_extra_cycles(field: Field) -> None:
    """A storm: 100 switches open one after the other while a (deliberately slow) cycle runs."""
    burst_taken = threading.Event()  # a cycle holds until the whole burst has arrived: as slow as it takes
    real = field.monitor.run_cycle

    def slow(now: datetime | None = None) -> CycleResult:
        result = real(now)  # reads the values at its start, as a cycle does
        burst_taken.wait(SOON_S)
        return result

    field.monitor.run_cycle = slow  # type: ignore[method-assign]
    grid = field.monitor.cycle.grid
    rows = np.flatnonzero(grid.switches["closed"] == 1)[:100]
    assert rows.size == 100
    seen_all: list[bool] = []  # per result: did its cycle see every switch open?
    field.monitor.subscribe(
        lambda _: seen_all.append(bool((field.monitor.cycle.grid.switches["closed"][rows] == 0).all()))
    )
    for row in rows.tolist():
        await field.adapter.push([field.at(f"{grid.switch_names[row]}/switch", 0.0)])
        await asyncio.sleep(0.002)  # one change after the other, most of them a batch of their own
    await field.accepted(100)
    asked = field.monitor.stats.switch_changes
    burst_taken.set()
    assert asked > 2  # many batches each asked for a cycle
    # coalescing loses nothing: a cycle sees the last change (the running one, or the one extra after it)
    async with asyncio.timeout(SOON_S):
        while not any(seen_all):
            await field.cycles.wait_for(len(field.cycles.results) + 1)
    # had another extra cycle been pending, it would have started at once (and cycles are fast again)
    await asyncio.sleep(SOON_S / 5)
    triggers = field.cycles.triggers()
    assert triggers.count("period") == 1
    assert triggers.count("switch") in (1, 2), triggers
    assert field.monitor.stats.event_cycles == triggers.count("switch")


@pytest.mark.asyncio
async def test_an_analog_change_waits_for_the_period(field: Field) -> None:
    value = field.monitor.latest.value[field.monitor.latest.index[field.analog]]
    await field.adapter.push([field.at(field.analog, float(value) * 1.05)])
    await field.accepted(1)
    assert field.monitor.stats.switch_changes == 0
    await asyncio.sleep(SOON_S / 5)  # a cycle would have run by now; none may
    assert field.cycles.triggers() == ["period"]


@pytest.mark.asyncio
async def test_a_repeated_switch_value_runs_no_cycle(field: Field) -> None:
    closed = field.monitor.latest[field.breaker].value
    for _ in range(3):
        await field.adapter.push([field.at(field.breaker, closed)])
        await asyncio.sleep(0)
    await field.accepted(3)
    assert field.monitor.stats.switch_changes == 0
    await asyncio.sleep(SOON_S / 5)
    assert field.cycles.triggers() == ["period"]
    # a change of quality alone is a change: the switch's state is no longer known
    await field.adapter.push([field.at(field.breaker, closed, Quality.NT)])
    await field.cycles.wait_for(2)
    assert field.cycles.triggers() == ["period", "switch"]


@pytest.mark.asyncio
async def test_a_subscriber_that_raises_stops_no_extra_cycle(field: Field, caplog: pytest.LogCaptureFixture) -> None:
    def broken(result: CycleResult) -> None:
        raise RuntimeError("a subscriber's own bug")

    field.monitor.subscribe(broken)
    after = Cycles()
    field.monitor.subscribe(after)
    with caplog.at_level("ERROR", logger="opendso.operations.monitor"):
        await field.adapter.push([field.at(field.breaker, 0.0)])
        await after.wait_for(1)
        await field.adapter.push([field.at(field.breaker, 1.0)])
        await after.wait_for(2)
    assert after.triggers() == ["switch", "switch"]
    assert field.cycles.triggers() == ["period", "switch", "switch"]
    assert sum("cycle_subscriber_failed" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.asyncio
async def test_switch_changes_wait_for_the_period_when_event_driven_is_off(grid: Grid, tmp_path: Path) -> None:
    f = Field(grid, tmp_path, event_driven=False)
    task = asyncio.create_task(f.monitor.run())
    try:
        await f.cycles.wait_for(1)
        await f.adapter.push([f.at(f.breaker, 0.0)])
        await f.accepted(1)
        assert f.monitor.stats.switch_changes == 0
        await asyncio.sleep(SOON_S / 5)
        assert f.cycles.triggers() == ["period"]
    finally:
        f.monitor.stop()
        await task
        f.historian.close()


def test_a_cycle_run_directly_is_a_periodic_one(grid: Grid, tmp_path: Path) -> None:
    f = Field(grid, tmp_path)
    try:
        result = f.monitor.run_cycle(T0)
        assert result.trigger == "period"
        assert result.summary()["trigger"] == "period"
        assert (f.monitor.stats.cycles, f.monitor.stats.event_cycles) == (1, 0)
        f.monitor.accept([f.at(f.breaker, 0.0)])  # no cycle task runs: nothing to wake, nothing fails
        assert f.monitor.stats.switch_changes == 1
    finally:
        f.historian.close()


@pytest.mark.asyncio
async def test_a_switch_change_taken_in_another_thread_wakes_the_cycle(field: Field) -> None:
    await asyncio.to_thread(field.monitor.accept, [field.at(field.breaker, 0.0)])
    result = await field.cycles.wait_for(2)
    assert result.trigger == "switch"


def test_opendso_run_takes_a_point_map_of_any_protocol_and_the_event_driven_switch(
    grid_of: Callable[[str], Grid], tmp_path: Path
) -> None:
    from opendso.runtime import ControlRoomProcess, free_port
    from opendso.telemetry.iec104 import Iec104Client

    demo = grid_of("demo")
    points = point_map_for_grid(demo, protocol="iec104", port=free_port())
    process = ControlRoomProcess(demo, tmp_path, points=points, event_driven=False, port=None)
    try:
        assert process.point_map is points
        assert [type(a) for a in process.monitor.adapters] == [Iec104Client]
        assert process.monitor.settings.event_driven is False
    finally:
        process.historian.close()
    default = ControlRoomProcess(demo, tmp_path / "default", port=None)
    try:
        assert default.monitor.settings.event_driven is True
        assert {s.protocol for s in default.point_map.sources.values()} == {"modbus"}
    finally:
        default.historian.close()
