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


@pytest.fixture(scope="session")
def grid_of() -> Callable[[str], Grid]:
    """Return a loader that reads each grid source once per test session."""
    return _cached_grid
