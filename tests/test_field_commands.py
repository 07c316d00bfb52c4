"""Field-side command safety: the field simulator's RTUs refuse what they should, over the real protocols.

Modbus TCP is spoken with hand-built frames (MBAP header + PDU) over a socket, IEC 60870-5-104
with hand-built APDUs, both against a :class:`FieldSimulator` of the demo grid on loopback, so
every refusal is checked where it matters: the twin's switches do not move and the served
values do not change. The exact answers asserted (Modbus exception codes, IEC 104 causes of
transmission and P/N bits) are the ones the docstrings of ``ModbusPointServer`` and
``Iec104Server`` derive from the MODBUS Application Protocol V1.1b3 and IEC 60870-5-101/104.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from leaks import assert_no_leaks

from opendso.errors import PointMapError
from opendso.grid.model import Grid
from opendso.telemetry.iec104 import Iec104Server, LinkParameters
from opendso.telemetry.points import Point, PointMap, parse_point_map, point_map_for_grid
from opendso.telemetry.simulator import FieldSimulator, with_fault_indicators

FAST = LinkParameters(t0_s=2, t1_s=3, t2_s=1, t3_s=2)
#: Generous bound for one answer on a loaded 2-core machine; an answer that comes sooner ends the wait.
ANSWER_S = 10.0


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


def switch_points(point_map: PointMap) -> list[Point]:
    return [p for p in point_map.points if p.quantity == "switch"]


def twin_switches(sim: FieldSimulator) -> dict[str, bool]:
    return {p.element: sim.switch_closed(p.element) for p in switch_points(sim.point_map)}


# -- Modbus ------------------------------------------------------------------------------------------
class RawModbus:
    """A Modbus TCP client that sends hand-built PDUs and returns the raw response PDU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.transaction = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int) -> AsyncIterator[RawModbus]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def request(self, pdu: bytes, unit: int = 1) -> bytes:
        self.transaction += 1
        self.writer.write(struct.pack(">HHHB", self.transaction, 0, len(pdu) + 1, unit) + pdu)
        async with asyncio.timeout(ANSWER_S):
            head = await self.reader.readexactly(7)
            transaction, protocol, length, _ = struct.unpack(">HHHB", head)
            body = await self.reader.readexactly(length - 1)
        assert (transaction, protocol) == (self.transaction, 0)
        return body

    async def read_holding(self, address: int, count: int) -> list[int]:
        body = await self.request(struct.pack(">BHH", 3, address, count))
        assert body[0] == 3, f"read answered {body.hex()}"
        return list(struct.unpack(f">{count}H", body[2:]))


def exception(function_code: int, code: int) -> bytes:
    """The exception response PDU: function code + 0x80, exception code."""
    return bytes([function_code | 0x80, code])


def fc5(address: int, value: int) -> bytes:
    return struct.pack(">BHH", 5, address, value)


def fc6(address: int, value: int) -> bytes:
    return struct.pack(">BHH", 6, address, value)


