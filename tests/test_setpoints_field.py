"""Export limits end to end: arbiter -> gate -> dispatcher -> real Modbus / IEC 104 -> the field simulator's DER.

Over loopback against the field simulator: a limit is sent, the generator's output in the twin's
power flow follows, and the read-back (``p_limit`` as the adapter polls it) confirms it (the
command completes); the DER's watchdog applies its fail-safe limit when refreshes stop (the
simulated clock is driven, no sleeps) and a refresh ends it; raw writes from outside the control
room (out of range, NaN, the read-only ``p_available``) are refused by the simulated DER with the
protocol's negative answer and change nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from leaks import assert_no_leaks
from test_setpoints import sunny_step
from test_telemetry_commands import FAST, _require_c104, wait_polled

from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.setpoints import (
    FlexibleDer,
    SetpointArbiter,
    SetpointGate,
    SetpointGateConfig,
    SetpointRequest,
    SetpointSource,
)
from opendso.operations.switching import (
    SafetyGate,
    SwitchingDispatcher,
    SwitchingState,
    route_setpoints_by_point_map,
)
from opendso.telemetry import CommandOutcome, TelemetryAdapter
from opendso.telemetry.modbus import ModbusPoller
from opendso.telemetry.modbus.codec import encode_value
from opendso.telemetry.points import PointMap, point_map_for_grid
from opendso.telemetry.simulator import DerSettings, FieldSimulator, der_points

#: The DER's watchdog (simulated seconds) and fail-safe export limit.
WATCHDOG_S, FAIL_SAFE_W = 60.0, 400.0
#: How long a set-point's read-back may take to follow (a 0.1 s poll on a busy machine).
FEEDBACK_S = 10.0


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


@dataclass
class Field:
    """The simulator serving a PV generator's export limit, an adapter reading it, and the arbiter."""

    sim: FieldSimulator
    adapter: TelemetryAdapter
    point_map: PointMap
    gen: str
    row: int
    rating: float
    latest: dict[str, Measurement]
    arbiter: SetpointArbiter

    @property
    def point(self) -> str:
        return f"{self.gen}/p_limit"

    def output_w(self) -> float:
        """The generator's active power in the twin's power flow."""
        return float(self.sim.result.output["sym_gen"]["p"][self.row])

    async def read_back(self, want: float, timeout_s: float = FEEDBACK_S) -> float:
        """Wait until the adapter's latest ``p_limit`` reads ``want`` (float32 precision); return it."""
        async with asyncio.timeout(timeout_s):
            while True:
                m = self.latest.get(self.point)
                if m is not None and m.is_good and m.value == pytest.approx(want, rel=1e-6):
                    return m.value
                await asyncio.sleep(0.05)


def field_map(grid: Grid, gen: str, protocol: str) -> PointMap:
    base = point_map_for_grid(grid, protocol=protocol, port=0, poll_period_s=0.1)  # type: ignore[arg-type]
    return der_points(base, [gen])


@asynccontextmanager
async def field(grid: Grid, protocol: str, *, select: bool = False) -> AsyncIterator[Field]:
    gen = str(grid.names_of("sym_gen")[0])
    row = int(np.flatnonzero(grid.names_of("sym_gen") == gen)[0])
    rating = float(grid.component("sym_gen")["p_specified"][row])
    point_map = field_map(grid, gen, protocol)
    options: dict[str, Any] = {"port": 0}
    if protocol == "iec104":
        _require_c104()
        options["link"] = FAST
        if select:
            options["command_modes"] = {f"{gen}/p_limit": "select"}
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        speed=1.0,
        publish_period_s=0.1,
        start_step=sunny_step(grid, gen),
        server_options={"field": options},
        der={gen: DerSettings(watchdog_s=WATCHDOG_S, fail_safe_w=FAIL_SAFE_W)},
    )
    latest: dict[str, Measurement] = {}

    def keep(batch: list[Measurement]) -> None:
        for m in batch:
            latest[m.point] = m

    async with sim:
        adapter: TelemetryAdapter
        if protocol == "modbus":
            port = sim.servers[0].port  # type: ignore[attr-defined]
            adapter = ModbusPoller(name="mb", point_map=point_map, source="field", port=port, on_batch=keep)
        else:
            from opendso.telemetry.iec104 import Iec104Client

            port = sim.servers[0].server.port  # type: ignore[attr-defined]
            adapter = Iec104Client(
                name="iec",
                point_map=point_map,
                port=port,
                link=FAST,
                backoff_s=0.05,
                backoff_max_s=0.2,
                startdt_timeout_s=0.5,
                command_timeout_s=5.0,
                on_batch=keep,
            )
        async with adapter:
            async with asyncio.timeout(30.0):
                while not getattr(adapter, "connected", True):
                    await asyncio.sleep(0.05)
            await wait_polled(adapter, point_map, timeout=30.0)
            dispatcher = SwitchingDispatcher(
                SafetyGate(),
                lambda: grid,
                SwitchingState,
                lambda switch: None,
                setpoint_route=route_setpoints_by_point_map([adapter], point_map),
                feedback_timeout_s=FEEDBACK_S,
                select_before_operate=True if select else None,
            )
            telemetry = (f"{gen}/p_available", f"{gen}/p_limit")
            gate = SetpointGate(
                [FlexibleDer(f"{gen}/p_limit", rating, telemetry=telemetry, name=gen)],
                SetpointGateConfig(max_age_s=60.0),
                latest=latest.get,
            )
            arbiter = SetpointArbiter(dispatcher, gate, refresh_s=WATCHDOG_S / 3)
            yield Field(sim, adapter, point_map, gen, row, rating, latest, arbiter)


