"""The command direction of the telemetry seam: one interface, four outcomes, over the real protocols.

Every outcome (completed, refused, no response, confirmed but not executed) is produced by a
real server over loopback: the field simulator's Modbus device and IEC 104 RTU for what a
healthy field does, and test-only subclasses of the same servers for a device that never
answers or confirms without acting. Hostile requests (unknown point, a point that takes no such
command, a value out of range, select-before-operate where the protocol has none) are refused
before anything is sent. IEC 104 needs the optional extra (c104): those tests skip without it,
except under CI=true.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from leaks import assert_no_leaks

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.telemetry import CommandKind, CommandOutcome, CommandRequest, CommandResult, InProcessAdapter
from opendso.telemetry.commands import FeedbackWatch
from opendso.telemetry.iec104 import Iec104Server, LinkParameters
from opendso.telemetry.modbus import ModbusPointServer, ModbusPoller
from opendso.telemetry.mqtt import MqttSubscriber
from opendso.telemetry.points import Point, PointMap, parse_point_map, point_map_for_grid
from opendso.telemetry.simulator import FieldSimulator

FAST = LinkParameters(t0_s=2, t1_s=3, t2_s=1, t3_s=2)
#: Short feedback timeout for the "not executed" cases; generous confirmation bounds elsewhere.
FEEDBACK_S = 1.5


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


def first_switch(point_map: PointMap) -> Point:
    return next(p for p in point_map.points if p.quantity == "switch")


def with_generator(grid: Grid, point_map: PointMap, **fields: Any) -> tuple[PointMap, Point]:
    """The map with a generator's ``p`` point added (a set-point the twin takes), after the last address."""
    gen = str(grid.names_of("sym_gen")[0])
    if point_map.sources["field"].protocol == "modbus":
        register = max(p.register + p.register_count for p in point_map.points if p.register is not None)
        fields = {"register": register, "data_type": "float32", **fields}
    else:
        fields = {"common_address": 1, "ioa": 5001, "type": "M_ME_NC_1", **fields}
    point = Point(f"{gen}/p", gen, "p", "W", "field", **fields)
    return PointMap(point_map.file, point_map.sources, (*point_map.points, point)), point


def assert_times(result: CommandResult) -> None:
    assert result.requested_at.tzinfo is not None
    assert result.finished_at >= result.requested_at
    if result.sent_at is not None:
        assert result.requested_at <= result.sent_at <= result.finished_at
    if result.confirmed_at is not None:
        assert result.sent_at is not None
        assert result.sent_at <= result.confirmed_at <= result.finished_at


# -- the interface itself ---------------------------------------------------------------------------
def test_requests_that_are_wrong_in_themselves_are_named() -> None:
    assert CommandRequest.switch("cb", closed=True).value == 1.0
    assert CommandRequest.switch("cb", closed=False).description == "open"
    assert CommandRequest.setpoint("g/p", 12.5).description == "set-point 12.5"
    assert (
        CommandRequest("cb", CommandKind.SWITCH, 0.5).problem() == "a switch command is 0 (open) or 1 (close), got 0.5"
    )
    assert "finite" in (CommandRequest.setpoint("g/p", math.nan).problem() or "")
    assert "finite" in (CommandRequest.setpoint("g/p", math.inf).problem() or "")
    assert "feedback timeout" in (CommandRequest.setpoint("g/p", 1.0, feedback_timeout_s=-1).problem() or "")
    assert "tolerance" in (CommandRequest.setpoint("g/p", 1.0, tolerance=-0.1).problem() or "")
    assert CommandRequest.setpoint("g/p", 1.0).problem() is None
    assert [str(o) for o in CommandOutcome] == ["refused", "no_response", "not_executed", "completed"]


def test_result_times_must_be_aware() -> None:
    now = datetime.now(UTC)
    with pytest.raises(InputError, match="naive"):
        CommandResult(CommandOutcome.REFUSED, "cb", CommandKind.SWITCH, 1.0, "x", now, now.replace(tzinfo=None))
    result = CommandResult(CommandOutcome.COMPLETED, "cb", CommandKind.SWITCH, 1.0, "x", now, now)
    assert result.completed
    assert result.as_dict()["outcome"] == "completed"