def fc15(address: int, bits: list[bool]) -> bytes:
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        packed[i // 8] |= bit << (i % 8)
    return struct.pack(">BHHB", 15, address, len(bits), len(packed)) + bytes(packed)


def fc16(address: int, registers: list[int]) -> bytes:
    return struct.pack(f">BHHB{len(registers)}H", 16, address, len(registers), 2 * len(registers), *registers)


@asynccontextmanager
async def modbus_sim(grid: Grid, point_map: PointMap) -> AsyncIterator[tuple[FieldSimulator, int]]:
    sim = FieldSimulator(
        grid, point_map, noise=0, speed=1.0, publish_period_s=0.2, server_options={"field": {"port": 0}}
    )
    async with sim:
        yield sim, sim.servers[0].port  # type: ignore[attr-defined]


def with_coils(point_map: PointMap, count: int) -> PointMap:
    """The map with coils 0..count-1 declared on the first switch points."""
    switches = switch_points(point_map)[:count]
    coil = {p.name: i for i, p in enumerate(switches)}
    points = tuple(replace(p, coil=coil[p.name]) if p.name in coil else p for p in point_map.points)
    return PointMap(point_map.file, point_map.sources, points)


@pytest.mark.asyncio
async def test_modbus_coils_are_refused_unless_declared(grid: Grid) -> None:
    """Item 15: one FC 15 frame opened 12 breakers; a device without coils answers 01 to every coil request."""
    point_map = point_map_for_grid(grid, port=0)
    async with modbus_sim(grid, point_map) as (sim, port), RawModbus.open(port) as mb:
        before = twin_switches(sim)
        first = switch_points(point_map)[0]
        assert first.register is not None
        for address in (0, first.register):  # the register image's start, and a switch register
            assert await mb.request(fc15(address, [False] * 12)) == exception(15, 1)
            assert await mb.request(fc5(address, 0x0000)) == exception(5, 1)
            assert await mb.request(struct.pack(">BHH", 1, address, 12)) == exception(1, 1)
        assert await mb.request(struct.pack(">BHH", 2, 0, 8)) == exception(2, 1)  # no discrete inputs
        assert twin_switches(sim) == before
        assert sim.counters.commands == 0


@pytest.mark.asyncio
async def test_modbus_declared_coils_operate_and_others_are_illegal_addresses(grid: Grid) -> None:
    point_map = with_coils(point_map_for_grid(grid, port=0), 3)
    coils = switch_points(point_map)[:3]
    assert all(sim_closed for sim_closed in grid.switches["closed"][:1])
    async with modbus_sim(grid, point_map) as (sim, port), RawModbus.open(port) as mb:
        before = twin_switches(sim)
        assert all(before[p.element] for p in coils)  # the demo grid's first switches are closed
        # reading the declared coils: their switch states (ON = closed)
        assert await mb.request(struct.pack(">BHH", 1, 0, 3)) == bytes([1, 1, 0b111])
        # an address that is not a declared coil, alone or inside a range: 02, nothing operated
        assert await mb.request(fc5(3, 0x0000)) == exception(5, 2)
        assert await mb.request(fc15(1, [False, False, False])) == exception(15, 2)
        assert await mb.request(struct.pack(">BHH", 1, 2, 2)) == exception(1, 2)
        # FC 5 takes 0xFF00 or 0x0000 only (MODBUS application protocol 6.5): 03
        assert await mb.request(fc5(0, 0x1234)) == exception(5, 3)
        assert twin_switches(sim) == before
        # declared coils operate: OFF opens, ON closes; the answer echoes the request
        assert await mb.request(fc5(0, 0x0000)) == fc5(0, 0x0000)
        assert not sim.switch_closed(coils[0].element)
        assert await mb.request(fc15(1, [False, False])) == struct.pack(">BHH", 15, 1, 2)
        assert not sim.switch_closed(coils[1].element)
        assert not sim.switch_closed(coils[2].element)
        assert await mb.request(struct.pack(">BHH", 1, 0, 3)) == bytes([1, 1, 0b000])
        assert await mb.request(fc5(2, 0xFF00)) == fc5(2, 0xFF00)
        assert sim.switch_closed(coils[2].element)
        others = {k: v for k, v in twin_switches(sim).items() if k not in {p.element for p in coils}}
        assert others == {k: v for k, v in before.items() if k in others}
    assert sim.counters.commands == 4
    assert sim.counters.refused_commands == 0


@pytest.mark.asyncio
async def test_modbus_refused_register_writes_get_exceptions_and_change_nothing(grid: Grid) -> None:
    """Item 16: a refused write was acknowledged and its value served for about a second."""
    point_map = point_map_for_grid(grid, port=0)
    switches = switch_points(point_map)
    a, b = switches[0], switches[1]
    measurement = point_map.points[0]
    assert a.register is not None
    assert b.register == a.register + 1
    assert measurement.register == 0
    async with modbus_sim(grid, point_map) as (sim, port), RawModbus.open(port) as mb:
        before = twin_switches(sim)
        image = await mb.read_holding(0, b.register + 1)
        # value 2 on a switch register: the write itself fails (04), the register keeps serving 1
        assert await mb.request(fc6(a.register, 2)) == exception(6, 4)
        assert await mb.read_holding(a.register, 1) == [1]
        # a measurement register is not a writable address (02): not even the same value is taken
        assert await mb.request(fc6(measurement.register, image[0])) == exception(6, 2)
        assert await mb.request(fc16(0, image[0:2])) == exception(16, 2)
        # half of a float32 point: the address and quantity do not fit a point (02)
        assert await mb.request(fc16(1, [0])) == exception(16, 2)
        # beyond the image, or a gap: 02
        assert await mb.request(fc6(b.register + 10_000, 0)) == exception(6, 2)
        # FC 16 over two switches, one value refused: the whole request is refused, neither moves
        assert await mb.request(fc16(a.register, [0, 2])) == exception(16, 4)
        # FC 16 over a switch and the measurement before it: refused whole (02)
        assert await mb.request(fc16(a.register - 2, [*image[a.register - 2 : a.register], 0])) == exception(16, 2)
        # FC 22 (mask write) and FC 23 (read/write) would bypass these checks: not implemented (01)
        assert await mb.request(struct.pack(">BHHH", 22, a.register, 0, 0)) == exception(22, 1)
        read_write = struct.pack(">BHHHHBH", 23, 0, 1, a.register, 1, 2, 0)
        assert await mb.request(read_write) == exception(23, 1)
        assert await mb.read_holding(0, b.register + 1) == image  # served exactly as before
        assert twin_switches(sim) == before
        assert sim.counters.commands == 0  # every refusal came before the twin was asked to act
        # the accepted write of both switches operates both, in one request
        assert await mb.request(fc16(a.register, [0, 0])) == struct.pack(">BHH", 16, a.register, 2)
        assert not sim.switch_closed(a.element)
        assert not sim.switch_closed(b.element)
        assert await mb.read_holding(a.register, 2) == [0, 0]
        assert await mb.request(fc6(a.register, 1)) == fc6(a.register, 1)
        assert sim.switch_closed(a.element)
    assert sim.counters.commands == 3


@pytest.mark.asyncio
async def test_modbus_generator_set_point_register_takes_a_float(grid: Grid) -> None:
    gen = str(grid.names_of("sym_gen")[0])
    base = point_map_for_grid(grid, port=0)
    register = max(p.register + p.register_count for p in base.points if p.register is not None)
    gen_point = Point(f"{gen}/p", gen, "p", "W", "field", register=register, data_type="float32")
    point_map = PointMap(base.file, base.sources, (*base.points, gen_point))
    async with modbus_sim(grid, point_map) as (sim, port), RawModbus.open(port) as mb:
        regs = list(struct.unpack(">2H", struct.pack(">f", 1234.5)))
        assert await mb.request(fc16(register, regs)) == struct.pack(">BHH", 16, register, 2)
        assert sim.exact_values()[gen_point.name] == pytest.approx(1234.5)
        infinite = list(struct.unpack(">2H", struct.pack(">f", math.inf)))
        assert await mb.request(fc16(register, infinite)) == exception(16, 4)
        assert await mb.read_holding(register, 2) == regs
        assert sim.exact_values()[gen_point.name] == pytest.approx(1234.5)


def test_point_map_coils_are_declared_on_switch_points_only() -> None:
    source = {"dev": {"protocol": "modbus", "port": 502}}

    def point(name: str, quantity: str, register: int, coil: Any) -> dict[str, Any]:
        return {"name": name, "element": name, "quantity": quantity, "source": "dev", "register": register} | {
            "coil": coil
        }

    good = parse_point_map({"sources": source, "points": [point("cb", "switch", 0, 7)]}, file="m.toml")
    assert good.point("cb").coil == 7
    cases = [
        ([point("u", "u", 0, 1)], r"point 'u', field coil: a coil is a switch's command output"),
        ([point("cb", "switch", 0, 70_000)], r"point 'cb', field coil: must be 0..65535"),
        ([point("cb", "switch", 0, "1")], r"point 'cb', field coil: must be int"),
        ([point("a", "switch", 0, 3), point("b", "switch", 1, 3)], r"point 'b', field coil: coil 3 is also point 'a'"),
    ]
    for points, pattern in cases:
        with pytest.raises(PointMapError, match=pattern):
            parse_point_map({"sources": source, "points": points}, file="m.toml")
    mqtt = {"m": {"protocol": "mqtt"}}
    bad = {"name": "x", "element": "x", "quantity": "switch", "source": "m", "topic": "t", "key": "k", "coil": 1}
    with pytest.raises(PointMapError, match=r"field coil: is a modbus field"):
        parse_point_map({"sources": mqtt, "points": [bad]}, file="m.toml")


# -- IEC 60870-5-104 ---------------------------------------------------------------------------------
C_SC, C_DC, C_SE_NC, C_IC, C_RD = 45, 46, 50, 100, 102
ACT, ACT_CON, DEACT, DEACT_CON, ACT_TERM, RETURN_REMOTE = 6, 7, 8, 9, 10, 11
UNKNOWN_TYPE, UNKNOWN_COT, UNKNOWN_CA, UNKNOWN_IOA = 44, 45, 46, 47
OA = 3  # our originator address: mirrored in every answer
DCO_OFF, DCO_ON, SELECT = 0x01, 0x02, 0x80


def asdu(type_id: int, cot: int, ca: int, ioa: int, element: bytes, *, pn: int = 0, test: int = 0) -> bytes:
    """An ASDU with one information object (IEC 60870-5-104 field lengths), built by hand."""
    head = bytes([type_id, 1, cot | pn << 6 | test << 7, OA]) + struct.pack("<H", ca)
    return head + ioa.to_bytes(3, "little") + element


class Raw104:
    """An IEC 104 controlling station made of hand-built APDUs: STARTDT, I frames, S acknowledgements."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ns = self.nr = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int) -> AsyncIterator[Raw104]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        try:
            writer.write(bytes.fromhex("680407000000"))  # STARTDT act
            assert await raw.frame() == bytes.fromhex("0b000000")  # STARTDT con
            yield raw
        finally:
            writer.close()
            await writer.wait_closed()

    async def frame(self) -> bytes:
        """The next APDU's control field and ASDU; I frames are acknowledged, TESTFR act answered."""
        async with asyncio.timeout(ANSWER_S):
            while True:
                start, length = await self.reader.readexactly(2)
                assert start == 0x68
                body = await self.reader.readexactly(length)
                if body[0] & 1 == 0:
                    self.nr = (self.nr + 1) % 32768
                    self.writer.write(bytes([0x68, 4, 1, 0]) + struct.pack("<H", self.nr << 1))
                elif body[0] == 0x43:
                    self.writer.write(bytes.fromhex("680483000000"))
                    continue
                return body

    def send(self, data: bytes) -> None:
        self.writer.write(bytes([0x68, 4 + len(data)]) + struct.pack("<HH", self.ns << 1, self.nr << 1) + data)
        self.ns = (self.ns + 1) % 32768

    async def exchange(self, data: bytes, *, sync_ioa: int, ca: int = 1) -> list[bytes]:
        """Send ``data``, then a read of ``sync_ioa``; return every ASDU answered before the read's answer.

        The RTU answers the ASDUs of one connection in order, so what it sends for ``data`` comes
        before the answer to the read: no waiting for an absence. Spontaneous data (COT 3) is left out.
        """
        self.send(data)
        self.send(asdu(C_RD, 5, ca, sync_ioa, b""))
        answers = []
        while True:
            body = await self.frame()
            if body[0] & 1:
                continue  # S or U frame
            got = body[4:]
            if got[0] != C_RD and got[2] & 0x3F == 5 and int.from_bytes(got[6:9], "little") == sync_ioa:
                return answers
            if got[2] & 0x3F != 3:
                answers.append(got)


def mirror(sent: bytes, cot: int, pn: int) -> bytes:
    """``sent`` with another cause and P/N bit: the confirmation the RTU must send."""
    return sent[:2] + bytes([cot | pn << 6 | (sent[2] & 0x80)]) + sent[3:]


def double_point(ioa: int, closed: bool) -> bytes:
    """The return information of a double point (M_DP_NA_1, COT 11), as the RTU sends it (OA 0)."""
    head = bytes([3, 1, RETURN_REMOTE, 0]) + struct.pack("<H", 1)
    return head + ioa.to_bytes(3, "little") + bytes([2 if closed else 1])


@asynccontextmanager
async def iec_sim(grid: Grid, **options: Any) -> AsyncIterator[tuple[FieldSimulator, Iec104Server, PointMap]]:
    base = point_map_for_grid(grid, protocol="iec104", port=0)
    gen = str(grid.names_of("sym_gen")[0])
    gen_point = Point(f"{gen}/p", gen, "p", "W", "field", common_address=1, ioa=5001, type="M_ME_NC_1")
    point_map = PointMap(base.file, base.sources, (*base.points, gen_point))
    options = {"port": 0, "link": FAST, **options}
    sim = FieldSimulator(grid, point_map, noise=0, speed=1.0, publish_period_s=0.2, server_options={"field": options})
    async with sim:
        yield sim, sim.servers[0].server, point_map  # type: ignore[attr-defined]


def breaker_of(point_map: PointMap) -> tuple[Point, int]:
    p = switch_points(point_map)[0]
    assert p.ioa is not None
    return p, p.ioa + 100_000


@pytest.mark.asyncio
async def test_iec104_refused_command_is_confirmed_negatively_without_echo(grid: Grid) -> None:
    """Item 17: the twin refuses a set-point on a sensor's measurement: ACT_CON P/N = 1, nothing echoed."""
    async with iec_sim(grid) as (sim, server, point_map), Raw104.open(server.port) as rtu:
        sensor = point_map.points[0]
        assert sensor.type == "M_ME_NC_1"
        assert sensor.ioa is not None
        served = server.value(sensor.name)
        command = asdu(C_SE_NC, ACT, 1, sensor.ioa + 100_000, struct.pack("<fB", 42.0, 0))
        assert await rtu.exchange(command, sync_ioa=sensor.ioa) == [mirror(command, ACT_CON, 1)]
        assert server.value(sensor.name) == served
        assert sim.counters.refused_commands == 1
        # a set-point the twin takes (a generator, direct operate): ACT_CON, return information, ACT_TERM
        gen = point_map.point(next(p.name for p in point_map.points if p.ioa == 5001))
        command = asdu(C_SE_NC, ACT, 1, 105_001, struct.pack("<fB", 1500.0, 0))
        answers = await rtu.exchange(command, sync_ioa=5001)
        ret = bytes([13, 1, RETURN_REMOTE, 0]) + struct.pack("<H", 1) + (5001).to_bytes(3, "little")
        ret += struct.pack("<fB", 1500.0, 0)
        assert answers == [mirror(command, ACT_CON, 0), ret, mirror(command, ACT_TERM, 0)]
        assert sim.exact_values()[gen.name] == pytest.approx(1500.0)


@pytest.mark.asyncio
async def test_iec104_select_before_operate(grid: Grid) -> None:
    """Item 18: select, then an execute matching object, type and value on the same connection."""
    async with iec_sim(grid) as (sim, server, point_map), Raw104.open(server.port) as rtu:
        breaker, cmd_ioa = breaker_of(point_map)
        assert breaker.ioa is not None
        assert server.command_mode(breaker.name) == "select"  # the default for switching commands
        assert sim.switch_closed(breaker.element)
        # an execute without a select: refused
        execute = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF]))
        assert await rtu.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        # select: a positive confirmation only; nothing operates
        select = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF | SELECT]))
        assert await rtu.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 0)]
        assert sim.switch_closed(breaker.element)
        # an execute with another value than selected: refused, and the selection is over
        other = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_ON]))
        assert await rtu.exchange(other, sync_ioa=breaker.ioa) == [mirror(other, ACT_CON, 1)]
        assert await rtu.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        assert sim.switch_closed(breaker.element)
        # select, execute: ACT_CON, the return information (COT 11), ACT_TERM (COT 10)
        assert await rtu.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 0)]
        answers = await rtu.exchange(execute, sync_ioa=breaker.ioa)
        assert answers == [mirror(execute, ACT_CON, 0), double_point(breaker.ioa, False), mirror(execute, ACT_TERM, 0)]
        assert not sim.switch_closed(breaker.element)
        # the selection was used up: the same execute again is refused
        assert await rtu.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        # a select qualifier on a direct-operate object (the generator's set-point) is refused
        setpoint = asdu(C_SE_NC, ACT, 1, 105_001, struct.pack("<fB", 10.0, SELECT))
        assert await rtu.exchange(setpoint, sync_ioa=5001) == [mirror(setpoint, ACT_CON, 1)]
    assert sim.counters.commands == 1


