"""Trainer controls of the simulated clock and its time base (issue 8, items 19 and 23).

- :class:`TimeBase`: wall-clock instants map to one simulated time across start, pause, speed
  changes and jumps, and neither clock runs backwards.
- The field simulator's clock: pause holds it exactly, a jump lands exactly and the clock runs on
  from there (before, it stood still after a jump until the wall clock caught up), bad speeds are
  refused with nothing changed. The clock is driven by the trainer methods, not waited for.
- The API on `opendso run`'s process (one per module): viewer and operator are refused (403), the
  engineer pauses, resumes, sets the speed and jumps to the next scripted event; every action is
  audited and in the event log; bad speeds get 422 and change nothing; ``/api/status`` carries the
  time base the screens use.
- ``opendso trainer`` against the same process.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import UNLIMITED_LOGINS, _cached_grid

from opendso.demo import demo_scenario, demo_start_step
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.runtime import ControlRoomProcess
from opendso.service import ControlRoom, Security, ServiceSettings, create_app
from opendso.service.security import SecuritySettings
from opendso.store import Historian
from opendso.telemetry import FieldSimulator, point_map_for_grid
from opendso.telemetry.timebase import MAX_SPEED, TimeBase

FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
PASSWORD = "correct horse battery"
USERS = {"victor": "viewer", "olga": "operator", "erik": "engineer"}
ACTIONS = ("pause", "resume", "speed", "next")
#: How long a background clock may take to show a change on a busy machine (a deadline, not a threshold).
PATIENCE_S = 30.0


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


# -- the time base ---------------------------------------------------------------------------------------
def test_time_base_maps_every_wall_clock_instant_to_one_simulated_time() -> None:
    wall = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    sim = datetime(2016, 6, 21, 5, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    base = TimeBase()
    base.add(wall, sim, 60.0)  # start at 60x
    base.add(wall + 10 * s, sim + 600 * s, 0.0)  # paused at 05:10
    base.add(wall + 20 * s, sim + 600 * s, 600.0)  # resumed at 600x
    base.add(wall + 30 * s, sim + 10 * 3600 * s, 600.0)  # jumped to 15:00
    assert base.simulated_at(wall - s) is None  # before the simulation: no simulated time
    assert base.simulated_at(wall + 5 * s) == sim + 300 * s
    assert base.simulated_at(wall + 15 * s) == sim + 600 * s  # paused
    assert base.simulated_at(wall + 25 * s) == sim + 3600 * s  # 600 + 5 s x 600
    assert base.simulated_at(wall + 31 * s) == sim + (10 * 3600 + 600) * s
    # the inverse: the first wall-clock instant at or after a simulated time
    assert base.wall_at(sim + 300 * s) == wall + 5 * s
    assert base.wall_at(sim + 600 * s) == wall + 10 * s
    assert base.wall_at(sim + 5 * 3600 * s) == wall + 30 * s  # inside the jump: where it landed
    # neither clock runs backwards, whatever an anchor says
    back = base.add(wall + 29 * s, sim, 60.0)
    assert back.wall == wall + 30 * s
    assert back.simulated >= sim + 10 * 3600 * s
    assert [a["speed"] for a in base.to_dict()] == [60.0, 0.0, 600.0, 600.0, 60.0]


# -- the simulator's clock --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_simulator_clock_pauses_jumps_runs_on_and_refuses_bad_speeds(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("demo")
    scenario = demo_scenario(grid)
    sim = FieldSimulator(
        grid,
        point_map_for_grid(grid, protocol="modbus", port=5020),
        servers=[],
        speed=60.0,
        start_step=demo_start_step(grid),
        scenario=scenario,
        publish_period_s=0.05,
    )

    async def publishes(n: int) -> None:
        target = sim.counters.publishes + n
        deadline = time.monotonic() + PATIENCE_S
        while sim.counters.publishes < target:
            assert time.monotonic() < deadline, "the simulator stopped publishing"
            await asyncio.sleep(0.01)

    async with sim:
        assert sim.running
        assert len(sim.time_base) == 1
        assert sim.time_base.anchors[0].speed == 60.0
        assert sim.pause()
        assert not sim.pause()
        held = sim.elapsed_s
        await publishes(5)
        assert sim.elapsed_s == held  # paused: exactly still, however long
        assert sim.time_base.anchors[-1].speed == 0.0

        first = scenario.events[0]
        sim.jump_to(first.at_s)  # lands exactly, the event at that time has run, still paused
        assert sim.elapsed_s == first.at_s
        assert sim.counters.events == 1
        assert sim.simulated_clock() == sim.start_time + timedelta(seconds=first.at_s)
        with pytest.raises(InputError, match="never runs backwards"):
            sim.jump_to(held)
        assert sim.elapsed_s == first.at_s

        for bad in (0, -1.0, math.nan, math.inf, MAX_SPEED * 10, "60", True):
            with pytest.raises(InputError, match="speed"):
                sim.set_speed(bad)  # type: ignore[arg-type]
        assert sim.speed == 60.0
        sim.set_speed(600.0)
        assert sim.time_base.anchors[-1].speed == 0.0  # a paused clock stays paused at a new speed
        assert sim.resume()
        assert sim.time_base.anchors[-1].speed == 600.0
        # the clock runs on from where it jumped (it used to stand still until the wall clock caught up)
        deadline = time.monotonic() + PATIENCE_S
        while sim.elapsed_s <= first.at_s:
            assert time.monotonic() < deadline, "the clock did not run on after the jump"
            await asyncio.sleep(0.02)
        at = datetime.now(UTC)
        mapped = sim.simulated_time_at(at)
        assert mapped is not None
        assert mapped >= sim.start_time + timedelta(seconds=first.at_s)
    assert not sim.running
    assert sim.time_base.anchors[-1].speed == 0.0  # stopped: the clock keeps the time it stopped at


# -- the API -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoomProcess]:
    """`opendso run`'s process on the demo grid, its service on an ephemeral port, a viewer, operator and engineer."""
    process = ControlRoomProcess(
        _cached_grid("demo"),
        tmp_path_factory.mktemp("trainer"),
        port=0,
        period_s=0.5,
        admin_password="first admin password",
        service_settings=ServiceSettings(security=FAST, login=UNLIMITED_LOGINS),
    )
    security = Security(process.historian.engine, settings=FAST)
    for user, role in USERS.items():
        security.add_user(user, PASSWORD, [role], actor="admin")
    with process.in_thread():
        yield process


