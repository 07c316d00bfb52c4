"""No command path bypasses the safety gate: the source is walked, and every path is driven through it.

(a) Every call of ``.command(``, ``.operate_switch(`` or ``.send_setpoint(`` in the package outside
the telemetry layer (which implements them) and the dispatcher is a bypass: there must be none.
(b) Each :class:`CommandPath` is driven into the dispatcher, showing a refusal by a gate rule
(nothing reaches the field) and an allowed request reaching an adapter: the web UI's and the
API's routes (cookie session and bearer token) with an in-process adapter; a script, a plan and
FLISR over real Modbus TCP on loopback against the field simulator (completed: the switch moves
in the field) and against a device that confirms but never acts (not executed).
"""

from __future__ import annotations

import ast
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import test_setpoints_field
from conftest import feeder_breaker
from leaks import assert_no_leaks
from test_switching_api import TIE, make_api
from test_telemetry_commands import DeafActuator, device, wait_polled

import opendso
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.switching import (
    CommandPath,
    EarthKind,
    GateConfig,
    GateRule,
    SafetyGate,
    SwitchAction,
    SwitchingDispatcher,
    SwitchingRegister,
    SwitchingRequest,
    SwitchingStep,
    execute_steps,
    route_by_point_map,
)
from opendso.service.audit import AuditTrail
from opendso.store import Historian
from opendso.store.switching import SwitchingStore
from opendso.telemetry.modbus import ModbusPoller
from opendso.telemetry.points import point_map_for_grid
from opendso.telemetry.simulator import FieldSimulator

PACKAGE = Path(opendso.__file__).parent
COMMAND_CALLS = {"command", "operate_switch", "send_setpoint"}
ALLOWED = {PACKAGE / "operations" / "switching" / "dispatch.py"}
#: Feedback timeout of the not-executed case: long enough for a 0.1 s poll on a busy machine.
FEEDBACK_S = 1.5
OPEN, CLOSE = SwitchAction.OPEN, SwitchAction.CLOSE