@pytest.mark.asyncio
async def test_iec104_select_of_an_object_the_twin_would_refuse_is_confirmed_negatively(grid: Grid) -> None:
    """A fault-passage indicator (a single point) has a command object, select-before-operate; the twin takes none."""
    point_map = with_fault_indicators(point_map_for_grid(grid, protocol="iec104", port=0), grid)
    indicator = next(p for p in point_map.points if p.quantity == "fpi")
    assert indicator.type == "M_SP_NA_1"
    assert indicator.ioa is not None
    sim = FieldSimulator(
        grid, point_map, noise=0, speed=1.0, publish_period_s=0.2, server_options={"field": {"port": 0, "link": FAST}}
    )
    async with sim, Raw104.open(sim.servers[0].server.port) as rtu:  # type: ignore[attr-defined]
        select = asdu(C_SC, ACT, 1, indicator.ioa + 100_000, bytes([1 | SELECT]))
        assert await rtu.exchange(select, sync_ioa=indicator.ioa) == [mirror(select, ACT_CON, 1)]
        execute = asdu(C_SC, ACT, 1, indicator.ioa + 100_000, bytes([1]))
        assert await rtu.exchange(execute, sync_ioa=indicator.ioa) == [mirror(execute, ACT_CON, 1)]
    assert sim.counters.commands == 0