async def limit_follow_watchdog(f: Field) -> None:
    """The shared story: limit, output follows, read-back confirms; refreshes stop, fail-safe; refresh ends it."""
    available = f.sim.generator_power(f.gen)[0]
    assert available > 2 * FAIL_SAFE_W
    assert f.output_w() == pytest.approx(available)
    limit = round(0.5 * available, 1)
    out = await f.arbiter.submit(SetpointRequest(SetpointSource.ANM, f.point, limit, "line overload"))
    assert out.status == "sent", out
    assert out.result is not None
    assert out.result.outcome is CommandOutcome.COMPLETED, out.result
    assert out.result.feedback == pytest.approx(limit, rel=1e-6)  # the read-back confirmed it
    assert f.output_w() == pytest.approx(limit, rel=1e-6)  # the twin's power flow follows
    await f.read_back(limit)
    # refreshes stop: the DER's watchdog runs out on the simulated clock and its fail-safe applies
    f.sim.jump_to(f.sim.elapsed_s + WATCHDOG_S + 1.0)
    assert f.sim.der_state(f.gen).fail_safe
    assert f.output_w() == pytest.approx(FAIL_SAFE_W)
    await f.read_back(FAIL_SAFE_W)  # the read-back reports the limit in force
    # the arbiter's refresh (its next heartbeat) ends the fail-safe
    [beat] = await f.arbiter.refresh(datetime.now(UTC) + timedelta(seconds=f.arbiter.refresh_s))
    assert beat.status == "sent", beat
    assert not f.sim.der_state(f.gen).fail_safe
    assert f.output_w() == pytest.approx(limit, rel=1e-6)
    # releasing writes the rating: the DER follows its profile again
    free = await f.arbiter.release(SetpointSource.ANM, f.point, reason="constraint gone")
    assert (free.status, free.effective_w, free.sent_w) == ("sent", None, f.rating)
    assert f.output_w() == pytest.approx(available)


@pytest.mark.asyncio
async def test_export_limit_over_modbus(grid: Grid) -> None:
    async with field(grid, "modbus") as f:
        await limit_follow_watchdog(f)
        p = f.point_map.point(f.point)
        assert p.table == "holding"
        assert p.data_type == "float32"
        assert p.register is not None


@pytest.mark.asyncio
async def test_export_limit_over_iec104_with_select_before_operate(grid: Grid) -> None:
    async with field(grid, "iec104", select=True) as f:
        first = await f.arbiter.submit(SetpointRequest(SetpointSource.OPERATOR, f.point, 1000.0, "test"))
        assert first.result is not None
        assert first.result.select_before_operate, first
        await f.arbiter.release(SetpointSource.OPERATOR, f.point, reason="test over")
        await limit_follow_watchdog(f)


@pytest.mark.asyncio
async def test_raw_modbus_writes_from_outside_are_refused_by_the_der(grid: Grid) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    async with field(grid, "modbus") as f:
        f.sim.apply_command(f.point, 1234.0)
        port = f.sim.servers[0].port  # type: ignore[attr-defined]
        limit = f.point_map.point(f.point)
        available = f.point_map.point(f"{f.gen}/p_available")
        assert limit.register is not None
        assert available.register is not None
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5)
        await client.connect()
        try:
            for bad in (-5.0, math.nan, math.inf, f.rating * 10):
                response = await client.write_registers(limit.register, encode_value(bad, "float32"), device_id=1)
                assert response.isError(), bad
                assert response.exception_code == 4, bad  # server device failure: the DER refuses the value
            # the available power is read-only (an input register): not a writable address
            response = await client.write_registers(available.register, encode_value(0.0, "float32"), device_id=1)
            assert response.isError()
            assert response.exception_code == 2
            # half a limit (one register of the pair) is not a write of a whole point
            response = await client.write_register(limit.register, 0, device_id=1)
            assert response.isError()
            assert response.exception_code == 2
            # a value in range from outside is taken by the DER (the arbiter does not own the device)
            ok = await client.write_registers(limit.register, encode_value(1000.0, "float32"), device_id=1)
            assert not ok.isError()
        finally:
            client.close()
        assert f.sim.der_state(f.gen).limit_w == 1000.0
        assert f.sim.servers[0].server.writes_refused == 6  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_raw_iec104_set_points_from_outside_are_refused_by_the_der(grid: Grid) -> None:
    async with field(grid, "iec104") as f:
        f.sim.apply_command(f.point, 1234.0)
        # set-points sent straight from an adapter, around the arbiter and its gate
        too_much = await f.adapter.send_setpoint(f.point, f.rating * 10)
        negative = await f.adapter.send_setpoint(f.point, -1.0)
        read_only = await f.adapter.send_setpoint(f"{f.gen}/p_available", 0.0)
        for refused in (too_much, negative, read_only):
            assert refused.outcome is CommandOutcome.REFUSED, refused
            assert "negative" in refused.reason, refused  # the DER said no, over the link
            assert refused.sent_at is not None
        assert f.sim.der_state(f.gen).limit_w == 1234.0
