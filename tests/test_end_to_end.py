"""End to end over real protocols: `opendso simulate-field` serves Modbus, `opendso monitor` ingests,
estimates and alarms; a scripted breaker trip in the simulator shows up as one alarm group in the event log."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import feeder_breaker

from opendso.grid.model import Grid
from opendso.store import Historian

CODE = "simbench:1-MV-urban--0-sw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def opendso(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opendso.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["modbus", "iec104", "mqtt"])
async def test_simulated_breaker_trip_reaches_the_event_log(
    grid_of: Callable[[str], Grid], tmp_path: Path, protocol: str
) -> None:
    grid = grid_of(CODE)
    breaker = str(grid.switch_names[feeder_breaker(grid)])
    port = free_port()
    points = tmp_path / "points.toml"
    scenario = tmp_path / "scenario.toml"
    # 60x: the trip at 4 simulated minutes happens 4 s after the simulator starts
    scenario.write_text(f'[[events]]\nat = 240\nkind = "breaker_trip"\nswitch = "{breaker}"\n')
    database = f"sqlite:///{tmp_path / 'historian.db'}"
    sim = await opendso(
        "simulate-field",
        CODE,
        "--protocol",
        "modbus",
        "--port",
        str(port),
        "--write-points",
        str(points),
        "--scenario",
        str(scenario),
        "--speed",
        "60",
        "--seed",
        "1",
        "--duration",
        "30",
    )
    try:
        for _ in range(200):
            if points.exists():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        mon = await opendso(
            "monitor",
            "--grid",
            CODE,
            "--points",
            str(points),
            "--database-url",
            database,
            "--period",
            "1",
            "--duration",
            "12",
            "--json",
        )
        out, err = await asyncio.wait_for(mon.communicate(), timeout=120)
        assert mon.returncode == 0, err.decode()
    finally:
        if sim.returncode is None:
            sim.terminate()
        await sim.communicate()
    cycles = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert any(c["observable"] for c in cycles)
    assert any(breaker in c["switch_changes"] for c in cycles)
    assert cycles[-1]["de_energised_nodes"] > 5
    historian = Historian.open(database)
    try:
        raised = [e for e in historian.events.read() if e.kind == "alarm.raised"]
        assert historian.count() > 0
    finally:
        historian.close()
    supply = [e for e in raised if e.payload["monitor"] == "supply"]
    assert supply
    assert len({e.payload["group"] for e in supply}) == 1  # one feeder: one alarm group
    assert [e.payload["channel"] for e in raised if e.payload["monitor"] == "switch"] == [breaker]