@pytest.mark.asyncio
async def test_iec104_selection_belongs_to_its_connection_and_deactivation_cancels_it(grid: Grid) -> None:
    async with (
        iec_sim(grid) as (sim, server, point_map),
        Raw104.open(server.port) as first,
        Raw104.open(server.port) as second,
    ):
        breaker, cmd_ioa = breaker_of(point_map)
        assert breaker.ioa is not None
        select = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF | SELECT]))
        execute = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF]))
        assert await first.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 0)]
        # another connection can neither execute nor select it
        assert await second.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        assert await second.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 1)]
        # nor cancel it: its deactivation finds no selection of its own (DEACT_CON, P/N = 1)
        deselect = asdu(C_DC, DEACT, 1, cmd_ioa, bytes([DCO_OFF | SELECT]))
        assert await second.exchange(deselect, sync_ioa=breaker.ioa) == [mirror(deselect, DEACT_CON, 1)]
        # the selecting connection cancels it (DEACT_CON, COT 9), after which its execute is refused
        assert await first.exchange(deselect, sync_ioa=breaker.ioa) == [mirror(deselect, DEACT_CON, 0)]
        assert await first.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        # a deactivation never operates, whatever its qualifier
        deexecute = asdu(C_DC, DEACT, 1, cmd_ioa, bytes([DCO_OFF]))
        assert await first.exchange(deexecute, sync_ioa=breaker.ioa) == [mirror(deexecute, DEACT_CON, 1)]
        assert sim.switch_closed(breaker.element)
        # the second connection may select it now, and operate it
        assert await second.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 0)]
        answers = await second.exchange(execute, sync_ioa=breaker.ioa)
        assert answers[0] == mirror(execute, ACT_CON, 0)
        assert answers[-1] == mirror(execute, ACT_TERM, 0)
        assert not sim.switch_closed(breaker.element)
    assert sim.counters.commands == 1


