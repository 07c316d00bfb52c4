"""`opendso run`'s process: simulator -> Modbus on loopback -> monitor -> historian, with the scripted demo day."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import _cached_grid

from opendso.demo import demo_scenario, demo_start_step, describe_demo_day
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.operations.cycle import CycleResult
from opendso.runtime import ControlRoomProcess, free_port
from opendso.service.audit import AuditTrail
from opendso.service.server import bind_socket
from opendso.store import Historian
from opendso.store.integrity import KEY_FILE
from opendso.telemetry.scenario import ScenarioEvent, scenario_of


def test_demo_day_is_a_valid_scenario(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("demo")
    scenario = demo_scenario(grid)
    kinds = [e.kind for e in scenario.events]
    assert "pv_scale" in kinds
    assert "breaker_trip" in kinds
    assert grid.profiles is not None
    start = grid.profiles.time[demo_start_step(grid)]
    assert str(start).startswith("2016-06-21T05:00")


@pytest.mark.asyncio
async def test_control_room_process_runs_and_trips_a_breaker(grid_of: Callable[[str], Grid], tmp_path: Path) -> None:
    grid = grid_of("demo")
    day = demo_scenario(grid)
    trip = next(e for e in day.events if e.kind == "breaker_trip")
    # a short day: the breaker trips 60 simulated seconds (0.5 s real) in
    scenario = scenario_of([ScenarioEvent(60.0, "breaker_trip", switch=trip.switch)])
    cycles: list[CycleResult] = []
    process = ControlRoomProcess(grid, tmp_path, speed=120.0, period_s=0.5, scenario=scenario, on_cycle=cycles.append)
    await process.run(duration_s=6.0, install_signals=False)
    assert any(c.observable for c in cycles)
    assert any(trip.switch in c.switch_changes for c in cycles)
    reopened = process.historian.__class__.open(f"sqlite:///{tmp_path / 'opendso.db'}")
    try:
        assert reopened.count() > 0
        kinds = [e.kind for e in reopened.events.read()]
        assert "alarm.raised" in kinds
    finally:
        reopened.close()


def test_demo_day_pv_peak_overloads_a_line_and_raises_a_loading_alarm(tmp_path: Path) -> None:
    # the scripted day through the real cycle (Modbus, historian, state estimation, alarms); the
    # clock is driven (paused, then jumped) instead of waited for
    grid = _cached_grid("demo")
    cycles: list[CycleResult] = []
    process = ControlRoomProcess(grid, tmp_path, port=None, period_s=0.5, on_cycle=cycles.append)
    sim = process.simulator
    peak = next(e for e in sim.scenario.events if e.kind == "pv_scale" and (e.factor or 0) > 1)
    peak_end = next(e for e in sim.scenario.events if e.kind == "pv_scale" and e.at_s > peak.at_s)
    monitor = process.monitor.cycle.loading
    lines = [str(n) for n in grid.names_of("line")]

    def overloaded() -> list[str]:
        return [str(c) for c, sev in zip(monitor.channels, monitor.severity, strict=True) if sev >= 2]

    def cycles_after(n: int) -> None:
        target = len(cycles) + n
        _wait(lambda: len(cycles) >= target, f"{n} cycles")

    with process.in_thread():
        process.call(sim.pause)
        process.call(sim.jump_to, peak.at_s - 1800)  # 10:30, before the peak
        cycles_after(6)
        assert overloaded() == []
        assert all(e.kind != "alarm.raised" or not (e.element or "").startswith("loading:") for e in _events(process))

        process.call(sim.jump_to, peak.at_s + 1800)  # 11:30, in the PV peak
        _wait(lambda: bool(overloaded()), "a loading alarm during the PV peak")
        cycles_after(2)
        estimate = cycles[-1].estimation.output["line"]["loading"]
        truth = process.call(lambda: sim.result.output["line"]["loading"])
        alarmed = [c.split(":", 1)[1] for c in overloaded() if c.startswith("line:")]
        assert alarmed
        # a real overload, seen by the control room: above 100 % in the twin and in the estimate
        really = [name for name in alarmed if truth[lines.index(name)] > 1.0]
        assert really, {name: float(truth[lines.index(name)]) for name in alarmed}
        assert all(estimate[lines.index(name)] > 1.0 for name in really)
        assert process.call(lambda: float(sim.result.output["line"]["loading"].max())) > 1.0
        # and voltages lifted above the alarm limit (1.10 p.u.)
        assert float(cycles[-1].estimation.output["node"]["u_pu"].max()) > 1.10
        raised = [e for e in _events(process) if e.kind == "alarm.raised"]
        assert any((e.element or "").startswith("loading:line:") for e in raised)
        assert any((e.element or "").startswith("voltage:") for e in raised)

        process.call(sim.jump_to, peak_end.at_s + 1800)  # 14:30, PV back to its profile
        _wait(lambda: not overloaded(), "the loading alarm clears after the PV peak")


def _events(process: ControlRoomProcess) -> list[Any]:
    return list(process.historian.events.read(1, limit=100_000))


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Wait for a condition of the running control room (a deadline for a busy machine, not a threshold)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def test_run_help_and_readme_give_the_scripted_day_with_simulated_and_real_times() -> None:
    done = subprocess.run([_opendso(), "run", "--help"], capture_output=True, text=True, timeout=120, check=True)
    text = " ".join(done.stdout.split())
    assert "15:00 after 10 min real a feeder breaker trips" in text
    assert "11:00 after 6 min real clear-sky PV peak" in text
    assert "06:00 after 1 min real morning load ramp" in text
    # the README shows the same timetable, word for word
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert " ".join(describe_demo_day().split()) in readme
    assert "opendso trainer" in readme


def _opendso() -> str:
    return str(Path(sys.executable).parent / "opendso")


def _wait_for_line(proc: subprocess.Popen[str], needle: str, lines: list[str], timeout_s: float = 120.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} from opendso run; output:\n{''.join(lines)}")


def _start(folder: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [_opendso(), "run", "--data-dir", str(folder), "--port", str(port), "--speed", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc, []


def _login(url: str, password: str) -> int:
    request = urllib.request.Request(
        url + "/api/auth/login",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _stop(proc: subprocess.Popen[str], lines: list[str]) -> None:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    lines.append(out)
    assert proc.returncode == 0, "".join(lines)
    assert "OpenDSO stopped cleanly." in out


def test_opendso_run_serves_on_its_port_stops_cleanly_and_reuses_its_data_folder(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENDSO_ADMIN_PASSWORD"}
    proc, lines = _start(folder, port, env)
    try:
        created = _wait_for_line(proc, "one-time password", lines)
        password = created.split("one-time password ", 1)[1].split()[0]
        served = _wait_for_line(proc, "Control room: ", lines)
        url = f"http://127.0.0.1:{port}"
        assert url in served
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert "OpenDSO control room" in page.read().decode()
        assert _login(url, "not the password") == 401
        assert _login(url, password) == 200
    finally:
        if proc.poll() is None:
            _stop(proc, lines)
    assert (folder / "opendso.db").is_file()

    # a second start reuses the folder: no new administrator, the first password still works
    proc, lines = _start(folder, port, env)
    try:
        _wait_for_line(proc, "Control room: ", lines)
        assert not any("one-time password" in line for line in lines)
        assert _login(f"http://127.0.0.1:{port}", password) == 200
    finally:
        if proc.poll() is None:
            _stop(proc, lines)
    historian = Historian.open(f"sqlite:///{folder / 'opendso.db'}")
    try:
        assert historian.count() > 0  # telemetry of both runs stored; the database opens after Ctrl-C
    finally:
        historian.close()


def test_opendso_run_on_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [_opendso(), "run", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port} is in use" in done.stderr
    assert "--port" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d" / "opendso.db").exists()  # nothing started, nothing created


def test_service_socket_is_tcp_so_responses_are_not_held_back_by_nagle() -> None:
    # asyncio turns on TCP_NODELAY for accepted connections only when the protocol is IPPROTO_TCP
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        port = sock.getsockname()[1]
        with pytest.raises(InputError, match=f"127.0.0.1:{port} is in use"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(InputError, match=r"port must be 0\.\.65535"):
        bind_socket("127.0.0.1", 70000)


def test_control_room_on_real_servers_over_mqtt(
    grid_of: Callable[[str], Grid], tmp_path: Path, db_url: str, broker_url: str
) -> None:
    # `opendso run --database-url ... --broker ...`: the field over MQTT, historian and users in that database
    import httpx

    process = ControlRoomProcess(
        grid_of("demo"),
        tmp_path,
        database_url=db_url,
        broker_url=broker_url,
        period_s=0.5,
        port=0,
        admin_password="installer's password",
    )
    with process.in_thread():
        url = process.url
        assert url is not None
        with httpx.Client(base_url=url, timeout=30) as client:
            token = client.post(
                "/api/auth/token", json={"username": "admin", "password": "installer's password"}
            ).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            # the estimate may converge before the last MQTT topics of the first publish arrive:
            # wait for both (a deadline for a busy machine), then require both
            deadline = time.monotonic() + 30
            state: dict[str, Any] = {}
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                state = client.get("/api/state").json()
                status = client.get("/api/status").json()
                if state["converged"] and status["telemetry"]["good"] == len(process.point_map):
                    break
                time.sleep(0.2)
            assert state["converged"] is True
            assert status["telemetry"]["good"] == len(process.point_map)
    reopened = Historian.open(db_url, key_path=tmp_path / KEY_FILE)  # the run's integrity key, in its data folder
    try:
        assert reopened.count() > 0
        assert any(r.action == "token.issued" for r in AuditTrail(reopened.engine).read())
    finally:
        reopened.close()
