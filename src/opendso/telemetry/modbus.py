"""Modbus TCP: a poller that reads a point map's registers, and a server that serves point values.

:class:`ModbusPoller` reads one Modbus source (one device: host, port, unit id) of a point map.
Points are read in blocks of neighbouring registers, each poll group at its own period. A
block answered by an exception or with the wrong number of registers is read again point by
point, so one bad register does not blind its neighbours; a point that still fails is handed
out with quality IV and value NaN. Protocol errors are
counted and logged, never raised. A lost connection is retried with exponential back-off, and
points the source has not updated for ``stale_after_s`` are handed out once with quality NT.
A polled value is handed out when its quality changes or it moved beyond the point's deadband.

:class:`ModbusPointServer` serves the points of a point map from a pymodbus server
(``SimDevice``/``SimData``), for the field simulator and for tests; it can inject exception
responses and short reads per point.

Register encoding (:func:`encode_value` / :func:`decode_registers`): ``word_order`` "big" puts
the most significant register first; ``byte_order`` "big" puts the most significant byte first
within each register (the Modbus default); "little" swaps the two bytes of every register.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.points import DATA_TYPES, Point, PointMap, Source
from opendso.telemetry.quality import Quality

__all__ = ["ModbusPointServer", "ModbusPoller", "decode_registers", "encode_value", "modbus_pollers"]

log = logging.getLogger(__name__)

_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
#: Largest block read in one request (Modbus allows 125 registers per read).
MAX_BLOCK = 125
#: Unused registers a block may bridge to save a request.
MAX_GAP = 8


def encode_value(raw: float, data_type: str, word_order: str = "big", byte_order: str = "big") -> list[int]:
    """Return the registers that carry ``raw`` (a raw protocol value, before scaling).

    Integer types take ``raw`` rounded to the nearest integer; ValueError when it does not fit.
    """
    fmt = _STRUCT[data_type]
    value: float | int = raw
    if fmt in "hHiI":
        value = round(raw)
    try:
        data = struct.pack(">" + fmt, value)
    except struct.error as exc:
        raise ValueError(f"{raw!r} does not fit {data_type}") from exc
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    if word_order == "little":
        registers.reverse()
    return registers


def decode_registers(
    registers: Sequence[int], data_type: str, word_order: str = "big", byte_order: str = "big"
) -> float:
    """Return the raw value carried by ``registers`` (inverse of :func:`encode_value`)."""
    regs = list(registers)
    if len(regs) != DATA_TYPES[data_type]:
        raise ValueError(f"{data_type} needs {DATA_TYPES[data_type]} registers, got {len(regs)}")
    if word_order == "little":
        regs.reverse()
    if byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    data = b"".join(r.to_bytes(2, "big") for r in regs)
    return float(struct.unpack(">" + _STRUCT[data_type], data)[0])


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
    _src: Source = field(init=False, repr=False)
    _client: AsyncModbusTcpClient | None = field(default=None, init=False, repr=False)
    _states: dict[str, _PointState] = field(default_factory=dict, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _next_attempt: float = field(default=0.0, init=False, repr=False)
    _delay: float = field(default=0.0, init=False, repr=False)
    _ever_connected: bool = field(default=False, init=False, repr=False)
    round_trips_s: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.point_map is None or self.source not in self.point_map.sources:
            raise ValueError(f"modbus poller {self.name}: unknown source {self.source!r}")
        self._src = self.point_map.sources[self.source]
        if self._src.protocol != "modbus":
            raise ValueError(f"modbus poller {self.name}: source {self.source!r} uses {self._src.protocol}")
        self._points = self.point_map.points_of(self.source)
        self._delay = self.backoff_s

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
                self._delay = self.backoff_s
                return True
            self._next_attempt = now + self._delay
            log.warning(
                "event=modbus_connect_failed adapter=%s host=%s port=%s retry_in_s=%.3f",
                self.name,
                host,
                port,
                self._delay,
            )
            self._delay = min(self._delay * 2, self.backoff_max_s)
            return False

    def _drop_connection(self, reason: str) -> None:
        log.warning("event=modbus_connection_lost adapter=%s reason=%s", self.name, reason)
        if self._client is not None:
            self._client.close()
        self._next_attempt = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.backoff_max_s)

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


def modbus_pollers(point_map: PointMap, **options: Any) -> list[ModbusPoller]:
    """Return one :class:`ModbusPoller` per Modbus source of ``point_map``."""
    return [
        ModbusPoller(name=f"modbus:{s.name}", point_map=point_map, source=s.name, **options)
        for s in point_map.sources_of("modbus")
    ]


#: Called with (point name, engineering value) when a client writes a point's registers.
WriteCallback = Callable[[str, float], Awaitable[None] | None]


class ModbusPointServer:
    """Serve the values of Modbus points from a pymodbus TCP server (``SimDevice``/``SimData``).

    Holding and input registers share one register image (pymodbus' shared block). Values are
    set in engineering units and encoded by each point's scale, offset, data type and orders.
    :meth:`fail` makes reads touching a point answer with a Modbus exception, :meth:`short_read`
    makes them answer one register short. Writes from clients update the image and call
    ``on_write`` with the written point's value.
    """

    def __init__(
        self,
        points: Iterable[Point],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
        on_write: WriteCallback | None = None,
    ) -> None:
        self.points: dict[str, Point] = {p.name: p for p in points if p.register is not None}
        self.host, self.port, self.unit_id = host, port, unit_id
        self.on_write = on_write
        size = max((p.register + p.register_count for p in self.points.values() if p.register is not None), default=1)
        self._image = [0] * size
        self._failing: dict[str, int] = {}
        self._short: set[str] = set()
        self._last_request: tuple[int, int] = (0, 0)
        self._server: ModbusTcpServer | None = None
        self.requests = 0

    @classmethod
    def for_source(cls, point_map: PointMap, source: str, **options: Any) -> ModbusPointServer:
        """Return a server for the points of one Modbus source, on that source's host and port."""
        src = point_map.sources[source]
        options.setdefault("host", src.host)
        options.setdefault("port", src.port)
        options.setdefault("unit_id", src.unit_id)
        return cls(point_map.points_of(source), **options)

    # -- values --------------------------------------------------------------------------------
    def set_value(self, point: str, value: float) -> None:
        """Serve ``value`` (engineering units) for ``point`` from now on."""
        p = self.points[point]
        assert p.register is not None
        regs = encode_value(p.to_raw(value), p.data_type, p.word_order, p.byte_order)
        self._image[p.register : p.register + len(regs)] = regs

    def set_values(self, values: Mapping[str, float]) -> None:
        """Serve several point values at once."""
        for name, value in values.items():
            self.set_value(name, value)

    def value(self, point: str) -> float:
        """Return the value currently served for ``point``."""
        p = self.points[point]
        assert p.register is not None
        raw = decode_registers(
            self._image[p.register : p.register + p.register_count], p.data_type, p.word_order, p.byte_order
        )
        return p.to_value(raw)

    def fail(self, point: str, code: int | None = int(ExcCodes.DEVICE_FAILURE)) -> None:
        """Answer reads touching ``point`` with Modbus exception ``code`` (None: answer normally)."""
        if code is None:
            self._failing.pop(point, None)
        else:
            self._failing[point] = code

    def short_read(self, point: str, enabled: bool = True) -> None:
        """Answer reads touching ``point`` with one register too few."""
        if enabled:
            self._short.add(point)
        else:
            self._short.discard(point)

    # -- server --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening (on an ephemeral port when ``port`` is 0; :attr:`port` then holds it)."""
        device = SimDevice(
            id=self.unit_id,
            simdata=[SimData(address=0, count=len(self._image), values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(self.host, self.port), trace_pdu=self._trace)
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        log.info("event=modbus_server_start host=%s port=%d points=%d", self.host, self.port, len(self.points))

    async def stop(self) -> None:
        """Stop listening and drop client connections; :meth:`start` serves again on the same port."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
            log.info("event=modbus_server_stop port=%d", self.port)

    async def __aenter__(self) -> ModbusPointServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _touched(self, names: Iterable[str], start: int, count: int) -> bool:
        for name in names:
            p = self.points[name]
            assert p.register is not None
            if p.register < start + count and start < p.register + p.register_count:
                return True
        return False

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        for name, code in self._failing.items():
            if self._touched([name], address, count):
                return ExcCodes(code)
        if set_values is not None:
            regs = [int(v) for v in set_values]
            self._image[address : address + len(regs)] = regs
            await self._notify_writes(address, len(regs))
            return None
        current_registers[address - start_address : address - start_address + count] = self._image[
            address : address + count
        ]
        return None

    async def _notify_writes(self, start: int, count: int) -> None:
        if self.on_write is None:
            return
        for p in self.points.values():
            assert p.register is not None
            if start <= p.register and p.register + p.register_count <= start + count:
                result = self.on_write(p.name, self.value(p.name))
                if result is not None:
                    await result

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._last_request = (int(getattr(pdu, "address", 0)), int(getattr(pdu, "count", 0)))
        elif self._short and pdu.registers and self._touched(self._short, *self._last_request):
            pdu.registers = pdu.registers[:-1]
        return pdu
