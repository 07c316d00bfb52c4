"""Modbus TCP server: serves the values of a point map's Modbus points, and takes writes as commands.

:class:`ModbusPointServer` serves the points of a point map from a pymodbus server
(``SimDevice``/``SimData``), for the field simulator and for tests; it can inject exception
responses and short reads per point. Writes (FC 5, 6, 15, 16) are commands, checked whole
before any is applied and refused with the exception codes the MODBUS Application Protocol
V1.1b3 prescribes; coils exist only where the point map declares them (see the class).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import MaskWriteRegisterRequest, ReadWriteMultipleRegistersRequest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from opendso.telemetry.modbus.codec import COIL_OFF, COIL_ON, decode_registers, encode_value
from opendso.telemetry.points import Point, PointMap

__all__ = ["ModbusPointServer", "WriteCallback", "WriteCheck"]

log = logging.getLogger(__name__)

#: Called with (point name, engineering value) when a client's write of a point was accepted: the
#: command. An exception it raises answers the write with exception 04 (server device failure).
WriteCallback = Callable[[str, float], Awaitable[None] | None]
#: Called with (point name, engineering value) before anything of a write is applied: None accepts,
#: an exception code refuses the whole request with it.
WriteCheck = Callable[[str, float], Awaitable[ExcCodes | None] | ExcCodes | None]

#: Function codes this device does not implement although pymodbus would route them to the
#: register image: discrete inputs (none are declared), mask write and read/write multiple
#: registers (a write path that would bypass the checks of FC 6 and 16).
_UNSUPPORTED = (2, 22, 23)


class ModbusPointServer:
    """Serve the values of Modbus points from a pymodbus TCP server (``SimDevice``/``SimData``).

    Holding and input registers share one register image (pymodbus' shared block). Values are
    set in engineering units and encoded by each point's scale, offset, data type and orders.
    :meth:`fail` makes requests touching a point answer with a Modbus exception, :meth:`short_read`
    makes reads answer one register short.

    Writes are commands, checked whole before anything is applied, and answered as the state
    diagrams of the MODBUS Application Protocol Specification V1.1b3 (clause 6, per function
    code; clause 7, exception codes) prescribe:

    - FC 6 and FC 16 (holding registers): the addressed range must cover whole points of the
      holding table, else **02 illegal data address** ("the combination of reference number and
      transfer length is invalid"); a malformed FC 16 (quantity outside 1..123, byte count not
      2 x quantity) gets **03 illegal data value** (pymodbus). Each point is then checked by
      ``check_write``, which refuses with the code it returns: the field simulator answers 02
      for a point that takes no commands (a measurement register is not a writable address)
      and **04 server device failure** for a value the device refuses (2 on a switch
      register). 03 is not that: the specification reserves it for the structure of a request
      and says it "specifically does NOT mean that a data item submitted for storage in a
      register has a value outside the expectation of the application program"; its FC 6 and
      FC 16 diagrams put a refused write at "WriteSingleRegister/WriteMultipleRegisters == OK?
      NO -> 04". A refused request changes nothing: no point of an FC 16 is applied when one
      is refused, and the register image keeps serving what it served. Accepted writes call
      ``on_write`` per point in address order, then update the image.
    - Coils (FC 1 read, FC 5 and FC 15 write) exist only where the point map declares them
      (``coil`` of a switch point; ON closes, OFF opens). A device without any coil answers
      **01 illegal function** ("function code supported? NO"); a request reaching an address
      that is not a declared coil gets **02**; FC 5 with a value other than 0xFF00 or 0x0000
      gets **03** (its diagram's value check); FC 15 is checked whole like FC 16, then applied.
    - FC 2 (discrete inputs: none), FC 22 (mask write) and FC 23 (read/write multiple
      registers) answer 01: they would reach the image around these checks.

    Without ``on_write`` the device is read-only: every write gets 02. Requests are answered
    one at a time, so two clients' writes never interleave between check and apply.
    """

    def __init__(
        self,
        points: Iterable[Point],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
        on_write: WriteCallback | None = None,
        check_write: WriteCheck | None = None,
    ) -> None:
        self.points: dict[str, Point] = {p.name: p for p in points if p.register is not None}
        self.coils: dict[int, Point] = {p.coil: p for p in self.points.values() if p.coil is not None}
        self.host, self.port, self.unit_id = host, port, unit_id
        self.on_write = on_write
        self.check_write = check_write
        size = max((p.register + p.register_count for p in self.points.values() if p.register is not None), default=1)
        self._image = [0] * size
        self._holding = {p.register: p for p in self.points.values() if p.table == "holding" and p.register is not None}
        self._failing: dict[str, int] = {}
        self._short: set[str] = set()
        self._last_request: tuple[int, int] = (0, 0)
        self._server: ModbusTcpServer | None = None
        self._write_lock = asyncio.Lock()
        self.requests = 0
        self.writes_refused = 0

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
        """Answer requests touching ``point`` with Modbus exception ``code`` (None: answer normally)."""
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
        self._server = ModbusTcpServer(
            device, address=(self.host, self.port), trace_pdu=self._trace, custom_pdu=_own_pdus(self)
        )
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        log.info(
            "event=modbus_server_start host=%s port=%d points=%d coils=%d",
            self.host,
            self.port,
            len(self.points),
            len(self.coils),
        )

    async def stop(self) -> None:
        """Stop listening and drop client connections; :meth:`start` serves again on the same port."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus is untyped here
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

    def _failing_code(self, points: Iterable[Point]) -> ExcCodes | None:
        for p in points:
            code = self._failing.get(p.name)
            if code is not None:
                return ExcCodes(code)
        return None

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
        if function_code in _UNSUPPORTED:  # not reached: _own_pdus answers them first
            return ExcCodes.ILLEGAL_FUNCTION
        for name, code in self._failing.items():
            if self._touched([name], address, count):
                return ExcCodes(code)
        if set_values is not None:
            return await self._write_registers(function_code, address, [int(v) for v in set_values])
        current_registers[address - start_address : address - start_address + count] = self._image[
            address : address + count
        ]
        return None

    # -- writes ----------------------------------------------------------------------------------
    async def _write_registers(self, function_code: int, address: int, registers: list[int]) -> ExcCodes | None:
        """FC 6 / FC 16: whole holding points, all checked before any is applied (see the class docstring)."""
        writes: list[tuple[Point, float]] = []
        at, end = address, address + len(registers)
        while at < end:
            p = self._holding.get(at)
            if p is None or at + p.register_count > end:
                return self._refuse(function_code, address, len(registers), ExcCodes.ILLEGAL_ADDRESS, "not_writable")
            chunk = registers[at - address : at - address + p.register_count]
            writes.append((p, p.to_value(decode_registers(chunk, p.data_type, p.word_order, p.byte_order))))
            at += p.register_count
        code = await self._apply(function_code, address, writes)
        if code is None:
            self._image[address:end] = registers
        return code

    async def _write_coils(self, function_code: int, address: int, bits: list[bool]) -> ExcCodes | None:
        """FC 5 / FC 15 on declared coils: ON (True) closes, OFF opens; all checked before any is applied."""
        if not self.coils:
            return self._refuse(function_code, address, len(bits), ExcCodes.ILLEGAL_FUNCTION, "no_coils")
        points = [self.coils.get(address + i) for i in range(len(bits))]
        if any(p is None for p in points):
            return self._refuse(function_code, address, len(bits), ExcCodes.ILLEGAL_ADDRESS, "not_a_coil")
        writes = [(p, 1.0 if bit else 0.0) for p, bit in zip(points, bits, strict=True) if p is not None]
        code = await self._apply(function_code, address, writes)
        if code is None:
            for p, value in writes:
                self.set_value(p.name, value)
        return code

    async def _apply(self, function_code: int, address: int, writes: list[tuple[Point, float]]) -> ExcCodes | None:
        count = len(writes)
        failing = self._failing_code(p for p, _ in writes)
        if failing is not None:
            return self._refuse(function_code, address, count, failing, "point_failing")
        if self.on_write is None:
            return self._refuse(function_code, address, count, ExcCodes.ILLEGAL_ADDRESS, "read_only_device")
        async with self._write_lock:
            if self.check_write is not None:
                for p, value in writes:
                    verdict = self.check_write(p.name, value)
                    if isinstance(verdict, Awaitable):
                        verdict = await verdict
                    if verdict is not None:
                        return self._refuse(function_code, address, count, ExcCodes(verdict), f"refused:{p.name}")
            for p, value in writes:
                try:
                    result = self.on_write(p.name, value)
                    if isinstance(result, Awaitable):
                        await result
                except Exception as exc:  # checked a moment ago: the device failed to act
                    log.warning("event=modbus_write_failed point=%s value=%r error=%r", p.name, value, exc)
                    return self._refuse(function_code, address, count, ExcCodes.DEVICE_FAILURE, f"failed:{p.name}")
        log.info(
            "event=modbus_write fc=%d address=%d points=%s",
            function_code,
            address,
            ",".join(p.name for p, _ in writes),
        )
        return None

    def _refuse(self, function_code: int, address: int, count: int, code: ExcCodes, reason: str) -> ExcCodes:
        self.writes_refused += function_code not in (1, 2)
        log.warning(
            "event=modbus_request_refused fc=%d address=%d count=%d exception=%d reason=%s",
            function_code,
            address,
            count,
            int(code),
            reason,
        )
        return code

    def _read_coils(self, address: int, count: int) -> list[bool] | ExcCodes:
        """FC 1: the declared coils' switch states (ON = closed)."""
        if not self.coils:
            return self._refuse(1, address, count, ExcCodes.ILLEGAL_FUNCTION, "no_coils")
        points = [self.coils.get(address + i) for i in range(count)]
        if any(p is None for p in points):
            return self._refuse(1, address, count, ExcCodes.ILLEGAL_ADDRESS, "not_a_coil")
        failing = self._failing_code(p for p in points if p is not None)
        if failing is not None:
            return failing
        return [self.value(p.name) == 1.0 for p in points if p is not None]

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._last_request = (int(getattr(pdu, "address", 0)), int(getattr(pdu, "count", 0)))
        elif self._short and getattr(pdu, "registers", None) and self._touched(self._short, *self._last_request):
            pdu.registers = pdu.registers[:-1]
        return pdu


def _own_pdus(owner: ModbusPointServer) -> list[type[ModbusPDU]]:
    """Request classes of the function codes the register image must not answer by itself (coils, FC 2/22/23)."""

    def refused(function_code: int, code: ExcCodes) -> ModbusPDU:
        return ExceptionResponse(function_code, code)

    def wrong_unit(device_id: int) -> bool:
        return device_id not in (0, owner.unit_id)

    class ReadCoils(ReadCoilsRequest):
        async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
            if wrong_unit(device_id):
                return refused(self.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            owner.requests += 1
            bits = owner._read_coils(self.address, self.count)
            if isinstance(bits, ExcCodes):
                return refused(self.function_code, bits)
            return ReadCoilsResponse(dev_id=self.dev_id, transaction_id=self.transaction_id, bits=bits)

    class WriteCoil(WriteSingleCoilRequest):
        raw_value = COIL_OFF

        def decode(self, data: bytes) -> None:
            super().decode(data)
            self.raw_value = struct.unpack(">H", data[2:4])[0]

        async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
            if wrong_unit(device_id):
                return refused(self.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            owner.requests += 1
            if owner.coils and self.raw_value not in (COIL_ON, COIL_OFF):
                return refused(self.function_code, owner._refuse(5, self.address, 1, ExcCodes.ILLEGAL_VALUE, "value"))
            code = await owner._write_coils(self.function_code, self.address, [self.raw_value == COIL_ON])
            if code is not None:
                return refused(self.function_code, code)
            return WriteSingleCoilResponse(
                address=self.address,
                bits=[self.raw_value == COIL_ON],
                dev_id=self.dev_id,
                transaction_id=self.transaction_id,
            )

    class WriteCoils(WriteMultipleCoilsRequest):
        async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
            if wrong_unit(device_id):
                return refused(self.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            owner.requests += 1
            # the order of the FC 15 state diagram: function code, quantity and byte count, address
            malformed = not 1 <= self.count <= 0x07B0 or (
                self.byte_count is not None
                and (self.byte_count != (self.count + 7) // 8 or self.data_byte_count != self.byte_count)
            )
            if owner.coils and malformed:
                return refused(self.function_code, ExcCodes.ILLEGAL_VALUE)
            code = await owner._write_coils(self.function_code, self.address, list(self.bits))
            if code is not None:
                return refused(self.function_code, code)
            return WriteMultipleCoilsResponse(
                address=self.address, count=self.count, dev_id=self.dev_id, transaction_id=self.transaction_id
            )

    def unsupported(base: type[ModbusPDU]) -> type[ModbusPDU]:
        class Unsupported(base):  # type: ignore[valid-type,misc]
            async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
                owner.requests += 1
                return refused(
                    self.function_code,
                    owner._refuse(self.function_code, 0, 0, ExcCodes.ILLEGAL_FUNCTION, "unsupported"),
                )

        return Unsupported

    return [
        ReadCoils,
        WriteCoil,
        WriteCoils,
        unsupported(ReadDiscreteInputsRequest),
        unsupported(MaskWriteRegisterRequest),
        unsupported(ReadWriteMultipleRegistersRequest),
    ]
