"""IEC 60870-5-104 RTU simulator: a controlled station serving a source's points, on OpenDSO's own link layer.

No c104 here: the c104 2.2.1 server decides command confirmations itself in ways
IEC 60870-5-101/104 do not allow (measured with raw frames): a deactivation (COT 8) is confirmed
with COT 7 instead of 9; a command with another cause (e.g. 3) operates and gets no answer at
all; a select never reaches Python (c104 keeps it, so an execute cannot be checked against the
selected value); an unknown type identification (e.g. 200) gets no answer; and after an
execute ACT_TERM precedes the return information, echoing the select (S/E = 1), and is sent
even after a refused execute. :class:`Iec104Server` runs on :mod:`~opendso.telemetry.iec104.link`.

The link runs in the server's own thread, with its own event loop, as a real RTU's
communication runs apart from its process: the station acknowledges and sends within its
window however long the caller's loop is busy (the field simulator computes a power flow and
31,000 values per publish), so a busy twin does not throttle the link to one window per publish.
Values set from the caller's thread are encoded there and handed to the link thread; command
callbacks run on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from opendso.errors import AsduError
from opendso.telemetry.base import utc_now
from opendso.telemetry.iec104.codec import (
    COMMAND_IOA_OFFSET,
    COMMAND_MODES,
    COMMAND_TYPE,
    COMMAND_TYPE_IDS,
    DEFAULT_COMMAND_MODE,
    SELECT_BIT,
    TYPE_ID,
    Asdu,
    Cot,
    decode_command,
    encode_asdu,
    encode_element,
    objects_per_asdu,
    qds_of,
)
from opendso.telemetry.iec104.link import LinkConnection, LinkParameters
from opendso.telemetry.points import Point, PointMap
from opendso.telemetry.quality import Quality

__all__ = ["CommandCallback", "CommandCheck", "Iec104Server"]

log = logging.getLogger(__name__)

#: Called with (point name, engineering value) for each command; False refuses it.
CommandCallback = Callable[[str, float], Awaitable[bool | None] | bool | None]
#: Called with (point name, engineering value) for a select: False refuses it; nothing may change.
CommandCheck = Callable[[str, float], Awaitable[bool] | bool]

_GI, _READ, _CLOCK = TYPE_ID["C_IC_NA_1"], TYPE_ID["C_RD_NA_1"], TYPE_ID["C_CS_NA_1"]
_FLOAT_NO_TIME = TYPE_ID["M_ME_NC_1"]
_GLOBAL_CA = 0xFFFF
_QOI_STATION = 20
_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class _Monitored:
    point: Point
    type_id: int
    ca: int
    ioa: int
    value: float = 0.0
    quality: int = 0
    stamp: datetime = field(default_factory=utc_now)


@dataclass(frozen=True)
class _CommandObject:
    point: Point
    type_name: str
    type_id: int
    mode: str


@dataclass(frozen=True)
class _Selection:
    connection: LinkConnection
    type_id: int
    element: bytes  # the information element with the S/E bit cleared
    deadline: float  # monotonic


class _LinkThread:
    """A thread running an event loop of its own until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on this thread's loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop and wait for the thread to end (the loop is closed by then)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