@pytest.mark.asyncio
async def test_feedback_watch_needs_good_quality_and_a_match() -> None:
    watch = FeedbackWatch("cb", lambda value: value == 0.0)
    watch.offer(0.0, 0x80)  # invalid: not feedback
    watch.offer(math.nan, 0)
    assert not watch.matched
    assert not await watch.wait(0.01)
    watch.offer(0.0, 0)
    assert await watch.wait(0.0)
    assert watch.last == 0.0


@pytest.mark.asyncio
async def test_in_process_adapter_commands() -> None:
    refusing = InProcessAdapter(name="plain")
    result = await refusing.operate_switch("cb", closed=False)
    assert result.outcome == CommandOutcome.REFUSED
    assert "no command handler" in result.reason
    seen: list[CommandRequest] = []

    async def decide(request: CommandRequest) -> CommandOutcome:
        seen.append(request)
        return CommandOutcome.NOT_EXECUTED if request.kind == CommandKind.SETPOINT else CommandOutcome.COMPLETED

    adapter = InProcessAdapter(name="fake", on_command=decide)
    done = await adapter.operate_switch("cb", closed=True)
    assert done.outcome == CommandOutcome.COMPLETED
    assert done.confirmed_at is not None
    assert_times(done)
    assert (await adapter.send_setpoint("g/p", 5.0)).outcome == CommandOutcome.NOT_EXECUTED
    assert [r.kind for r in seen] == [CommandKind.SWITCH, CommandKind.SETPOINT]
    # a malformed request never reaches the handler
    assert (await adapter.command(CommandRequest("cb", CommandKind.SWITCH, 3.0))).outcome == CommandOutcome.REFUSED
    assert len(seen) == 2


@pytest.mark.asyncio
async def test_an_exception_while_sending_is_a_refusal() -> None:
    def explode(request: CommandRequest) -> CommandOutcome:
        raise OSError("link gone")

    result = await InProcessAdapter(name="x", on_command=explode).operate_switch("cb", closed=True)
    assert result.outcome == CommandOutcome.REFUSED
    assert "OSError: link gone" in result.reason


def test_mqtt_takes_no_commands() -> None:
    data = {
        "sources": {"m": {"protocol": "mqtt"}},
        "points": [{"name": "cb", "element": "cb", "quantity": "switch", "source": "m", "topic": "t", "key": "cb"}],
    }
    subscriber = MqttSubscriber(name="mqtt", point_map=parse_point_map(data, file="t"), source="m")

    async def run() -> tuple[CommandResult, CommandResult]:
        return await subscriber.operate_switch("cb", closed=False), await subscriber.send_setpoint("nope", 1.0)

    known, unknown = asyncio.run(run())
    assert known.outcome == unknown.outcome == CommandOutcome.REFUSED
    assert "carries measurements only" in known.reason
    assert known.sent_at is None
    assert "no point 'nope'" in unknown.reason


# -- Modbus --------------------------------------------------------------------------------------------
@asynccontextmanager
async def modbus_field(
    grid: Grid, point_map: PointMap, **poller_options: Any
) -> AsyncIterator[tuple[FieldSimulator, ModbusPoller]]:
    """The field simulator serving ``point_map`` over Modbus, and a running poller of it."""
    sim = FieldSimulator(
        grid, point_map, noise=0, speed=1.0, publish_period_s=0.1, server_options={"field": {"port": 0}}
    )
    async with sim:
        port = sim.servers[0].port  # type: ignore[attr-defined]
        poller = ModbusPoller(name="mb", point_map=point_map, source="field", port=port, **poller_options)
        async with poller:
            await wait_polled(poller, point_map)
            yield sim, poller


