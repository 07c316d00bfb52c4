"""Modbus TCP poller against a real pymodbus server on loopback (ephemeral ports)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from itertools import product
from typing import Any

import pytest
import pytest_asyncio
from leaks import assert_no_leaks

from opendso.telemetry import Measurement, ModbusPointServer, ModbusPoller, Quality
from opendso.telemetry.modbus import decode_registers, encode_value
from opendso.telemetry.points import DATA_TYPES, PointMap, parse_point_map

ORDERS = list(product(["big", "little"], ["big", "little"]))
#: (data type, scale, offset, engineering value) - values exactly representable after scaling
CASES = [
    ("int16", 0.1, 0.0, -1234.5),
    ("uint16", 10.0, -100.0, 65_000.0),
    ("int32", 1.0, 0.0, -2_000_000.0),
    ("uint32", 0.001, 0.0, 3_000_000.0),
    ("float32", 1.0, 0.0, 10_512.5),
    ("float64", 1.0, 5.0, 123_456.789_012_5),
]


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


def test_register_encoding_is_explicit() -> None:
    assert encode_value(1.0, "float32") == [0x3F80, 0x0000]
    assert encode_value(1.0, "float32", word_order="little") == [0x0000, 0x3F80]
    assert encode_value(1.0, "float32", byte_order="little") == [0x803F, 0x0000]
    assert encode_value(0x12345678, "uint32", "little", "little") == [0x7856, 0x3412]
    assert encode_value(-2, "int16") == [0xFFFE]
    with pytest.raises(ValueError, match="does not fit uint16"):
        encode_value(70_000, "uint16")
    for data_type, (word, byte) in product(DATA_TYPES, ORDERS):
        regs = encode_value(100.0, data_type, word, byte)
        assert len(regs) == DATA_TYPES[data_type]
        assert decode_registers(regs, data_type, word, byte) == 100.0


def make_map(port: int, *, stale_after_s: float = 30.0) -> PointMap:
    points: list[dict[str, Any]] = []
    register = 0
    for (data_type, scale, offset, _), (word, byte) in product(CASES, ORDERS):
        points.append(
            {
                "name": f"{data_type}-{word}-{byte}",
                "element": "E",
                "quantity": "p",
                "source": "dev",
                "register": register,
                "data_type": data_type,
                "word_order": word,
                "byte_order": byte,
                "scale": scale,
                "offset": offset,
                "poll_group": "fast" if data_type.startswith("float") else "slow",
            }
        )
        register += DATA_TYPES[data_type] + 1  # leave gaps: blocks bridge them
    data = {
        "sources": {
            "dev": {
                "protocol": "modbus",
                "port": port,
                "unit_id": 1,
                "stale_after_s": stale_after_s,
                "poll_groups": {"fast": 0.05, "slow": 0.1},
            }
        },
        "points": points,
    }
    return parse_point_map(data, file="test")


def expected_values() -> dict[str, float]:
    return {f"{t}-{w}-{b}": value for (t, _, _, value), (w, b) in product(CASES, ORDERS)}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ModbusPointServer]:
    pm = make_map(0)
    srv = ModbusPointServer.for_source(pm, "dev", port=0)
    srv.set_values(expected_values())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def collect(poller: ModbusPoller, until: Any, timeout: float = 5.0) -> dict[str, Measurement]:
    """Gather the newest measurement per point until ``until(latest)`` holds."""
    latest: dict[str, Measurement] = {}
    async with asyncio.timeout(timeout):
        while not until(latest):
            for m in await poller.next_batch():
                latest[m.point] = m
    return latest


def all_good(latest: dict[str, Measurement]) -> bool:
    return len(latest) == len(expected_values()) and all(m.quality == Quality.GOOD for m in latest.values())


@pytest.mark.asyncio
async def test_values_scaling_and_orders(server: ModbusPointServer) -> None:
    poller = ModbusPoller(name="mb", point_map=make_map(server.port), source="dev")
    async with poller:
        latest = await collect(poller, all_good)
    for name, value in expected_values().items():
        assert latest[name].value == pytest.approx(value, rel=1e-7), name
        assert latest[name].time.tzinfo is not None
    assert poller.counters.errors == 0
    assert poller.counters.invalid == 0
    assert poller.round_trips_s


@pytest.mark.asyncio
async def test_exception_and_short_read_give_invalid_for_that_point_only(server: ModbusPointServer) -> None:
    server.fail("float32-big-big")
    server.short_read("int32-little-little")
    poller = ModbusPoller(name="mb", point_map=make_map(server.port), source="dev")
    bad = {"float32-big-big", "int32-little-little"}

    def settled(latest: dict[str, Measurement]) -> bool:
        return len(latest) == len(expected_values()) and all(
            (m.quality == Quality.IV) == (name in bad) for name, m in latest.items()
        )

    async with poller:
        latest = await collect(poller, settled)
        assert math.isnan(latest["float32-big-big"].value)
        assert latest["float32-little-big"].value == pytest.approx(10_512.5)  # a neighbour in the same block
        assert latest["int32-big-big"].value == -2_000_000.0
        assert poller.counters.errors >= 2
        assert poller.counters.invalid == 2  # handed out once each, not at every poll
        assert poller.running
        # the source recovers: the point is good again
        server.fail("float32-big-big", None)
        server.short_read("int32-little-little", enabled=False)
        latest = await collect(poller, lambda d: {k for k, m in d.items() if m.quality == Quality.GOOD} >= bad)
    assert latest["float32-big-big"].value == pytest.approx(10_512.5)


@pytest.mark.asyncio
async def test_deadband_suppresses_small_changes(server: ModbusPointServer) -> None:
    data = {
        "sources": {"dev": {"protocol": "modbus", "port": server.port, "poll_groups": {"g": 0.02}}},
        "points": [
            {"name": "float32-big-big", "element": "E", "quantity": "p", "source": "dev",
             "register": server.points["float32-big-big"].register, "deadband": 10.0}
        ],
    }  # fmt: skip
    pm = parse_point_map(data, file="test")
    server.set_value("float32-big-big", 1000.0)
    async with ModbusPoller(name="mb", point_map=pm, source="dev") as poller:
        first = await poller.next_batch(2.0)
        assert [m.value for m in first] == [1000.0]
        server.set_value("float32-big-big", 1005.0)  # within the deadband
        await asyncio.sleep(0.15)
        assert poller.drain() == []
        server.set_value("float32-big-big", 1020.0)
        batch = await poller.next_batch(2.0)
    assert [m.value for m in batch] == [1020.0]


@pytest.mark.asyncio
async def test_server_restart_stale_then_good_after_reconnect(server: ModbusPointServer) -> None:
    poller = ModbusPoller(
        name="mb", point_map=make_map(server.port, stale_after_s=0.3), source="dev", backoff_s=0.05, backoff_max_s=0.2
    )
    async with poller:
        await collect(poller, all_good)
        await server.stop()
        stale = await collect(poller, lambda d: len(d) == len(expected_values()) and all(
            m.quality & Quality.NT for m in d.values()))  # fmt: skip
        assert stale["float32-big-big"].value == pytest.approx(10_512.5)  # last value, flagged not topical
        assert not poller.connected
        server.set_value("float32-big-big", 42.0)
        await server.start()  # same port
        latest = await collect(poller, all_good)
    assert latest["float32-big-big"].value == 42.0
    assert poller.counters.reconnects >= 1