class Iec104Server:
    """An RTU simulator: an IEC 60870-5-104 controlled station serving a source's points.

    Monitoring: every point is an information object of its type at its address; GI
    (C_IC_NA_1, QOI 20) answers ACT_CON, every object with COT 20, ACT_TERM; a read
    (C_RD_NA_1, COT 5) answers the object with COT 5; :meth:`set_value` sends a change
    spontaneously (COT 3) to every started connection, as many objects per ASDU as fit. Time
    tags are CP56Time2a in UTC.

    Commands (IEC 60870-5-101 clause 7.4.4 and IEC 60870-5-5 clause 6.8, command transmission):
    a point whose type has a command type (single point: C_SC_NA_1, double point: C_DC_NA_1,
    measured value: the set-point C_SE_NA/NB/NC_1 of its kind) has a command object at
    ``ioa + command_ioa_offset``. ``command_modes`` (point name -> ``direct`` or ``select``)
    overrides :data:`~opendso.telemetry.iec104.codec.DEFAULT_COMMAND_MODE`. Answers, each the
    received ASDU mirrored with another cause and P/N bit:

    - select (COT 6, S/E = 1) on a select-before-operate object: ACT_CON (COT 7) positive, and the
      object is reserved for that connection, type and value for ``select_timeout_s``; negative
      (P/N = 1) when the object is direct-operate, the value is not a valid command state, or
      another connection holds a selection of it;
    - execute (COT 6, S/E = 0): on a select-before-operate object it must match the selection of
      the same connection (same type and value, selected less than ``select_timeout_s`` ago),
      and ends it whatever the outcome; then ``on_command`` decides. Refused: ACT_CON negative
      and nothing else. Accepted: ACT_CON positive, the return information (the monitoring
      object with COT 11 to the commanding connection, COT 3 to the others; unless
      ``apply_commands`` is off), then ACT_TERM (COT 10);
    - deactivation (COT 8): cancels this connection's selection of the object, DEACT_CON
      (COT 9) positive; negative when there was none. It never operates anything;
    - any other cause: COT 45 (unknown cause of transmission), P/N = 1;
    - an ASDU with the test bit (T = 1) is confirmed negatively and never operates;
    - unknown type identification (or a structure that does not fit it), common address or
      information object address: COT 44, 46 or 47, P/N = 1. A command type sent to an address
      whose object has another type gets COT 44.

    ``port`` 0 binds a free port at the first :meth:`start` and keeps it across restarts.
    ``on_command`` runs on the event loop that called :meth:`start`; it gets
    ``command_timeout_s`` to answer, else the command is refused. ``check_command`` (optional)
    is asked on a select whether the command would be taken; False refuses the select. The
    link itself runs in a thread of the server's own (see the module docstring).
    """

    def __init__(
        self,
        points: Iterable[Point],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        common_address: int = 1,
        on_command: CommandCallback | None = None,
        apply_commands: bool = True,
        command_ioa_offset: int = COMMAND_IOA_OFFSET,
        link: LinkParameters | None = None,
        command_timeout_s: float = 5.0,
        select_timeout_s: float = 10.0,
        command_modes: Mapping[str, str] | None = None,
        check_command: CommandCheck | None = None,
    ) -> None:
        self.points: dict[str, Point] = {p.name: p for p in points if p.ioa is not None and p.type is not None}
        self.host, self.port, self.common_address = host, port, common_address
        self.on_command = on_command
        self.check_command = check_command
        self.apply_commands = apply_commands
        self.command_ioa_offset = command_ioa_offset
        self.link = link or LinkParameters()
        if not command_timeout_s > 0 or not select_timeout_s > 0:
            raise ValueError(
                f"iec104 server: command_timeout_s and select_timeout_s must be > 0, "
                f"got {command_timeout_s!r} and {select_timeout_s!r}"
            )
        self.command_timeout_s = command_timeout_s
        self.select_timeout_s = select_timeout_s
        self._monitored: dict[tuple[int, int], _Monitored] = {}
        self._by_name: dict[str, _Monitored] = {}
        self._commands: dict[tuple[int, int], _CommandObject] = {}
        modes = dict(command_modes or {})
        for name, p in self.points.items():
            assert p.ioa is not None
            assert p.type is not None
            obj = _Monitored(p, TYPE_ID[p.type], self._ca(p), p.ioa)
            self._monitored[(obj.ca, p.ioa)] = obj
            self._by_name[name] = obj
            command_type = COMMAND_TYPE.get(p.type)
            if command_type is not None:
                mode = modes.pop(name, DEFAULT_COMMAND_MODE[command_type])
                if mode not in COMMAND_MODES:
                    raise ValueError(f"iec104 server: command mode of {name!r} must be direct or select, got {mode!r}")
                key = (obj.ca, p.ioa + command_ioa_offset)
                self._commands[key] = _CommandObject(p, command_type, TYPE_ID[command_type], mode)
        if modes:
            raise ValueError(f"iec104 server: command modes for points without a command object: {sorted(modes)}")
        self._stations = {ca for ca, _ in self._monitored}
        self._selections: dict[tuple[int, int], _Selection] = {}
        self._connections: set[LinkConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread: _LinkThread | None = None
        self._caller: asyncio.AbstractEventLoop | None = None
        self.commands_received = 0
        self.commands_refused = 0

    @classmethod
    def for_source(cls, point_map: PointMap, source: str, **options: Any) -> Iec104Server:
        """Return a server for the points of one IEC 104 source, on that source's host, port and address."""
        src = point_map.sources[source]
        if src.protocol != "iec104":
            raise ValueError(f"{point_map.file}: source {source!r} uses {src.protocol}, not iec104")
        options.setdefault("host", src.host)
        options.setdefault("port", src.port)
        options.setdefault("common_address", src.common_address)
        return cls(point_map.points_of(source), **options)

    def _ca(self, p: Point) -> int:
        return p.common_address if p.common_address is not None else self.common_address

    def command_mode(self, point: str) -> str:
        """Return ``direct`` or ``select`` for the command object of ``point`` (KeyError if it has none)."""
        for obj in self._commands.values():
            if obj.point.name == point:
                return obj.mode
        raise KeyError(f"iec104 server: point {point!r} has no command object")

    # -- values --------------------------------------------------------------------------------
    def set_value(self, point: str, value: float, quality: Quality | int = Quality.GOOD) -> bool:
        """Serve ``value`` (engineering units) with ``quality``; transmit it spontaneously if it changed.

        Return whether it was transmitted (False when unchanged or no client has started data transfer).
        """
        return self.set_values({point: (value, quality)})[0] > 0

    def set_values(self, values: Mapping[str, float | tuple[float, Quality | int]]) -> tuple[int, int]:
        """Serve several values (``value`` or ``(value, quality)``); changed ones go out in batches (COT 3).

        Return (points transmitted, points changed). Call it from the thread that started the
        server; the ASDUs are encoded here and sent by the link thread.
        """
        changed: list[_Monitored] = []
        by_name = self._by_name
        for name, item in values.items():
            obj = by_name.get(name)
            if obj is None:
                raise KeyError(f"iec104 server: no point {name!r}")
            if isinstance(item, tuple):
                value, quality = float(item[0]), int(item[1])
            else:
                value, quality = float(item), 0
            old = obj.value
            if quality == obj.quality and (value == old or (math.isnan(value) and math.isnan(old))):
                continue
            obj.value, obj.quality = value, quality
            changed.append(obj)
        if not changed:
            return 0, 0
        now = utc_now()
        for obj in changed:
            obj.stamp = now
        if not self._started():
            return 0, len(changed)
        asdus = self._encode(changed, Cot.SPONTANEOUS)
        self._in_link(self._broadcast, asdus)
        return sum(n for n, _ in asdus), len(changed)

    def value(self, point: str) -> tuple[float, Quality]:
        """Return the (value, quality) currently served for ``point``."""
        obj = self._by_name[point]
        return obj.value, Quality(obj.quality)

    def _started(self) -> list[LinkConnection]:
        return [c for c in tuple(self._connections) if c.started]

    def _in_link(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in the link thread (at once when called there)."""
        thread = self._thread
        if thread is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is thread.loop:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the link thread stopped meanwhile
                thread.loop.call_soon_threadsafe(fn, *args)

    def _broadcast(self, asdus: list[tuple[int, bytes]], exclude: LinkConnection | None = None) -> None:
        """Link thread: send encoded ASDUs to every started connection (but ``exclude``)."""
        for connection in self._started():
            if connection is not exclude:
                connection.send_asdus([asdu for _, asdu in asdus])

    def _transmit(self, objs: Iterable[_Monitored], cause: int, to: list[LinkConnection]) -> int:
        """Link thread: send ``objs`` to ``to``; return the objects sent."""
        if not to:
            return 0
        asdus = self._encode(objs, cause)
        frames = [asdu for _, asdu in asdus]
        sent = 0
        for connection in to:
            if connection.send_asdus(frames):
                sent = sum(n for n, _ in asdus)
        return sent

    def _encode(self, objs: Iterable[_Monitored], cause: int) -> list[tuple[int, bytes]]:
        """Return (objects, ASDU) of ``objs`` grouped by station and type, as many per ASDU as fit."""
        groups: dict[tuple[int, int], list[_Monitored]] = {}
        for obj in objs:
            groups.setdefault((obj.ca, obj.type_id), []).append(obj)
        out: list[tuple[int, bytes]] = []
        for (ca, type_id), members in groups.items():
            size = objects_per_asdu(type_id)
            for i in range(0, len(members), size):
                chunk = members[i : i + size]
                asdu = _fast_float_asdu(chunk, cause, ca) if type_id == _FLOAT_NO_TIME else None
                if asdu is None:
                    asdu = encode_asdu(type_id, cause, ca, [(obj.ioa, _element(obj)) for obj in chunk])
                out.append((len(chunk), asdu))
        return out

    # -- server --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    @property
    def connections(self) -> int:
        """Number of clients connected now."""
        return sum(not c.closed for c in tuple(self._connections))

    async def start(self) -> None:
        """Start listening (in the link thread); :attr:`port` holds the port (a free one when it was 0)."""
        if self._thread is not None:
            return
        self._caller = asyncio.get_running_loop()
        self._thread = _LinkThread(f"iec104-rtu-{self.host}:{self.port}")
        try:
            self._server = await self._thread.run(asyncio.start_server(self._accept, self.host, self.port))
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("event=iec104_server_start host=%s port=%d points=%d", self.host, self.port, len(self.points))

    async def stop(self) -> None:
        """Stop listening and drop the clients; :meth:`start` serves again on the same port."""
        thread, server = self._thread, self._server
        if thread is None:
            return
        try:
            if server is not None:
                await thread.run(self._shut(server))
        finally:
            self._server = None
            thread.stop()
            self._thread = None
            self._selections.clear()
        log.info("event=iec104_server_stop port=%d", self.port)

    async def _shut(self, server: asyncio.Server) -> None:
        """Link thread: close the listener and every connection."""
        server.close()
        for connection in list(self._connections):
            connection.close("server_stop")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Iec104Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = LinkConnection(reader, writer, self.link, self._on_asdu, name=f"{self.host}:{self.port}")
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(connection)
        self._tasks.add(task)
        log.info("event=iec104_server_connected port=%d peer=%s", self.port, connection.peer)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)
            self._tasks.discard(task)
            for key in [k for k, s in self._selections.items() if s.connection is connection]:
                del self._selections[key]
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            log.info("event=iec104_server_disconnected port=%d peer=%s", self.port, connection.peer)

    # -- received ASDUs (link thread) ----------------------------------------------------------
    async def _on_asdu(self, connection: LinkConnection, data: bytes) -> None:
        try:
            asdu = Asdu.decode(data)
        except AsduError as exc:
            log.warning("event=iec104_server_bad_asdu peer=%s error=%s", connection.peer, exc)
            return

        def answer(cause: int, negative: bool) -> None:
            connection.send_asdu(asdu.mirror(cause, negative=negative))

        handled = (_GI, _READ, _CLOCK, *COMMAND_TYPE_IDS)
        try:
            objects = asdu.objects() if asdu.type_id in handled else None
        except AsduError:
            objects = None
        if objects is None:
            log.warning("event=iec104_server_unknown_type peer=%s type=%d", connection.peer, asdu.type_id)
            answer(Cot.UNKNOWN_TYPE_ID, True)
            return
        global_ok = asdu.type_id in (_GI, _CLOCK) and asdu.common_address == _GLOBAL_CA
        if asdu.common_address not in self._stations and not global_ok:
            log.warning("event=iec104_server_unknown_ca peer=%s ca=%d", connection.peer, asdu.common_address)
            answer(Cot.UNKNOWN_CA, True)
            return
        if asdu.type_id in COMMAND_TYPE_IDS:
            await self._command(connection, asdu, objects, answer)
        elif asdu.type_id == _READ:
            self._read(connection, asdu, objects, answer)
        # interrogation or clock synchronisation: the station's object at address 0
        elif asdu.cause not in (Cot.ACTIVATION, Cot.DEACTIVATION) or (
            asdu.type_id == _CLOCK and asdu.cause != Cot.ACTIVATION
        ):
            answer(Cot.UNKNOWN_COT, True)
        elif len(objects) != 1 or objects[0][0] != 0:
            answer(Cot.UNKNOWN_IOA, True)
        elif asdu.cause == Cot.DEACTIVATION:
            answer(Cot.DEACTIVATION_CON, False)  # nothing runs on: the GI is answered at once
        elif asdu.type_id == _CLOCK:
            answer(Cot.ACTIVATION_CON, False)  # the simulator keeps its own clock
        else:
            self._interrogate(connection, asdu, objects[0][1][0], answer)

    def _interrogate(
        self, connection: LinkConnection, asdu: Asdu, qoi: int, answer: Callable[[int, bool], None]
    ) -> None:
        """General interrogation (IEC 60870-5-101 clause 7.4.5): ACT_CON, the objects with COT = QOI, ACT_TERM."""
        if not _QOI_STATION <= qoi <= 36:
            answer(Cot.ACTIVATION_CON, True)
            return
        answer(Cot.ACTIVATION_CON, False)
        if qoi == _QOI_STATION:  # no point belongs to an interrogation group (QOI 21-36)
            stations = self._stations if asdu.common_address == _GLOBAL_CA else {asdu.common_address}
            self._transmit([o for (ca, _), o in list(self._monitored.items()) if ca in stations], qoi, [connection])
        answer(Cot.ACTIVATION_TERMINATION, False)

    def _read(self, connection: LinkConnection, asdu: Asdu, objects: list[tuple[int, bytes]], answer: Any) -> None:
        """Read command (IEC 60870-5-101 clause 7.4.6): the object with COT 5 (request)."""
        if asdu.cause != Cot.REQUEST:
            answer(Cot.UNKNOWN_COT, True)
            return
        obj = self._monitored.get((asdu.common_address, objects[0][0])) if len(objects) == 1 else None
        if obj is None:
            answer(Cot.UNKNOWN_IOA, True)
            return
        self._transmit([obj], Cot.REQUEST, [connection])

    async def _command(
        self, connection: LinkConnection, asdu: Asdu, objects: list[tuple[int, bytes]], answer: Any
    ) -> None:
        """Command transmission; see the class docstring for every answer."""
        ioa, element = objects[0]
        key = (asdu.common_address, ioa)
        cmd = self._commands.get(key)
        where = f"peer={connection.peer} ca={asdu.common_address} ioa={ioa} type={asdu.type_id} cot={asdu.cause}"
        if cmd is None or cmd.type_id != asdu.type_id:
            known = cmd is not None or key in self._monitored
            log.warning("event=iec104_server_command_unknown_address %s known_address=%s", where, known)
            answer(Cot.UNKNOWN_TYPE_ID if known else Cot.UNKNOWN_IOA, True)
            return
        if asdu.cause not in (Cot.ACTIVATION, Cot.DEACTIVATION):
            log.warning("event=iec104_server_command_unknown_cause %s", where)
            answer(Cot.UNKNOWN_COT, True)
            return
        confirm = Cot.ACTIVATION_CON if asdu.cause == Cot.ACTIVATION else Cot.DEACTIVATION_CON
        if len(objects) != 1 or asdu.test:
            log.warning("event=iec104_server_command_refused %s reason=%s", where, "test" if asdu.test else "objects")
            answer(confirm, True)
            return
        select = bool(element[-1] & SELECT_BIT)
        plain = element[:-1] + bytes([element[-1] & ~SELECT_BIT & 0xFF])
        now = time.monotonic()
        selection = self._selections.get(key)
        if selection is not None and now > selection.deadline:
            del self._selections[key]
            selection = None
        if asdu.cause == Cot.DEACTIVATION:
            mine = selection is not None and selection.connection is connection
            if mine:
                del self._selections[key]
            log.info("event=iec104_server_deselect %s cancelled=%s", where, mine)
            answer(confirm, not mine)
            return
        raw = decode_command(cmd.type_name, plain)
        value = None if raw is None else cmd.point.to_value(raw)
        if select:
            reason = (
                "direct_operate_object"
                if cmd.mode != "select"
                else "invalid_value"
                if value is None
                else "selected_by_another_connection"
                if selection is not None and selection.connection is not connection
                else None
            )
            if reason is None and not await self._run_check(cmd.point.name, value):
                reason = "refused_by_check"
            if reason is None:
                self._selections[key] = _Selection(connection, asdu.type_id, plain, now + self.select_timeout_s)
            log.info("event=iec104_server_select %s point=%s refused=%s", where, cmd.point.name, reason or "-")
            answer(confirm, reason is not None)
            return
        if cmd.mode == "select":
            reason = None
            if selection is None or selection.connection is not connection:
                reason = "not_selected"
            elif selection.element != plain or selection.type_id != asdu.type_id:
                reason = "does_not_match_selection"
            if selection is not None and selection.connection is connection:
                del self._selections[key]  # an execute ends the selection, whatever its outcome
            if reason is not None:
                self.commands_refused += 1
                log.warning("event=iec104_server_command_refused %s point=%s reason=%s", where, cmd.point.name, reason)
                answer(confirm, True)
                return
        if value is None:
            self.commands_refused += 1
            log.warning("event=iec104_server_command_refused %s point=%s reason=invalid_value", where, cmd.point.name)
            answer(confirm, True)
            return
        self.commands_received += 1
        log.info("event=iec104_server_command %s point=%s value=%s", where, cmd.point.name, value)
        if not await self._run_on_command(cmd.point.name, value):
            self.commands_refused += 1
            answer(confirm, True)
            return
        answer(confirm, False)
        if self.apply_commands:
            obj = self._by_name[cmd.point.name]
            obj.value, obj.stamp = value, utc_now()
            self._transmit([obj], Cot.RETURN_INFO_REMOTE, [connection])
            self._transmit([obj], Cot.SPONTANEOUS, [c for c in self._started() if c is not connection])
        answer(Cot.ACTIVATION_TERMINATION, False)

    async def _in_caller(self, fn: Callable[[str, float], Any], name: str, value: float) -> Any:
        """Link thread: run a callback on the caller's loop (awaiting what it returns), within the command timeout."""

        async def call() -> Any:
            result = fn(name, value)
            if isinstance(result, Awaitable):
                result = await result
            return result

        caller = self._caller
        async with asyncio.timeout(self.command_timeout_s):
            if caller is None or caller is asyncio.get_running_loop():
                return await call()
            future = asyncio.run_coroutine_threadsafe(call(), caller)
            try:
                return await asyncio.wrap_future(future)
            finally:
                future.cancel()

    async def _run_check(self, name: str, value: float | None) -> bool:
        check = self.check_command
        if check is None or value is None:
            return True
        try:
            result = await self._in_caller(check, name, value)
        except Exception as exc:
            log.warning("event=iec104_server_check_failed point=%s error=%r", name, exc)
            return False
        return bool(result)

    async def _run_on_command(self, name: str, value: float) -> bool:
        callback = self.on_command
        if callback is None:
            return True
        try:
            result = await self._in_caller(callback, name, value)
        except Exception as exc:
            log.warning("event=iec104_server_command_failed point=%s error=%r", name, exc)
            return False
        if result is False:
            log.warning("event=iec104_server_command_refused point=%s value=%r reason=refused_by_twin", name, value)
        return result is not False


def _element(obj: _Monitored) -> bytes:
    """Return the information element of a monitored object (IEC 60870-5-101 clause 7.3.1)."""
    p = obj.point
    raw = p.to_raw(obj.value) if math.isfinite(obj.value) else math.nan
    return encode_element(p.type or "", raw, qds_of(obj.quality), obj.stamp)


_FLOAT_FORMATS: dict[int, struct.Struct] = {}


def _fast_float_asdu(chunk: list[_Monitored], cause: int, ca: int) -> bytes | None:
    """Return the M_ME_NC_1 ASDU of ``chunk`` packed in one call; None when a value needs the careful path."""
    fmt = _FLOAT_FORMATS.get(len(chunk))
    if fmt is None:
        fmt = _FLOAT_FORMATS[len(chunk)] = struct.Struct("<BBBBH" + "HBfB" * len(chunk))
    fields: list[float | int] = [_FLOAT_NO_TIME, len(chunk), cause & 0x3F, 0, ca]
    for obj in chunk:
        p, value = obj.point, obj.value
        raw = (value - p.offset) / p.scale if value - value == 0 else math.nan  # inf and NaN go out as NaN
        fields += (obj.ioa & 0xFFFF, obj.ioa >> 16, raw, qds_of(obj.quality))
    try:
        return fmt.pack(*fields)
    except (OverflowError, struct.error):  # beyond float32: encode_element clips and flags OV
        return None