# -- (a) the source ---------------------------------------------------------------------------------------
def command_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in COMMAND_CALLS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} .{func.attr}(")
            # getattr(x, "operate_switch")(...) would hide a call from the check above
            if (
                isinstance(func, ast.Call)
                and isinstance(func.func, ast.Name)
                and func.func.id == "getattr"
                and any(isinstance(a, ast.Constant) and a.value in COMMAND_CALLS for a in func.args)
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} getattr(..., command)(")
    return found


def test_no_command_call_outside_the_telemetry_layer_and_the_dispatcher() -> None:
    telemetry = PACKAGE / "telemetry"
    files = [p for p in PACKAGE.rglob("*.py") if telemetry not in p.parents and p not in ALLOWED]
    assert len(files) > 50
    bypasses = [call for path in files for call in command_calls(path)]
    assert bypasses == [], "commands that do not pass the safety gate:\n" + "\n".join(bypasses)
    # the check sees a call where there is one
    assert command_calls(PACKAGE / "operations" / "switching" / "dispatch.py")


def test_only_the_set_point_arbiter_sends_set_points_through_the_dispatcher() -> None:
    """``dispatch_setpoint`` sends what the set-point gate allowed: only the arbiter (which runs the gate) calls it."""
    arbiter = PACKAGE / "operations" / "setpoints" / "arbiter.py"
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "dispatch_setpoint" and path.name != "dispatch.py":
                callers.add(path)
    assert callers == {arbiter}


def test_every_path_is_driven_below() -> None:
    """Each member of CommandPath has its test here: a new path needs a new test."""
    tested = {
        CommandPath.UI: test_ui_path,
        CommandPath.API: test_api_path,
        CommandPath.SCRIPT: test_script_path_over_modbus,
        CommandPath.PLAN: test_plan_path_over_modbus,
        CommandPath.FLISR: test_flisr_path,
        # the set-point arbiter's export limits over real Modbus (and IEC 104) to the field simulator
        CommandPath.ANM: test_setpoints_field.test_export_limit_over_modbus,
    }
    assert set(tested) == set(CommandPath)


#: Where the package originates requests on each path, and the test that drives that code end to end.
ORIGINS = {
    ("operations/fault_response.py", "FLISR"): "test_flisr_end_to_end.py, test_flisr_api.py",
    ("operations/switching/plan_book.py", "PLAN"): "test_plan_api.py",
    ("operations/setpoints/arbiter.py", "ANM"): "test_setpoints.py, test_setpoints_field.py",
    ("der/anm.py", "ANM"): "test_anm.py",  # ANM's trip of a DER that ignores its limit: its switch opened
    ("service/routes/switching.py", "UI"): "test_ui_path above",
    ("service/routes/switching.py", "API"): "test_api_path above",
}


def command_path_origins() -> set[tuple[str, str]]:
    """(module, path) for every ``CommandPath.<X>`` the package names (the dispatcher's own module aside)."""
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        if path in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "CommandPath":
                found.add((path.relative_to(PACKAGE).as_posix(), node.attr))
    return found


def test_every_origin_of_a_command_is_known_and_tested() -> None:
    """A new module that sends commands (a new origin of a path) must be listed here with its test.

    Scripts use the Python API (``CommandPath.SCRIPT``) from outside the package.
    """
    assert command_path_origins() == set(ORIGINS)
    tests = Path(__file__).parent
    for files in ORIGINS.values():
        for name in files.split(", "):
            if name.endswith(".py"):
                assert (tests / name).is_file(), name


# -- (b) UI and API: the routes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


def test_ui_path(grid: Grid, tmp_path: Path) -> None:
    api = make_api(grid, tmp_path)
    try:
        engineer, eh = api.client("engineer")
        doc = engineer.post(
            "/api/switching/documents",
            json={"kind": "permit_to_work", "devices": [TIE], "description": "tie overhaul"},
            headers=eh,
        ).json()
        assert engineer.post(f"/api/switching/documents/{doc['id']}/issue", headers=eh).status_code == 200
        browser, csrf = api.browser("operator")
        body = {"switch": TIE, "action": "close"}
        assert browser.post("/api/switching/operate", json=body).status_code == 403  # no CSRF header
        refused = browser.post("/api/switching/operate", json=body, headers=csrf).json()
        assert refused["path"] == "ui"
        assert refused["status"] == "refused"
        assert refused["decision"]["rule"] == GateRule.SAFETY_DOCUMENTS.value
        assert api.sent == []
        assert (
            engineer.post(
                f"/api/switching/documents/{doc['id']}/cancel", json={"reason": "postponed"}, headers=eh
            ).status_code
            == 200
        )
        # the document no longer holds the tie; closing it would parallel two feeders: the next rule refuses
        parallel = browser.post("/api/switching/operate", json=body, headers=csrf).json()
        assert parallel["decision"]["rule"] == GateRule.PARALLELING.value, parallel
        assert api.sent == []
        sw = str(grid.switch_names[feeder_breaker(grid)])
        done = browser.post("/api/switching/operate", json={"switch": sw, "action": "open"}, headers=csrf).json()
        assert done["status"] == "completed", done
        assert done["path"] == "ui"
        assert [(r.point, r.value) for r in api.sent] == [(f"{sw}/switch", 0.0)]
        event = api.historian.events.find(kind="switching.completed")[0]
        assert event.payload["path"] == "ui"
    finally:
        api.historian.close()


def test_api_path(grid: Grid, tmp_path: Path) -> None:
    api = make_api(grid, tmp_path)
    try:
        operator, oh = api.client("operator")
        sw = str(grid.switch_names[feeder_breaker(grid)])
        placed = operator.post(
            "/api/switching/tags", json={"switch": sw, "kind": "caution", "text": "weak spring"}, headers=oh
        ).json()
        body: dict[str, object] = {"switch": sw, "action": "open"}
        refused = operator.post("/api/switching/operate", json=body, headers=oh).json()
        assert refused["path"] == "api"
        assert refused["decision"]["rule"] == GateRule.TAGS.value
        assert refused["decision"]["confirm"] == [f"override caution tag {placed['id']} on switch {sw}"]
        assert api.sent == []
        body["overrides"] = [{"tag": placed["id"], "reason": "spring checked"}]
        done = operator.post("/api/switching/operate", json=body, headers=oh).json()
        assert done["status"] == "completed", done
        assert done["decision"]["overrides"] == [{"tag": placed["id"], "reason": "spring checked"}]
        assert [(r.point, r.value) for r in api.sent] == [(f"{sw}/switch", 0.0)]
    finally:
        api.historian.close()


# -- (b) script, plan, FLISR: real Modbus over loopback ----------------------------------------------------
@pytest.fixture
def no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


class ModbusField:
    """The field simulator over Modbus, its poller, and a dispatcher that decides on the field's switch states."""

    def __init__(
        self, grid: Grid, historian: Historian, sim: FieldSimulator, poller: ModbusPoller, config: GateConfig
    ) -> None:
        point_map = poller.point_map
        assert point_map is not None
        self.base = grid
        self.sim = sim
        self.poller = poller
        self.historian = historian
        self.audit = AuditTrail(historian.engine)
        self.register = SwitchingRegister(
            SwitchingStore(historian.engine), self.grid, events=historian.events, audit=self.audit.append
        )
        self.dispatcher = SwitchingDispatcher(
            SafetyGate(config),
            self.grid,
            self.register.state,
            route_by_point_map([poller], point_map),
            events=historian.events,
            audit=self.audit.append,
            feedback_timeout_s=5.0,
        )

    def grid(self) -> Grid:
        """The grid with the switch states the field has now."""
        closed = np.array([self.sim.switch_closed(str(n)) for n in self.base.switch_names], dtype=np.int8)
        return self.base.with_switch_states(closed)


@asynccontextmanager
async def modbus_field(grid: Grid, folder: Path, config: GateConfig | None = None) -> AsyncIterator[ModbusField]:
    point_map = point_map_for_grid(grid, port=0, poll_period_s=0.1)
    sim = FieldSimulator(
        grid, point_map, noise=0, speed=1.0, publish_period_s=0.1, server_options={"field": {"port": 0}}
    )
    historian = Historian.open(f"sqlite:///{folder / 'db.sqlite'}")
    try:
        async with sim:
            port = sim.servers[0].port  # type: ignore[attr-defined]
            poller = ModbusPoller(name="mb", point_map=point_map, source="field", port=port)
            async with poller:
                await wait_polled(poller, point_map)
                yield ModbusField(grid, historian, sim, poller, config or GateConfig())
    finally:
        historian.close()


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leftovers")
async def test_script_path_over_modbus(grid: Grid, tmp_path: Path) -> None:
    sw = str(grid.switch_names[feeder_breaker(grid)])
    async with modbus_field(grid, tmp_path, GateConfig(critical_switches=frozenset({sw}))) as f:
        alone = await f.dispatcher.execute(SwitchingRequest(sw, OPEN, "script"), path=CommandPath.SCRIPT)
        assert alone.status == "refused"
        assert alone.decision.rule is GateRule.TWO_PERSON_APPROVAL
        assert f.sim.switch_closed(sw)
        same = await f.dispatcher.execute(
            SwitchingRequest(sw, OPEN, "script", approver="script"), path=CommandPath.SCRIPT
        )
        assert same.decision.rule is GateRule.TWO_PERSON_APPROVAL
        assert "must not be the actor" in same.decision.reason
        approved = SwitchingRequest(sw, OPEN, "script", approver="supervisor")
        done = await f.dispatcher.execute(approved, path=CommandPath.SCRIPT)
        assert done.status == "completed", done.result
        assert done.result is not None
        assert "FC 6" in done.result.reason  # a real Modbus write
        assert not f.sim.switch_closed(sw)
        assert done.telemetry["agrees"] is True
        kinds = [e.kind for e in f.historian.events.find(kind_prefix="switching.")]
        assert kinds == ["switching.refused", "switching.refused", "switching.completed"]


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leftovers")
async def test_plan_path_over_modbus(grid: Grid, tmp_path: Path) -> None:
    sw = str(grid.switch_names[feeder_breaker(grid)])
    async with modbus_field(grid, tmp_path) as f:
        opened = await execute_steps(f.dispatcher, [SwitchingStep(sw, OPEN)], actor="op", path=CommandPath.PLAN)
        assert [o.status for o in opened] == ["completed"]
        assert not f.sim.switch_closed(sw)
        # a crew earths a node the open breaker left dead; closing it again would energise the earth
        dead = ~analyse_topology(f.grid()).node_energised
        node = str(grid.names_of("node")[int(np.flatnonzero(dead)[0])])
        f.register.apply_earth(node, EarthKind.PORTABLE, "set 2", actor="crew")
        steps = [SwitchingStep(sw, CLOSE)]
        refused = await execute_steps(f.dispatcher, steps, actor="op", path=CommandPath.PLAN)
        assert [o.status for o in refused] == ["refused"]
        assert refused[0].decision.rule is GateRule.EARTHING
        assert node in refused[0].decision.reason
        assert not f.sim.switch_closed(sw)
        f.register.remove_earth(node, "work done", actor="crew")
        closed = await execute_steps(f.dispatcher, steps, actor="op", path=CommandPath.PLAN)
        assert [o.status for o in closed] == ["completed"]
        assert f.sim.switch_closed(sw)
        assert {
            e.payload["path"] for e in f.historian.events.find(kind_prefix="switching.") if "path" in e.payload
        } == {"plan"}


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leftovers")
async def test_flisr_path(grid: Grid, tmp_path: Path) -> None:
    """FLISR: refused closing onto a faulted section; an allowed open sent to a device that never acts."""
    sw = str(grid.switch_names[feeder_breaker(grid)])
    historian = Historian.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        field = {"grid": grid}
        register = SwitchingRegister(SwitchingStore(historian.engine), lambda: field["grid"], events=historian.events)
        async with device(DeafActuator) as (server, poller):
            dispatcher = SwitchingDispatcher(
                SafetyGate(),
                lambda: field["grid"],
                register.state,
                lambda switch: (poller, "cb") if switch == sw else None,
                events=historian.events,
                feedback_timeout_s=FEEDBACK_S,
            )
            # FLISR isolates: the open is allowed, confirmed by the device, but its status never follows
            isolate = await execute_steps(dispatcher, [SwitchingStep(sw, OPEN)], actor="flisr", path=CommandPath.FLISR)
            assert [o.status for o in isolate] == ["not_executed"]
            assert isolate[0].result is not None
            assert isolate[0].result.confirmed_at is not None
            assert server.value("cb") == 1.0
            # with the section flagged faulted, restoring onto it is refused by a rule
            closed = grid.switches["closed"].copy()
            closed[feeder_breaker(grid)] = 0
            field["grid"] = grid.with_switch_states(closed)
            dead = ~analyse_topology(field["grid"]).node_energised
            node = str(grid.names_of("node")[int(np.flatnonzero(dead)[0])])
            register.flag_faulted(node, "located by FLISR", actor="flisr")
            restore = await execute_steps(
                dispatcher, [SwitchingStep(sw, CLOSE)], actor="flisr", path=CommandPath.FLISR, advisory_fallback=True
            )
            assert [o.status for o in restore] == ["refused"]
            assert restore[0].decision.rule in (GateRule.DEVICE_CAPABILITY, GateRule.FAULTED_SECTION)
            assert node in restore[0].decision.reason
        kinds = [e.kind for e in historian.events.find(kind_prefix="switching.")]
        assert kinds == ["switching.not_executed", "switching.fault_flagged", "switching.refused"]
        assert all(e.payload.get("path", "flisr") == "flisr" for e in historian.events.find(kind_prefix="switching."))
    finally:
        historian.close()


def test_the_running_control_room_operates_a_switch_through_the_gate(grid: Grid, tmp_path: Path) -> None:
    """`opendso run`'s process: the API's operate reaches the simulated field over Modbus, through the gate."""
    import httpx

    from opendso.runtime import ControlRoomProcess
    from opendso.telemetry.scenario import scenario_of

    sw = str(grid.switch_names[feeder_breaker(grid)])
    password = "first admin password"
    process = ControlRoomProcess(
        grid, tmp_path, port=0, period_s=0.5, scenario=scenario_of([]), admin_password=password
    )
    with process.in_thread(), httpx.Client(base_url=process.url or "", timeout=30.0) as client:
        token = client.post("/api/auth/token", data={"username": "admin", "password": password})
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        body = {"switch": sw, "action": "open"}
        # until the first polls arrive, the states are unknown and the gate refuses (trustworthy state)
        deadline = time.monotonic() + 60.0
        while True:
            preview = client.post("/api/switching/preview", json=body, headers=headers).json()
            if preview["allowed"] or time.monotonic() > deadline:
                break
            assert preview["rule"] == GateRule.TRUSTWORTHY_STATE.value, preview
            time.sleep(0.2)
        assert preview["allowed"], preview
        done = client.post("/api/switching/operate", json=body, headers=headers).json()
        assert done["status"] == "completed", done
        assert done["path"] == "api"
        assert done["telemetry"]["checked_by"] in ("latest_values", "adapter_feedback")
        assert not process.call(process.simulator.switch_closed, sw)
