"""Shared fixtures: grids are loaded once per session (a SimBench grid takes seconds to read)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from opendso.grid.model import Grid
from opendso.grid.sources import load_grid

DATA = Path(__file__).parent / "data"
#: Login rate limits that functional tests, which log in many times from one address, do not reach
#: (the limits themselves are tested with their defaults in test_login_protection.py).
from opendso.service.login_gate import LoginLimits  # noqa: E402

UNLIMITED_LOGINS = LoginLimits(
    per_source_per_minute=1e6, per_source_burst=10_000, overall_per_minute=1e6, overall_burst=10_000
)
BROKER_URL = os.environ.get("OPENDSO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def require_service(reason: str | None) -> None:
    """Go on when ``reason`` is None; else a real server or tool the test needs is missing.

    The one policy for every test that needs PostgreSQL, an MQTT broker, c104 or Chromium: on a
    developer's machine without it the test is skipped with the reason; under ``CI=true`` (where
    the services run) it fails, so a suite that silently lost its real parts never passes.
    """
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def postgres_or_skip() -> None:
    """Require the PostgreSQL test server (see :func:`require_service`)."""
    from opendso.store.testing import postgres_unreachable_reason

    require_service(postgres_unreachable_reason())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in a temporary folder, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'opendso.db'}"
        return
    from opendso.store.testing import fresh_postgres_database

    postgres_or_skip()
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The MQTT broker of the tests (``OPENDSO_TEST_MQTT_URL``, default the local Mosquitto)."""
    import socket

    from opendso.telemetry.mqtt import broker_address

    host, port = broker_address(BROKER_URL)
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        require_service(f"MQTT broker {BROKER_URL} unreachable ({exc}); set OPENDSO_TEST_MQTT_URL")
    return BROKER_URL


@pytest.fixture(scope="session", autouse=True)
def _grid_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted grids are cached in a folder of this test session, never in the user's cache."""
    import os

    os.environ["OPENDSO_CACHE_DIR"] = str(tmp_path_factory.mktemp("opendso-cache"))
    # the data folder (integrity keys and anchors of server databases, buffers) is the test session's too
    os.environ["OPENDSO_DATA_DIR"] = str(tmp_path_factory.mktemp("opendso-data"))


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
