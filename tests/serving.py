"""Test helpers: a control-room app on a SimBench grid, served by uvicorn on loopback in a background thread.

Tests that need what only a real server does (peer addresses, forwarded headers, TLS, WebSocket
close codes) use :func:`serving`; the rest use Starlette's TestClient on the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import UNLIMITED_LOGINS
from fastapi import FastAPI
from test_cycle import field_readings, points_of

from opendso.grid.model import Grid
from opendso.operations.cycle import RealTimeCycle
from opendso.service import ControlRoom, Role, Security, ServiceSettings, create_app
from opendso.service.security import SecuritySettings
from opendso.service.server import WebServer, bind_socket
from opendso.store import Historian

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
#: Cheap hashing keeps the tests fast; the hash format (argon2id) is the same as in production.
FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


def control_room(grid: Grid, folder: Path, *, users: bool = True) -> ControlRoom:
    """A control room on ``grid`` with one cycle run, its database in ``folder``, and one user per role."""
    historian = Historian.open(f"sqlite:///{folder / 'opendso.db'}")
    points = points_of(grid)
    historian.register_points(list(points))
    room = ControlRoom(
        grid, historian, cycle=RealTimeCycle(grid, points), points=points, clock=lambda: T0 + timedelta(seconds=1)
    )
    room.run_cycle(field_readings(grid, T0), T0)
    if users:
        security = Security(historian.engine, settings=FAST)
        for role in Role:
            security.add_user(role.value, PASSWORD, [role.value])
    return room


def app_of(room: ControlRoom, **settings: object) -> FastAPI:
    """The service app of ``room`` with cheap hashing and no login rate limit unless ``settings`` say otherwise."""
    options: dict[str, object] = {"security": FAST, "login": UNLIMITED_LOGINS, **settings}
    return create_app(room, ServiceSettings(**options))  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(app: FastAPI, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on an ephemeral loopback port; yield the base URL; stop cleanly after."""
    sock = bind_socket("127.0.0.1", 0)
    server = WebServer(app, sock, tls_cert=tls_cert, tls_key=tls_key)
    ready = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def run() -> None:
        stop_box.append(asyncio.Event())
        loop_box.append(asyncio.get_running_loop())
        async with server:
            ready.set()
            await stop_box[0].wait()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name="test-web-service", daemon=True)
    thread.start()
    assert ready.wait(30), "the web service did not start"
    if failure:
        raise failure[0]
    try:
        yield server.url
    finally:
        loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(30)
        assert not thread.is_alive(), "the web service did not stop"
        if failure:
            raise failure[0]
