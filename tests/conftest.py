"""Shared fixtures: grids are loaded once per session (a SimBench grid takes seconds to read)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from opendso.grid.model import Grid
from opendso.grid.sources import load_grid

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _grid_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted grids are cached in a folder of this test session, never in the user's cache."""
    import os

    os.environ["OPENDSO_CACHE_DIR"] = str(tmp_path_factory.mktemp("opendso-cache"))


@cache
def _cached_grid(source: str) -> Grid:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_grid(source)


def feeder_breaker(grid: Grid) -> int:
    """Row of a closed switch whose opening de-energises part of exactly one feeder (a feeder breaker)."""
    import numpy as np

    from opendso.grid.topology import analyse_topology

    feeders = analyse_topology(grid).node_feeder
    for row in np.flatnonzero(grid.switches["closed"] == 1):
        closed = grid.switches["closed"].copy()
        closed[row] = 0
        dead = ~analyse_topology(grid.with_switch_states(closed)).node_energised
        if dead.sum() > 5 and len(set(feeders[dead].tolist())) == 1:
            return int(row)
    raise AssertionError(f"{grid.name}: no feeder breaker found")


@pytest.fixture(scope="session")
def grid_of() -> Callable[[str], Grid]:
    """Return a loader that reads each grid source once per test session."""
    return _cached_grid
