"""Modbus TCP client: a poller that reads a point map's registers, and writes its commands.

:class:`ModbusPoller` reads one Modbus source (one device: host, port, unit id) of a point map.
Points are read in blocks of neighbouring registers, each poll group at its own period. A
block answered by an exception or with the wrong number of registers is read again point by
point, so one bad register does not blind its neighbours; a point that still fails is handed
out with quality IV and value NaN. Protocol errors are
counted and logged, never raised. A lost connection is retried with exponential back-off, and
points the source has not updated for ``stale_after_s`` are handed out once with quality NT.
A polled value is handed out when its quality changes or it moved beyond the point's deadband.

Commands (:meth:`~opendso.telemetry.base.TelemetryAdapter.operate_switch`,
:meth:`~opendso.telemetry.base.TelemetryAdapter.send_setpoint`) are writes on the poller's
connection: a switch point with a declared ``coil`` is operated by FC 5 on that coil (ON
closes, OFF opens), any other point by writing its holding register(s) (FC 6 for one
register, FC 16 for more) with the value encoded as the point reads it. The write response is
the confirmation: an exception response is a refusal, no response within ``timeout_s`` is no
response. The feedback is the point's status as polled: the command is completed when a poll
hands out the requested value (see :mod:`opendso.telemetry.commands`). Modbus has no
select-before-operate: a command that asks for it is refused. Refused before anything is sent:
an unknown point, a switch command to a point that is not a switch (or a set-point to one), a
point in the input-register table, a value outside the point's range or its data type.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.commands import CommandAttempt, CommandKind, CommandRequest, CommandResult, setpoint_tolerance
from opendso.telemetry.modbus.codec import decode_registers, encode_value, exception_text, resolution
from opendso.telemetry.points import Connection, Point, PointMap
from opendso.telemetry.quality import Quality
from opendso.timeutil import Backoff

__all__ = ["MAX_BLOCK", "MAX_GAP", "ModbusPoller", "modbus_pollers"]

log = logging.getLogger(__name__)

#: Largest block read in one request (Modbus allows 125 registers per read).
MAX_BLOCK = 125
#: Unused registers a block may bridge to save a request.
MAX_GAP = 8


@dataclass(frozen=True)
class _Block:
    table: str
    start: int
    count: int
    points: tuple[Point, ...]


def _plan_blocks(points: Iterable[Point]) -> list[_Block]:
    """Group points of one poll group into as few reads of neighbouring registers as possible."""
    blocks: list[_Block] = []
    for table in ("holding", "input"):
        ordered = sorted((p for p in points if p.table == table), key=lambda p: p.register or 0)
        current: list[Point] = []
        start = end = 0
        for p in ordered:
            assert p.register is not None
            p_end = p.register + p.register_count
            if current and p.register - end <= MAX_GAP and p_end - start <= MAX_BLOCK:
                current.append(p)
                end = max(end, p_end)
                continue
            if current:
                blocks.append(_Block(table, start, end - start, tuple(current)))
            current, start, end = [p], p.register, p_end
        if current:
            blocks.append(_Block(table, start, end - start, tuple(current)))
    return blocks


@dataclass
class _PointState:
    value: float = math.nan
    quality: Quality | None = None  # None until first handed out
    sent_value: float = math.nan
    updated: float = 0.0  # monotonic time of the last answer from the source


@dataclass
class ModbusPoller(TelemetryAdapter):
    """Poll one Modbus TCP source of a point map; see the module docstring for the behaviour.

    ``backoff_s`` is the first reconnect delay, doubled after each failure up to
    ``backoff_max_s``; ``timeout_s`` bounds each connect and each request.
    """

    point_map: PointMap | None = None
    source: str = ""
    timeout_s: float = 1.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    host: str | None = None
    port: int | None = None
    _src: Connection = field(init=False, repr=False)
    _client: AsyncModbusTcpClient | None = field(default=None, init=False, repr=False)
    _states: dict[str, _PointState] = field(default_factory=dict, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _next_attempt: float = field(default=0.0, init=False, repr=False)
    _backoff: Backoff = field(init=False, repr=False)
    _ever_connected: bool = field(default=False, init=False, repr=False)
    round_trips_s: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.point_map is None or self.source not in self.point_map.sources:
            raise ValueError(f"modbus poller {self.name}: unknown source {self.source!r}")
        self._src = self.point_map.sources[self.source]
        if self._src.protocol != "modbus":
            raise ValueError(f"modbus poller {self.name}: source {self.source!r} uses {self._src.protocol}")
        self._points = self.point_map.points_of(self.source)
        self._by_name = {p.name: p for p in self._points}
        self._backoff = Backoff(self.backoff_s, self.backoff_max_s)

    @property
    def connected(self) -> bool:
        """True while a TCP connection to the source is up."""
        return self._client is not None and self._client.connected

    async def _run(self) -> None:
        now = time.monotonic()
        self._states = {p.name: _PointState(updated=now) for p in self._points}
        groups: dict[str, list[Point]] = {}
        for p in self._points:
            groups.setdefault(p.poll_group, []).append(p)
        async with asyncio.TaskGroup() as tg:
            for group, points in groups.items():
                period = self._src.poll_groups.get(group, 1.0)
                tg.create_task(self._poll_group(group, period, _plan_blocks(points)))
            tg.create_task(self._watch_stale())

    async def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- connection ----------------------------------------------------------------------------
    async def _connect(self) -> bool:
        async with self._lock:
            if self.connected:
                return True
            now = time.monotonic()
            if now < self._next_attempt:
                return False
            host = self.host or self._src.host
            port = self.port or self._src.port
            if self._client is not None:
                self._client.close()
            self._client = AsyncModbusTcpClient(
                host, port=port, timeout=self.timeout_s, retries=0, reconnect_delay=0, name=self.name
            )
            try:
                ok = await self._client.connect()
            except (OSError, ModbusException):
                ok = False
            if ok:
                log.info("event=modbus_connected adapter=%s host=%s port=%s", self.name, host, port)
                if self._ever_connected:
                    self.counters.reconnects += 1
                self._ever_connected = True
                self._backoff.reset()
                return True
            delay = self._backoff.next()
            self._next_attempt = now + delay
            log.warning(
                "event=modbus_connect_failed adapter=%s host=%s port=%s retry_in_s=%.3f",
                self.name,
                host,
                port,
                delay,
            )
            return False

    def _drop_connection(self, reason: str) -> None:
        log.warning("event=modbus_connection_lost adapter=%s reason=%s", self.name, reason)
        if self._client is not None:
            self._client.close()
        self._next_attempt = time.monotonic() + self._backoff.next()

    # -- polling -------------------------------------------------------------------------------
    async def _poll_group(self, group: str, period: float, blocks: list[_Block]) -> None:
        loop = asyncio.get_running_loop()
        next_time = loop.time()
        while True:
            if await self._connect():
                batch: list[Measurement] = []
                for block in blocks:
                    if not await self._read_block(block, batch):
                        break
                await self._publish(batch)
            next_time += period
            delay = next_time - loop.time()
            if delay < 0:  # overrun: skip missed cycles instead of bursting
                next_time = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def _read(self, table: str, start: int, count: int) -> list[int] | int | None:
        """Return the registers, an exception code (int), or None when the connection failed."""
        client = self._client
        if client is None:
            return None
        read = client.read_holding_registers if table == "holding" else client.read_input_registers
        t0 = time.perf_counter()
        try:
            response = await read(start, count=count, device_id=self._src.unit_id)
        except (TimeoutError, ModbusException, OSError) as exc:
            self.counters.errors += 1
            self._drop_connection(type(exc).__name__)
            return None
        if len(self.round_trips_s) < 10_000:
            self.round_trips_s.append(time.perf_counter() - t0)
        if response.isError():
            return int(getattr(response, "exception_code", 0))
        return list(response.registers)

    async def _read_block(self, block: _Block, batch: list[Measurement]) -> bool:
        result = await self._read(block.table, block.start, block.count)
        if result is None:
            return False
        if isinstance(result, list) and len(result) == block.count:
            now = utc_now()
            for p in block.points:
                assert p.register is not None
                offset = p.register - block.start
                self._accept(p, result[offset : offset + p.register_count], now, batch)
            return True
        self._log_bad(block.table, block.start, block.count, result)
        if len(block.points) == 1:
            self._invalid(block.points[0], utc_now(), batch)
            return True
        for p in block.points:  # isolate the bad register(s)
            assert p.register is not None
            single = await self._read(p.table, p.register, p.register_count)
            if single is None:
                return False
            if isinstance(single, list) and len(single) == p.register_count:
                self._accept(p, single, utc_now(), batch)
            else:
                self._log_bad(p.table, p.register, p.register_count, single, point=p.name)
                self._invalid(p, utc_now(), batch)
        return True

    def _log_bad(self, table: str, start: int, count: int, result: list[int] | int, point: str | None = None) -> None:
        self.counters.errors += 1
        what = f"exception_code={result}" if isinstance(result, int) else f"wrong_length={len(result)} expected={count}"
        log.warning(
            "event=modbus_bad_response adapter=%s table=%s register=%d count=%d %s point=%s",
            self.name,
            table,
            start,
            count,
            what,
            point or "-",
        )

    def _accept(self, p: Point, registers: Sequence[int], now: Any, batch: list[Measurement]) -> None:
        state = self._states[p.name]
        state.updated = time.monotonic()
        value = p.to_value(decode_registers(registers, p.data_type, p.word_order, p.byte_order))
        if not math.isfinite(value):
            log.warning("event=modbus_bad_value adapter=%s point=%s value=%r", self.name, p.name, value)
            self._invalid(p, now, batch)
            return
        state.value = value
        if state.quality == Quality.GOOD and abs(value - state.sent_value) <= p.deadband:
            return
        state.quality, state.sent_value = Quality.GOOD, value
        batch.append(Measurement(p.name, now, value, Quality.GOOD))

    def _invalid(self, p: Point, now: Any, batch: list[Measurement]) -> None:
        state = self._states[p.name]
        state.updated = time.monotonic()  # the source answered: not stale, but invalid
        if state.quality == Quality.IV:
            return
        state.quality = Quality.IV
        batch.append(Measurement(p.name, now, math.nan, Quality.IV))

    async def _watch_stale(self) -> None:
        limit = self._src.stale_after_s
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            now = time.monotonic()
            stamp = utc_now()
            batch = []
            for p in self._points:
                state = self._states[p.name]
                if now - state.updated > limit and not (state.quality is not None and state.quality & Quality.NT):
                    state.quality = (state.quality or Quality.GOOD) | Quality.NT
                    batch.append(Measurement(p.name, stamp, state.value, state.quality))
            if batch:
                log.warning("event=modbus_points_stale adapter=%s points=%d", self.name, len(batch))
                await self._publish(batch)

    # -- commands ------------------------------------------------------------------------------
    def _status(self, point: str) -> tuple[float, int] | None:
        state = self._states.get(point)
        if state is None or state.quality is None:
            return None
        return state.value, int(state.quality)

    async def _command(self, request: CommandRequest, attempt: CommandAttempt) -> CommandResult:
        """Write the command (coil or holding registers); see the module docstring."""
        if request.select_before_operate:
            return attempt.refused("Modbus has no select-before-operate; send it with select_before_operate=False")
        p = self._by_name.get(request.point)
        if p is None:
            return attempt.refused(f"no point {request.point!r} on Modbus source {self.source!r}")
        problem = _command_problem(p, request)
        if problem is not None:
            return attempt.refused(problem)
        if request.kind == CommandKind.SWITCH and p.coil is not None:
            function_code, address, what = 5, p.coil, f"coil {p.coil}"
            registers: list[int] = []
        else:
            assert p.register is not None
            try:
                registers = encode_value(p.to_raw(request.value), p.data_type, p.word_order, p.byte_order)
            except ValueError:
                return attempt.refused(f"{request.description} does not fit point {p.name!r} ({p.data_type})")
            function_code = 6 if len(registers) == 1 else 16
            address, what = p.register, f"holding register {p.register}"
        if not await self._connect() or self._client is None:
            return attempt.refused(f"not connected to Modbus source {self.source!r}")
        client = self._client
        tolerance = setpoint_tolerance(request, deadband=p.deadband, resolution=abs(p.scale) * resolution(p.data_type))
        with self._watching(attempt, tolerance):
            attempt.mark_sent()
            unit = self._src.unit_id
            try:
                response: ModbusPDU
                if function_code == 5:
                    response = await client.write_coil(address, request.value == 1.0, device_id=unit)
                elif function_code == 6:
                    response = await client.write_register(address, registers[0], device_id=unit)
                else:
                    response = await client.write_registers(address, registers, device_id=unit)
            except (TimeoutError, ModbusException, OSError) as exc:
                self.counters.errors += 1
                self._drop_connection(type(exc).__name__)
                return attempt.no_response(
                    f"no answer to FC {function_code} on {what} within {self.timeout_s:g} s ({type(exc).__name__})"
                )
            if response.isError():
                code = int(getattr(response, "exception_code", 0))
                return attempt.refused(f"exception response {exception_text(code)} to FC {function_code} on {what}")
            attempt.mark_confirmed()
            return await self._await_feedback(attempt, f"FC {function_code} on {what} confirmed")


def _command_problem(p: Point, request: CommandRequest) -> str | None:
    """Return why ``request`` cannot be written to point ``p`` (None when it can)."""
    if request.kind == CommandKind.SWITCH and p.quantity != "switch":
        return f"point {p.name!r} is a {p.quantity} point, not a switch"
    if request.kind == CommandKind.SETPOINT and p.quantity == "switch":
        return f"point {p.name!r} is a switch: operate it, do not send it a set-point"
    if not (request.kind == CommandKind.SWITCH and p.coil is not None) and p.table != "holding":
        return f"point {p.name!r} is an input register: read-only"
    if not p.in_range(request.value):
        return f"{request.description} is outside the range of point {p.name!r} ({p.min_value} .. {p.max_value})"
    return None


def modbus_pollers(point_map: PointMap, **options: Any) -> list[ModbusPoller]:
    """Return one :class:`ModbusPoller` per Modbus source of ``point_map``."""
    return [
        ModbusPoller(name=f"modbus:{s.name}", point_map=point_map, source=s.name, **options)
        for s in point_map.sources_of("modbus")
    ]