async def wait_polled(poller: Any, point_map: PointMap, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while any(poller._status(p.name) is None for p in point_map.points):
            await asyncio.sleep(0.05)


def modbus_map(grid: Grid) -> PointMap:
    return point_map_for_grid(grid, port=0, poll_period_s=0.1)


@pytest.mark.asyncio
async def test_modbus_switch_and_set_point_complete(grid: Grid) -> None:
    point_map, gen = with_generator(grid, modbus_map(grid))
    breaker = first_switch(point_map)
    async with modbus_field(grid, point_map) as (sim, poller):
        assert sim.switch_closed(breaker.element)
        opened = await poller.operate_switch(breaker.name, closed=False)
        assert opened.outcome == CommandOutcome.COMPLETED, opened.reason
        assert not sim.switch_closed(breaker.element)
        assert opened.feedback == 0.0
        assert not opened.select_before_operate
        assert "FC 6" in opened.reason
        assert_times(opened)
        closed = await poller.operate_switch(breaker.name, closed=True)
        assert closed.outcome == CommandOutcome.COMPLETED, closed.reason
        assert sim.switch_closed(breaker.element)
        set_point = await poller.send_setpoint(gen.name, 1234.5)
        assert set_point.outcome == CommandOutcome.COMPLETED, set_point.reason
        assert "FC 16" in set_point.reason
        assert sim.exact_values()[gen.name] == pytest.approx(1234.5)


@pytest.mark.asyncio
async def test_modbus_switch_with_a_coil_is_operated_by_fc5(grid: Grid) -> None:
    base = modbus_map(grid)
    breaker = replace(first_switch(base), coil=0)
    point_map = PointMap(base.file, base.sources, tuple(breaker if p.name == breaker.name else p for p in base.points))
    async with modbus_field(grid, point_map) as (sim, poller):
        result = await poller.operate_switch(breaker.name, closed=False)
        assert result.outcome == CommandOutcome.COMPLETED, result.reason
        assert "FC 5 on coil 0" in result.reason
        assert not sim.switch_closed(breaker.element)


@pytest.mark.asyncio
async def test_modbus_refusals(grid: Grid) -> None:
    point_map, gen = with_generator(grid, modbus_map(grid), max_value=5_000.0)
    breaker = first_switch(point_map)
    sensor = point_map.points[0]
    async with modbus_field(grid, point_map) as (sim, poller):
        before = sim.counters.commands
        # the device refuses a write to a measurement register: exception 02, nothing moves
        measured = await poller.send_setpoint(sensor.name, 42.0)
        assert measured.outcome == CommandOutcome.REFUSED
        assert "02 illegal data address" in measured.reason
        assert measured.sent_at is not None
        assert measured.confirmed_at is None
        # refused before anything is sent
        cases = [
            (poller.operate_switch("nope", closed=True), "no point 'nope'"),
            (poller.operate_switch(sensor.name, closed=False), "not a switch"),
            (poller.send_setpoint(breaker.name, 1.0), "is a switch"),
            (poller.send_setpoint(gen.name, 9_000.0), "outside the range"),
            (poller.operate_switch(breaker.name, closed=False, select_before_operate=True), "no select-before-operate"),
        ]
        for call, reason in cases:
            result = await call
            assert result.outcome == CommandOutcome.REFUSED, reason
            assert reason in result.reason
            assert result.sent_at is None
        assert sim.switch_closed(breaker.element)
        assert sim.counters.commands == before


def test_modbus_value_that_does_not_fit_its_register_is_refused() -> None:
    data = {
        "sources": {"dev": {"protocol": "modbus", "port": 1}},
        "points": [
            {"name": "sp", "element": "g", "quantity": "p", "source": "dev", "register": 0, "data_type": "int16"}
        ],
    }
    poller = ModbusPoller(name="mb", point_map=parse_point_map(data, file="t"), source="dev")
    result = asyncio.run(poller.send_setpoint("sp", 1e9))
    assert result.outcome == CommandOutcome.REFUSED
    assert "does not fit point 'sp' (int16)" in result.reason


class SilentWrites(ModbusPointServer):
    """Test only: a device that answers reads but never answers a write."""

    release = asyncio.Event()

    async def _write_registers(self, function_code: int, address: int, registers: list[int]) -> Any:
        await self.release.wait()
        return None


class DeafActuator(ModbusPointServer):
    """Test only: a device that confirms writes but whose status never follows (a stuck mechanism)."""

    async def _write_registers(self, function_code: int, address: int, registers: list[int]) -> Any:
        return None  # confirmed; the register image keeps serving what the device measures


def switch_device_map(port: int) -> PointMap:
    data = {
        "sources": {"dev": {"protocol": "modbus", "port": port, "poll_groups": {"default": 0.1}}},
        "points": [
            {"name": "cb", "element": "cb", "quantity": "switch", "source": "dev", "register": 0, "data_type": "uint16"}
        ],
    }
    return parse_point_map(data, file="t")


@asynccontextmanager
async def device(cls: type[ModbusPointServer]) -> AsyncIterator[tuple[ModbusPointServer, ModbusPoller]]:
    server = cls(switch_device_map(0).points, port=0, on_write=lambda point, value: None)
    server.set_value("cb", 1.0)
    async with server:
        poller = ModbusPoller(name="mb", point_map=switch_device_map(server.port), source="dev", timeout_s=1.0)
        async with poller:
            await wait_polled(poller, switch_device_map(server.port))
            yield server, poller


@pytest.mark.asyncio
async def test_modbus_device_that_never_answers_a_write_gives_no_response() -> None:
    SilentWrites.release = asyncio.Event()
    async with device(SilentWrites) as (_, poller):
        try:
            result = await poller.operate_switch("cb", closed=False)
        finally:
            SilentWrites.release.set()
    assert result.outcome == CommandOutcome.NO_RESPONSE
    assert "no answer to FC 6" in result.reason
    assert result.confirmed_at is None
    assert poller.counters.errors >= 1


@pytest.mark.asyncio
async def test_modbus_confirmed_write_whose_status_does_not_follow_is_not_executed() -> None:
    async with device(DeafActuator) as (server, poller):
        result = await poller.operate_switch("cb", closed=False, feedback_timeout_s=FEEDBACK_S)
        assert server.value("cb") == 1.0
    assert result.outcome == CommandOutcome.NOT_EXECUTED
    assert result.confirmed_at is not None
    assert result.feedback == 1.0
    assert "status cb reports 1, not open" in result.reason
    assert_times(result)


@pytest.mark.asyncio
async def test_modbus_command_without_connection_is_refused() -> None:
    poller = ModbusPoller(name="mb", point_map=switch_device_map(_closed_port()), source="dev", timeout_s=0.5)
    async with poller:
        result = await poller.operate_switch("cb", closed=True)
    assert result.outcome == CommandOutcome.REFUSED
    assert "not connected" in result.reason


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- IEC 60870-5-104 -----------------------------------------------------------------------------------
def _require_c104() -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import c104  # noqa: F401  # CI must have the iec104 extra
    else:
        pytest.importorskip("c104", reason="the optional extra iec104 (c104) is not installed")


@asynccontextmanager
async def iec_field(
    grid: Grid, point_map: PointMap, **client_options: Any
) -> AsyncIterator[tuple[FieldSimulator, Any]]:
    _require_c104()

    options = {"field": {"port": 0, "link": FAST}}
    sim = FieldSimulator(grid, point_map, noise=0, speed=1.0, publish_period_s=0.2, server_options=options)
    async with sim:
        port = sim.servers[0].server.port  # type: ignore[attr-defined]
        async with iec_client(point_map, port, **client_options) as client:
            yield sim, client


@asynccontextmanager
async def iec_client(point_map: PointMap, port: int, **options: Any) -> AsyncIterator[Any]:
    from opendso.telemetry.iec104 import Iec104Client

    options = {"link": FAST, "backoff_s": 0.05, "backoff_max_s": 0.2, "startdt_timeout_s": 0.5, **options}
    client = Iec104Client(name="iec", point_map=point_map, port=port, **options)
    async with client:
        async with asyncio.timeout(15):
            while not client.connected:
                await asyncio.sleep(0.05)
        await wait_polled(client, point_map)
        yield client


def iec_map(grid: Grid) -> PointMap:
    return point_map_for_grid(grid, protocol="iec104", port=0)


@pytest.mark.asyncio
async def test_iec104_switch_and_set_point_complete(grid: Grid) -> None:
    point_map, gen = with_generator(grid, iec_map(grid))
    breaker = first_switch(point_map)
    async with iec_field(grid, point_map, command_timeout_s=5.0) as (sim, client):
        set_point = await client.send_setpoint(gen.name, 1500.0)
        assert set_point.outcome == CommandOutcome.COMPLETED, set_point.reason
        assert not set_point.select_before_operate
        assert sim.exact_values()[gen.name] == pytest.approx(1500.0)
        opened = await client.operate_switch(breaker.name, closed=False)
        assert opened.outcome == CommandOutcome.COMPLETED, opened.reason
        assert opened.select_before_operate  # the default for a double command
        assert not sim.switch_closed(breaker.element)
        assert opened.feedback == 0.0
        assert_times(opened)
        # select-before-operate on request for a set-point the RTU operates directly: the select is refused
        selected = await client.send_setpoint(gen.name, 1600.0, select_before_operate=True)
        assert selected.outcome == CommandOutcome.REFUSED
        assert "to the select" in selected.reason


@pytest.mark.asyncio
async def test_iec104_refusals(grid: Grid) -> None:
    point_map, gen = with_generator(grid, iec_map(grid), max_value=5_000.0)
    breaker = first_switch(point_map)
    sensor = next(p for p in point_map.points if p.quantity == "u")
    async with iec_field(grid, point_map, command_timeout_s=5.0) as (sim, client):
        # a set-point to a voltage measurement: the twin refuses, the RTU confirms negatively
        measured = await client.send_setpoint(sensor.name, 10_000.0)
        assert measured.outcome == CommandOutcome.REFUSED
        assert "negative activation confirmation (COT 7, P/N = 1)" in measured.reason
        assert sim.counters.refused_commands == 1
        cases = [
            (client.operate_switch("nope", closed=True), "no IEC 104 point 'nope'"),
            (client.operate_switch(sensor.name, closed=False), "is not a switch"),
            (client.send_setpoint(breaker.name, 1.0), "takes no set-point"),
            (client.send_setpoint(gen.name, 9_000.0), "outside the range"),
        ]
        for call, reason in cases:
            result = await call
            assert result.outcome == CommandOutcome.REFUSED, reason
            assert reason in result.reason
            assert result.sent_at is None
        assert sim.switch_closed(breaker.element)
        assert sim.counters.commands == 1


def test_iec104_value_beyond_its_encoding_is_refused() -> None:
    _require_c104()
    from opendso.telemetry.iec104 import Iec104Client

    data = {
        "sources": {"rtu": {"protocol": "iec104", "port": 1}},
        "points": [{"name": "sp", "element": "g", "quantity": "p", "source": "rtu", "ioa": 7, "type": "M_ME_NB_1"}],
    }
    client = Iec104Client(name="iec", point_map=parse_point_map(data, file="t"))
    result = asyncio.run(client.send_setpoint("sp", 40_000.0))
    assert result.outcome == CommandOutcome.REFUSED
    assert "does not fit a scaled value" in result.reason


class DeafRtu(Iec104Server):
    """Test only: an RTU that takes commands in and never answers them."""

    async def _command(self, connection: Any, asdu: Any, objects: Any, answer: Any) -> None:
        return None


@pytest.mark.asyncio
async def test_iec104_rtu_that_never_answers_gives_no_response() -> None:
    _require_c104()
    point_map = switch_rtu_map(0)
    server = DeafRtu.for_source(point_map, "rtu", port=0, link=FAST)
    server.set_value("cb", 1.0)
    async with server, iec_client(switch_rtu_map(server.port), server.port, command_timeout_s=1.0) as client:
        result = await client.operate_switch("cb", closed=False)
    assert result.outcome == CommandOutcome.NO_RESPONSE
    assert "no activation confirmation" in result.reason
    assert result.confirmed_at is None


@pytest.mark.asyncio
async def test_iec104_confirmed_command_whose_status_does_not_follow_is_not_executed() -> None:
    _require_c104()
    server = Iec104Server.for_source(
        switch_rtu_map(0), "rtu", port=0, link=FAST, on_command=lambda point, value: True, apply_commands=False
    )
    server.set_value("cb", 1.0)
    async with server, iec_client(switch_rtu_map(server.port), server.port, command_timeout_s=5.0) as client:
        result = await client.operate_switch("cb", closed=False, feedback_timeout_s=FEEDBACK_S)
    assert server.commands_received == 1
    assert result.outcome == CommandOutcome.NOT_EXECUTED
    assert result.confirmed_at is not None
    assert result.feedback == 1.0
    assert "not open" in result.reason
    assert_times(result)


def switch_rtu_map(port: int) -> PointMap:
    data = {
        "sources": {"rtu": {"protocol": "iec104", "port": port, "common_address": 1}},
        "points": [
            {"name": "cb", "element": "cb", "quantity": "switch", "source": "rtu", "ioa": 1, "type": "M_DP_NA_1"}
        ],
    }
    return parse_point_map(data, file="t")
