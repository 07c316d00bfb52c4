"""Outage records from the telemetry: every interruption the cycle sees opens one, returning supply restores it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import feeder_breaker

from opendso.grid.customers import customer_counts
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.outage_tracker import OutageTracker
from opendso.store import migrate
from opendso.store.engine import create_engine
from opendso.store.outages import OutageStore

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Cycle:
    switch_changes: list[str]
    time: datetime


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("simbench:1-MV-rural--0-sw")


def test_an_interruption_is_recorded_and_restored_from_what_the_cycles_see(grid: Grid, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    migrate.upgrade(engine)
    store = OutageStore(engine)
    now = {"grid": grid}
    picked: set[str] = set()
    tracker = OutageTracker(store, lambda: now["grid"], fault_current=lambda s: s in picked)
    row = feeder_breaker(grid)
    name = str(grid.switch_names[row])

    def switch(closed: bool, at: datetime) -> None:
        states = now["grid"].switches["closed"].copy()
        states[row] = int(closed)
        now["grid"] = now["grid"].with_switch_states(states)
        tracker.on_cycle(Cycle([name], at))  # type: ignore[arg-type]

    # an opening without fault current: planned switching
    switch(False, T0)
    (planned,) = store.open_outages()
    assert planned.source == "planned"
    # independently: the customers of the loads the opening de-energised
    dead = ~analyse_topology(now["grid"]).node_energised
    loads = grid.component("sym_load")
    at_dead = dead[grid.node_positions(loads["node"])]
    assert planned.customers == int(customer_counts(grid)[at_dead].sum()) > 0
    switch(True, T0 + timedelta(minutes=30))
    restored = store.get(planned.id or -1)
    assert restored.state == "restored"
    assert restored.end == T0 + timedelta(minutes=30)
    assert restored.customers_off == 0
    # a trip (the breaker's indicator saw fault current)
    picked.add(name)
    switch(False, T0 + timedelta(hours=2))
    (trip,) = store.open_outages()
    assert trip.source == "trip"
    assert tracker.outage_of(name) == trip.id
    # a change that interrupts and restores nothing (a tie closed between live parts) opens nothing
    live = analyse_topology(now["grid"]).node_energised

    def closed_too(r: int) -> Grid:
        states = now["grid"].switches["closed"].copy()
        states[r] = 1
        return now["grid"].with_switch_states(states)

    other = next(
        int(r)
        for r in np.flatnonzero(now["grid"].switches["closed"] == 0)
        if r != row and np.array_equal(analyse_topology(closed_too(int(r))).node_energised, live)
    )
    now["grid"] = closed_too(other)
    tracker.on_cycle(Cycle([str(grid.switch_names[other])], T0 + timedelta(hours=3)))  # type: ignore[arg-type]
    assert [o.id for o in store.open_outages()] == [trip.id]
    assert store.get(trip.id or -1).customers_off == trip.customers  # nor restores the trip's customers