@pytest.mark.asyncio
async def test_iec104_selection_times_out(grid: Grid) -> None:
    timeout_s = 0.3
    async with iec_sim(grid, select_timeout_s=timeout_s) as (sim, server, point_map), Raw104.open(server.port) as rtu:
        breaker, cmd_ioa = breaker_of(point_map)
        assert breaker.ioa is not None
        select = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF | SELECT]))
        execute = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF]))
        assert await rtu.exchange(select, sync_ioa=breaker.ioa) == [mirror(select, ACT_CON, 0)]
        await asyncio.sleep(3 * timeout_s)  # a busy machine only makes the selection older
        assert await rtu.exchange(execute, sync_ioa=breaker.ioa) == [mirror(execute, ACT_CON, 1)]
        assert sim.switch_closed(breaker.element)
    assert sim.counters.commands == 0


@pytest.mark.asyncio
async def test_iec104_wrong_cause_and_unknown_addresses_are_mirrored_negatively(grid: Grid) -> None:
    """Item 18: COT 3 and deactivations operated breakers; unknown type, CA and IOA get 44, 46, 47."""
    async with iec_sim(grid) as (sim, server, point_map), Raw104.open(server.port) as rtu:
        breaker, cmd_ioa = breaker_of(point_map)
        assert breaker.ioa is not None
        before = twin_switches(sim)
        sync = breaker.ioa
        for cot in (3, 1, 5, 7, 10, 20, 44):  # anything but activation and deactivation
            wrong = asdu(C_DC, cot, 1, cmd_ioa, bytes([DCO_OFF]))
            assert await rtu.exchange(wrong, sync_ioa=sync) == [mirror(wrong, UNKNOWN_COT, 1)], cot
        cases = [
            (asdu(C_DC, ACT, 1, 999_999, bytes([DCO_OFF])), UNKNOWN_IOA),  # no object there
            (asdu(C_DC, ACT, 9, cmd_ioa, bytes([DCO_OFF])), UNKNOWN_CA),  # no station 9
            (asdu(C_SC, ACT, 1, cmd_ioa, bytes([0])), UNKNOWN_TYPE),  # a single command to a double command object
            (asdu(C_DC, ACT, 1, breaker.ioa, bytes([DCO_OFF])), UNKNOWN_TYPE),  # a command to the monitored object
            (asdu(47, ACT, 1, cmd_ioa, bytes([1])), UNKNOWN_TYPE),  # regulating step command: not supported
            (asdu(200, ACT, 1, cmd_ioa, bytes([1])), UNKNOWN_TYPE),  # no such type
            (asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF, 0])), UNKNOWN_TYPE),  # not the structure of its type
        ]
        for sent, cot in cases:
            assert await rtu.exchange(sent, sync_ioa=sync) == [mirror(sent, cot, 1)], sent.hex()
        # invalid double command states (0 and 3 are not permitted) and the test bit: negative confirmations
        for element in (bytes([0x00 | SELECT]), bytes([0x03 | SELECT])):
            sent = asdu(C_DC, ACT, 1, cmd_ioa, element)
            assert await rtu.exchange(sent, sync_ioa=sync) == [mirror(sent, ACT_CON, 1)]
        test = asdu(C_DC, ACT, 1, cmd_ioa, bytes([DCO_OFF | SELECT]), test=1)
        assert await rtu.exchange(test, sync_ioa=sync) == [mirror(test, ACT_CON, 1)]
        assert twin_switches(sim) == before
        # interrogation still works on the same connection: ACT_CON, the objects (COT 20), ACT_TERM
        gi = asdu(C_IC, ACT, 1, 0, bytes([20]))
        answers = await rtu.exchange(gi, sync_ioa=sync)
        assert answers[0] == mirror(gi, ACT_CON, 0)
        assert answers[-1] == mirror(gi, ACT_TERM, 0)
        assert sum(a[1] & 0x7F for a in answers[1:-1]) == len(point_map.points)
        assert all(a[2] == 20 for a in answers[1:-1])
    assert sim.counters.commands == 0


@pytest.mark.asyncio
async def test_iec104_link_closes_on_a_sequence_error(grid: Grid) -> None:
    async with iec_sim(grid) as (_, server, point_map), Raw104.open(server.port) as rtu:
        breaker, _ = breaker_of(point_map)
        assert breaker.ioa is not None
        rtu.ns = 5  # N(S) jumps: IEC 60870-5-104 clause 5.2 closes the connection
        rtu.send(asdu(C_RD, 5, 1, breaker.ioa, b""))
        async with asyncio.timeout(ANSWER_S):
            assert await rtu.reader.read() == b""
        assert server.connections == 0
