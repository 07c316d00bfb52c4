"""`opendso points`, `opendso monitor` and `opendso history` end to end, over a real Modbus TCP server."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opendso.cli import main
from opendso.grid.model import Grid
from opendso.telemetry import ModbusPointServer, read_point_map

CODE = "simbench:1-MV-urban--0-sw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_monitor_over_modbus_then_history(
    grid_of: Callable[[str], Grid], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cycle import field_readings

    grid = grid_of(CODE)
    port = free_port()
    points_file = tmp_path / "points.toml"
    assert main(["points", CODE, "--protocol", "modbus", "--port", str(port), "--out", str(points_file)]) == 0
    point_map = read_point_map(points_file)
    server = ModbusPointServer.for_source(point_map, "field")
    readings = field_readings(grid, datetime.now(UTC))
    served = {p.name: readings[p.name].value for p in point_map.points if p.name in readings}
    server.set_values(served)
    await server.start()
    database = f"sqlite:///{tmp_path / 'historian.db'}"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opendso.cli",
            "monitor",
            "--grid",
            CODE,
            "--points",
            str(points_file),
            "--database-url",
            database,
            "--period",
            "1",
            "--duration",
            "6",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        await server.stop()
    assert proc.returncode == 0, err.decode()
    cycles = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert cycles, err.decode()
    last = cycles[-1]
    assert last["observable"] is True
    assert last["converged"] is True
    assert last["bad_points"] == 0
    assert last["used_points"] == sum(1 for p in point_map.points if p.quantity != "switch")
    # a healthy grid raises nothing, not even while the first values are on their way
    assert all(c["alarm_transitions"] == 0 for c in cycles)

    volt = next(p.name for p in point_map.points if p.quantity == "u")
    capsys.readouterr()
    status = main(["history", volt, "--from", "2000-01-01T00:00", "--database-url", database, "--json"])
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows
    # float32 registers: the stored value is the served one to single precision
    assert all(abs(r["value"] - served[volt]) <= 1e-6 * abs(served[volt]) for r in rows)
    assert all(r["quality"] == 0 for r in rows)


def test_history_bad_time_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status = main(["history", "x", "--from", "yesterday", "--database-url", f"sqlite:///{tmp_path / 'h.db'}"])
    assert status == 2
    assert "yesterday" in capsys.readouterr().err