@pytest.fixture(scope="module")
def clients(room: ControlRoomProcess) -> Iterator[dict[str, httpx.Client]]:
    """One logged-in API client (bearer token) per user, and ``None``: not logged in."""
    assert room.url is not None
    made: dict[str, httpx.Client] = {}
    for user in [*USERS, "anonymous"]:
        client = httpx.Client(base_url=room.url, timeout=30)
        if user != "anonymous":
            answer = client.post("/api/auth/token", json={"username": user, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
            client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        made[user] = client
    yield made
    for client in made.values():
        client.close()


def _post(client: httpx.Client, action: str, speed: Any = 120.0) -> httpx.Response:
    if action == "speed":
        return client.post("/api/trainer/speed", json={"speed": speed})
    return client.post(f"/api/trainer/{action}")


def _trainer_records(room: ControlRoomProcess) -> list[Any]:
    return [r for r in room.room.audit.read(0, limit=100_000) if r.action.startswith("trainer.")]


def _clock(room: ControlRoomProcess) -> tuple[bool, float, int]:
    sim = room.simulator
    return room.call(lambda: (sim.paused, sim.speed, len(sim.time_base)))


def _running(room: ControlRoomProcess, speed: float = 60.0) -> None:
    """Put the clock back to running at ``speed`` (tests share one process)."""
    sim = room.simulator
    room.call(sim.set_speed, speed)
    room.call(sim.resume)


@pytest.mark.parametrize("user", ["victor", "olga"])
def test_viewer_and_operator_are_refused_every_trainer_action(
    room: ControlRoomProcess, clients: dict[str, httpx.Client], user: str
) -> None:
    _running(room)
    before, records = _clock(room), len(_trainer_records(room))
    for action in ACTIONS:
        answer = _post(clients[user], action)
        assert answer.status_code == 403, (action, answer.text)
        assert "configure" in answer.json()["detail"]
    assert _clock(room) == before  # nothing moved
    assert len(_trainer_records(room)) == records
    # looking at the clock is a view
    assert clients[user].get("/api/trainer").status_code == 200
    for action in ACTIONS:
        assert _post(clients["anonymous"], action).status_code == 401


def test_engineer_pauses_resumes_sets_speed_and_jumps_to_the_next_event_all_audited(
    room: ControlRoomProcess, clients: dict[str, httpx.Client]
) -> None:
    _running(room)
    erik = clients["erik"]
    events_before = {e["seq"] for e in room.room.events(0, 5000)}

    paused = erik.post("/api/trainer/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert erik.post("/api/trainer/pause").status_code == 409  # already paused: nothing to do

    state = erik.get("/api/trainer").json()
    upcoming = state["next_event"]
    assert upcoming is not None
    assert not upcoming["done"]
    assert state["next_in_real_s"] is None  # paused: the next event never comes by itself
    jumped = erik.post("/api/trainer/next")
    assert jumped.status_code == 200, jumped.text
    after = jumped.json()
    assert after["elapsed_s"] == upcoming["offset_s"]  # paused: exactly at the event
    assert next(e for e in after["events"] if e["offset_s"] == upcoming["offset_s"])["done"] is True
    assert after["paused"] is True

    faster = erik.post("/api/trainer/speed", json={"speed": 600})
    assert faster.status_code == 200, faster.text
    assert faster.json()["speed"] == 600.0
    resumed = erik.post("/api/trainer/resume")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert erik.post("/api/trainer/resume").status_code == 409
    assert room.simulator.time_base.anchors[-1].speed == 600.0

    records = _trainer_records(room)[-4:]
    assert [r.action for r in records] == ["trainer.pause", "trainer.next", "trainer.speed", "trainer.resume"]
    assert all(r.actor == "erik" and r.source_ip == "127.0.0.1" for r in records)
    assert records[1].details["event"] == upcoming["what"]
    assert records[2].details["speed_before"] == 60.0
    assert records[2].details["speed_after"] == 600.0
    logged = [
        e for e in room.room.events(0, 5000) if e["seq"] not in events_before and e["kind"].startswith("trainer.")
    ]
    assert [e["kind"] for e in logged] == ["trainer.pause", "trainer.next", "trainer.speed", "trainer.resume"]
    assert all(e["actor"] == "erik" for e in logged)
    _running(room)


@pytest.mark.parametrize(
    "body",
    [
        b'{"speed": 0}',
        b'{"speed": -60}',
        b'{"speed": NaN}',
        b'{"speed": Infinity}',
        b'{"speed": 1e308}',
        b'{"speed": 3600.5}',
        b'{"speed": "600"}',
        b'{"speed": true}',
        b'{"speed": null}',
        b"{}",
        b'{"speed": 600, "extra": 1}',
        b"[600]",
        b"not json",
    ],
)
def test_bad_speed_gets_422_and_changes_nothing(
    room: ControlRoomProcess, clients: dict[str, httpx.Client], body: bytes
) -> None:
    _running(room)
    before, records = _clock(room), len(_trainer_records(room))
    answer = clients["erik"].post("/api/trainer/speed", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "body" in detail or "JSON" in detail  # names what and where
    assert _clock(room) == before
    assert len(_trainer_records(room)) == records


def test_status_carries_the_time_base_every_screen_uses(
    room: ControlRoomProcess, clients: dict[str, httpx.Client]
) -> None:
    _running(room)
    status = clients["victor"].get("/api/status").json()
    base = status["time_base"]
    assert base["speed"] == 60.0
    assert base["paused"] is False
    anchors = base["anchors"]
    assert anchors
    assert all(a["speed"] >= 0 for a in anchors)
    # the status's simulated time is the time base's mapping of the status's wall-clock time
    wall = datetime.fromisoformat(status["time"])
    last = next(a for a in reversed(anchors) if datetime.fromisoformat(a["wall"]) <= wall)
    expected = datetime.fromisoformat(last["simulated"]) + (wall - datetime.fromisoformat(last["wall"])) * last["speed"]
    assert datetime.fromisoformat(status["simulated_time"]) == expected
    assert status["simulated_time"].startswith("2016-06-21")


def test_a_control_room_without_simulator_has_no_clock_to_steer(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    historian = Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}")
    try:
        room = ControlRoom(_cached_grid("demo"), historian)
        Security(historian.engine, settings=FAST).add_user("erik", PASSWORD, ["engineer"], actor="admin")
        app = create_app(room, ServiceSettings(security=FAST, login=UNLIMITED_LOGINS))
        with TestClient(app) as client:
            token = client.post("/api/auth/token", json={"username": "erik", "password": PASSWORD}).json()
            client.headers["Authorization"] = f"Bearer {token['access_token']}"
            assert client.post("/api/trainer/pause").status_code == 409
            assert "no field simulator" in client.get("/api/trainer").json()["detail"]
            assert client.get("/api/status").json()["time_base"] is None  # screens show the wall clock
    finally:
        historian.close()


# -- the command line ---------------------------------------------------------------------------------------
def _trainer_cli(room: ControlRoomProcess, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENDSO_PASSWORD": password}
    return subprocess.run(
        [str(Path(sys.executable).parent / "opendso"), "trainer", *args, "--url", str(room.url)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_opendso_trainer_pauses_sets_speed_and_resumes_with_clear_errors(room: ControlRoomProcess) -> None:
    _running(room)
    done = _trainer_cli(room, "pause", "--user", "erik")
    assert done.returncode == 0, done.stderr
    assert "PAUSED" in done.stdout
    assert "simulated 2016-06-21" in done.stdout
    assert room.simulator.paused

    done = _trainer_cli(room, "status", "--user", "erik")
    assert done.returncode == 0, done.stderr
    assert "next " in done.stdout

    for bad in ("0", "-5", "nan", "fast"):
        done = _trainer_cli(room, "speed", bad, "--user", "erik")
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "speed" in done.stderr
        assert "Traceback" not in done.stderr
    assert room.simulator.speed == 60.0

    done = _trainer_cli(room, "speed", "300", "--user", "erik")
    assert done.returncode == 0, done.stderr
    assert "300x" in done.stdout

    done = _trainer_cli(room, "resume", "--user", "olga")  # an operator may not
    assert done.returncode == 1
    assert "403" in done.stderr
    assert "configure" in done.stderr
    assert room.simulator.paused

    done = _trainer_cli(room, "resume", "--user", "erik", password="wrong password")
    assert done.returncode == 1
    assert "401" in done.stderr
    done = _trainer_cli(room, "resume", "--user", "erik")
    assert done.returncode == 0, done.stderr
    assert not room.simulator.paused
    actions = [r.action for r in _trainer_records(room)[-3:]]
    assert actions == ["trainer.pause", "trainer.speed", "trainer.resume"]
    # each command's token is revoked when it finishes: as many logouts as tokens issued to erik by the CLI
    audit = [r for r in room.room.audit.read(0, limit=100_000) if r.actor == "erik"]
    issued = sum(1 for r in audit if r.action == "token.issued")
    assert sum(1 for r in audit if r.action == "logout") == issued - 1  # the test's own client stays logged in
    _running(room)
