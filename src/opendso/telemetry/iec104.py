"""IEC 60870-5-104: a client (controlling station) adapter on c104, and an RTU simulator.

c104 (GPL-3.0) is an optional extra (``pip install opendso[iec104]``): the client imports it
inside the functions that need it, never when this module is imported. The RTU simulator needs
no c104: it runs on :mod:`opendso.telemetry.iec104_link`, because the c104 2.2.1 server decides
command confirmations itself in ways IEC 60870-5-101/104 do not allow (measured with raw frames):
a deactivation (COT 8) is confirmed with COT 7 instead of 9; a command with another cause
(e.g. 3) operates and gets no answer at all; a select never reaches Python (c104 keeps it, so
an execute cannot be checked against the selected value); an unknown type identification
(e.g. 200) gets no answer; and after an execute ACT_TERM precedes the return information,
echoing the select (S/E = 1), and is sent even after a refused execute.

:class:`Iec104Client` connects to the IEC 104 sources of a point map (one connection per
source: host, port, and a station per common address), runs a general interrogation (GI) on
every connect and reconnect, and hands out one :class:`Measurement` per received information
object: the value scaled by the point (``raw * scale + offset``), the quality from the IEC 104
quality descriptor (:meth:`Quality.from_qds`), and the time tag when the type carries one.
Double points map ON to 1.0 (closed) and OFF to 0.0 (open); intermediate and indeterminate
states arrive as NaN with quality IV. Objects whose address is not in the point map are
counted as ``unknown``. A lost connection, a peer that sends garbage or truncated frames, or
a link silent for longer than the source's ``stale_after_s`` ends the session: the error is
counted, the source's points are handed out once with quality NT (last value kept), and the
client connects again after an exponential back-off; the GI then makes them good again.
IEC 104 sends test frames every t3 seconds on a quiet link, so t3 must stay below
``stale_after_s``. Link parameters are whole seconds (c104's resolution).

Commands (:meth:`Iec104Client.send_single_command`, :meth:`~Iec104Client.send_double_command`,
:meth:`~Iec104Client.send_setpoint`) go to the command object of a point, at information
object address ``ioa + command_ioa_offset`` (default 100000) of the point's station; they
return whether the RTU confirmed (positive ACT_CON).

:class:`Iec104Server` serves the points of an IEC 104 source: :meth:`~Iec104Server.set_value`
transmits spontaneously when the value or quality changes, GIs are answered with every point,
and commands follow IEC 60870-5-101 clause 7.4.4 (select and execute, deactivation, negative
confirmations, return information, activation termination): see the class docstring.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.iec104_link import (
    TYPE_ID,
    Asdu,
    AsduError,
    Cot,
    LinkConnection,
    LinkParameters,
    cp56time2a,
    encode_asdu,
    objects_per_asdu,
)
from opendso.telemetry.points import Point, PointMap, Source
from opendso.telemetry.quality import Quality

__all__ = [
    "COMMAND_IOA_OFFSET",
    "COMMAND_MODES",
    "DEFAULT_COMMAND_MODE",
    "CommandCallback",
    "CommandCheck",
    "Iec104Client",
    "Iec104Server",
    "LinkParameters",
    "iec104_clients",
]

log = logging.getLogger(__name__)

#: The command object of a point sits at the point's address plus this offset.
COMMAND_IOA_OFFSET = 100_000

_FLOAT = ("M_ME_NC_1", "M_ME_TF_1")
_SCALED = ("M_ME_NB_1", "M_ME_TE_1")
_NORMALISED = ("M_ME_NA_1", "M_ME_TD_1")
_SINGLE = ("M_SP_NA_1", "M_SP_TB_1")
_DOUBLE = ("M_DP_NA_1", "M_DP_TB_1")
_STEP = ("M_ST_NA_1", "M_ST_TB_1")
#: Monitoring type -> the command type that operates it.
_COMMAND_TYPE = {
    **dict.fromkeys(_FLOAT, "C_SE_NC_1"),
    **dict.fromkeys(_SCALED, "C_SE_NB_1"),
    **dict.fromkeys(_NORMALISED, "C_SE_NA_1"),
    **dict.fromkeys(_SINGLE, "C_SC_NA_1"),
    **dict.fromkeys(_DOUBLE, "C_DC_NA_1"),
}
_TIME_TAGGED = ("M_ME_TF_1", "M_ME_TE_1", "M_ME_TD_1", "M_SP_TB_1", "M_DP_TB_1", "M_ST_TB_1")
_POLL_S = 0.05


def _import_c104() -> Any:
    try:
        import c104
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("IEC 60870-5-104 needs the optional extra: pip install 'opendso[iec104]' (c104)") from exc
    return c104


def _signed(fn: Callable[..., Any], **hints: Any) -> Callable[..., Any]:
    """Give a callback the exact runtime type hints c104 checks (this module's hints are strings)."""
    fn.__annotations__ = hints
    return fn


def _as_utc(stamp: datetime | None) -> datetime:
    if stamp is None:
        return utc_now()
    return stamp.astimezone(UTC)  # c104 gives naive local times


def _decode(c: Any, p: Point, cp: Any) -> tuple[float, Quality]:
    """Return (engineering value, quality) of a received c104 point."""
    quality_obj = cp.quality
    quality = Quality.from_qds(int(quality_obj.value)) if quality_obj is not None else Quality.GOOD
    value = cp.value
    type_name = p.type or ""
    if type_name in _DOUBLE:
        if value == c.Double.ON:
            raw = 1.0
        elif value == c.Double.OFF:
            raw = 0.0
        else:  # intermediate or indeterminate: the switch position is not known
            return math.nan, quality | Quality.INVALID
    elif type_name in _SINGLE:
        raw = 1.0 if bool(value) else 0.0
    elif type_name in _SCALED or type_name in _STEP:
        raw = float(int(value))
    else:
        raw = float(value)
    return p.to_value(raw), quality


def _encode(c: Any, type_name: str, raw: float) -> Any:
    """Return the c104 value of a monitoring or command type for a raw protocol value."""
    if type_name in _DOUBLE or type_name == "C_DC_NA_1":
        if raw == 1.0:
            return c.Double.ON
        if raw == 0.0:
            return c.Double.OFF
        return c.Double.INDETERMINATE
    if type_name in _SINGLE or type_name == "C_SC_NA_1":
        return bool(raw)
    if type_name in _SCALED or type_name == "C_SE_NB_1":
        return c.Int16(round(raw))
    if type_name in _NORMALISED or type_name == "C_SE_NA_1":
        return c.NormalizedFloat(raw)
    if type_name in _STEP:
        return c.Int7(round(raw))
    return float(raw)


# -- client -----------------------------------------------------------------------------------
@dataclass
class _PointState:
    value: float = math.nan
    quality: Quality | None = None


#: Seconds a stopped c104 client is kept before it is destroyed (see ``_Link.retired``).
_RETIRE_S = 1.0


@dataclass
class _Link:
    """One source: its points, and the c104 client of the current session."""

    source: Source
    points: dict[tuple[int, int], Point]  # (common address, ioa) -> point
    client: Any = None
    connection: Any = None
    stations: dict[int, Any] = field(default_factory=dict)
    command_points: dict[tuple[int, int, str], Any] = field(default_factory=dict)
    generation: int = 0
    open: bool = False
    ready: bool = False  # GI of this session completed
    ever_ready: bool = False
    last_rx: float = 0.0
    session_rx: bool = False  # data arrived in this session: STARTDT was confirmed, whatever c104's state says
    attempts: int = 0
    inflight: set[asyncio.Future[Any]] = field(default_factory=set)
    callbacks: list[Callable[..., Any]] = field(default_factory=list)  # c104 may not keep them alive
    # stopped clients, kept alive a while: destroying a c104 client right after stop() races its
    # connection threads, and glibc aborts the process ("The futex facility returned an unexpected
    # error code")
    retired: collections.deque[tuple[float, Any]] = field(default_factory=collections.deque)

    async def call(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        """Run a blocking c104 call in a thread; the session waits for it before stopping c104."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, **kwargs))
        self.inflight.add(future)
        future.add_done_callback(self.inflight.discard)
        return await asyncio.shield(future)


@dataclass
class Iec104Client(TelemetryAdapter):
    """IEC 104 client for the ``iec104`` sources of a point map; see the module docstring.

    ``source`` limits it to one source (None: every IEC 104 source). ``backoff_s`` is the first
    reconnect delay, doubled after each failed session up to ``backoff_max_s``. ``host`` and
    ``port`` override the source's (tests). ``select_before_operate``: True sends every command
    as select then execute, False executes directly, None (default) does what
    :data:`DEFAULT_COMMAND_MODE` says per command type (select before operate for single and
    double commands, direct for set-points), as the simulator's RTU expects. A command returns
    True only on a positive activation confirmation of the execute; a negative confirmation
    (P/N = 1) of the select or the execute, or no confirmation within ``command_timeout_s``
    (an RTU answers COT 44-47 without one), is a refusal: False. ``startdt_timeout_s`` (default
    t1) bounds the wait for the RTU's STARTDT confirmation before the session is started over.
    """

    point_map: PointMap | None = None
    source: str | None = None
    link: LinkParameters = field(default_factory=LinkParameters)
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    command_timeout_s: float = 10.0
    command_ioa_offset: int = COMMAND_IOA_OFFSET
    select_before_operate: bool | None = None
    startdt_timeout_s: float | None = None
    tick_rate_ms: int = 50
    host: str | None = None
    port: int | None = None
    _links: dict[str, _Link] = field(default_factory=dict, init=False, repr=False)
    _states: dict[str, _PointState] = field(default_factory=dict, init=False, repr=False)
    _pending: list[Measurement] = field(default_factory=list, init=False, repr=False)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        pm = self.point_map
        if pm is None:
            raise ValueError(f"iec104 client {self.name}: no point map")
        if self.source is not None:
            src = pm.sources.get(self.source)
            if src is None or src.protocol != "iec104":
                raise ValueError(f"iec104 client {self.name}: {self.source!r} is not an iec104 source of {pm.file}")
            sources: tuple[Source, ...] = (src,)
        else:
            sources = pm.sources_of("iec104")
        for src in sources:
            points = {}
            for p in pm.points_of(src.name):
                assert p.ioa is not None
                points[(p.common_address if p.common_address is not None else src.common_address, p.ioa)] = p
            self._links[src.name] = _Link(src, points)
        self._by_name = {p.name: (link, key) for link in self._links.values() for key, p in link.points.items()}

    # -- status --------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True when every source's link is up and its general interrogation completed."""
        return bool(self._links) and all(link.open and link.ready for link in self._links.values())

    def connect_attempts(self, source: str | None = None) -> int:
        """Return how many connections were attempted (to one source, or to all)."""
        return sum(link.attempts for name, link in self._links.items() if source in (None, name))

    # -- lifecycle -----------------------------------------------------------------------------
    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for link in self._links.values():
            for p in link.points.values():
                self._states.setdefault(p.name, _PointState())
        async with asyncio.TaskGroup() as tg:
            for link in self._links.values():
                tg.create_task(self._supervise(link))

    async def _close(self) -> None:
        for link in self._links.values():
            await self._end_session(link)
        # destroy the stopped clients here, once their threads are done, not later in a garbage
        # collection at some random point of another connection's life
        newest = max((t for link in self._links.values() for t, _ in link.retired), default=None)
        if newest is not None:
            await asyncio.sleep(max(0.0, newest + _RETIRE_S - time.monotonic()))
        for link in self._links.values():
            link.retired.clear()

    async def _supervise(self, link: _Link) -> None:
        delay = self.backoff_s
        while True:
            up = False
            try:
                self._start_session(link)
                up = await self._session(link)
            finally:
                await self._end_session(link)
            await self._mark_stale(link)
            if up:
                delay = self.backoff_s
            log.warning("event=iec104_retry adapter=%s source=%s retry_in_s=%.3f", self.name, link.source.name, delay)
            await asyncio.sleep(delay)
            if not up:
                delay = min(delay * 2, self.backoff_max_s)

    def _start_session(self, link: _Link) -> None:
        c = _import_c104()
        link.generation += 1
        link.attempts += 1
        link.open = link.ready = link.session_rx = False
        link.stations.clear()
        link.command_points.clear()
        client = c.Client(tick_rate_ms=self.tick_rate_ms, command_timeout_ms=int(self.command_timeout_s * 1000))
        host = self.host or link.source.host
        port = self.port or link.source.port
        con = client.add_connection(ip=host, port=port, init=c.Init.INTERROGATION)
        if con is None:
            raise ValueError(f"iec104 client {self.name}: cannot connect to {host}:{port}")
        self.link.apply(con.protocol_parameters)

        def on_receive(point: Any, previous_info: Any, message: Any) -> Any:
            key = (int(message.common_address), int(point.io_address))
            p = link.points.get(key)
            if p is not None:
                link.last_rx = time.monotonic()
                link.session_rx = True
                self._accept(c, p, point)
            return c.ResponseState.NONE

        def on_new_point(client: Any, station: Any, io_address: int, point_type: Any) -> None:
            self._count_unknown(link, f"ca={station.common_address} ioa={io_address} type={point_type.name}")

        def on_new_station(client: Any, connection: Any, common_address: int) -> None:
            self._count_unknown(link, f"ca={common_address}")

        client.on_new_point(
            callable=_signed(
                on_new_point, client=c.Client, station=c.Station, io_address=int, point_type=c.Type, **_NONE
            )
        )
        client.on_new_station(
            callable=_signed(on_new_station, client=c.Client, connection=c.Connection, common_address=int, **_NONE)
        )
        receive = _signed(
            on_receive,
            point=c.Point,
            previous_info=c.Information,
            message=c.IncomingMessage,
            **{"return": c.ResponseState},
        )
        for (ca, ioa), p in link.points.items():
            station = link.stations.get(ca) or con.add_station(common_address=ca)
            link.stations[ca] = station
            cp = station.add_point(io_address=ioa, type=getattr(c.Type, p.type or ""))
            cp.on_receive(callable=receive)
        link.callbacks = [on_receive, on_new_point, on_new_station, receive]
        link.client, link.connection = client, con
        link.last_rx = time.monotonic()
        log.info(
            "event=iec104_connecting adapter=%s source=%s host=%s port=%s", self.name, link.source.name, host, port
        )
        client.start()

    async def _session(self, link: _Link) -> bool:
        """Run one connection until it fails; return whether it completed a GI.

        The connection state is polled: c104's state callbacks proved unreliable from the second
        client of a process on. No STARTDT or GI is sent from here: c104 2.2.1 crashes
        (segfault in Socket_write) when one races a peer closing the socket, so c104 sends them
        itself on connect (Init.INTERROGATION). After a truncated frame a c104 connection may
        report OPEN on a dead socket; the silence limit ends such a session.
        """
        c = _import_c104()
        name = link.source.name
        deadline = time.monotonic() + self.link.t0_s + self.link.t1_s
        startdt_timeout = self.startdt_timeout_s if self.startdt_timeout_s is not None else self.link.t1_s
        muted_since = 0.0
        while True:
            await asyncio.sleep(_POLL_S)
            con = link.connection
            state = con.state if con is not None else None
            if state == c.ConnectionState.OPEN_MUTED and not link.ready and not link.session_rx:
                # TCP up; c104 sends STARTDT and the GI itself (Init.INTERROGATION). Now and
                # then c104 2.2.1 stays muted (no STARTDT con): start over instead of waiting.
                if not link.open:
                    link.open, muted_since = True, time.monotonic()
                if time.monotonic() - muted_since <= startdt_timeout:
                    continue
                reason = "startdt_timeout"
            else:
                reason = None
            is_open = state == c.ConnectionState.OPEN
            if reason is not None:
                pass
            elif not is_open and (link.open or link.ready):
                reason = "closed"
            elif (is_open or link.session_rx) and not link.ready:
                # a fast RTU answers the GI before a 50 ms poll sees OPEN: data proves the session
                link.open = link.ready = True
                link.last_rx = time.monotonic()
                if link.ever_ready:
                    self.counters.reconnects += 1
                link.ever_ready = True
                log.info("event=iec104_open adapter=%s source=%s", self.name, name)
            elif not link.ready and time.monotonic() > deadline:
                reason = "connect_timeout"
            elif link.ready and time.monotonic() - link.last_rx > link.source.stale_after_s:
                # nothing received for stale_after_s: a new session (and its GI) proves the link
                reason = "silent"
            if reason is not None:
                self.counters.errors += 1
                log.warning(
                    "event=iec104_session_failed adapter=%s source=%s reason=%s was_ready=%s",
                    self.name,
                    name,
                    reason,
                    link.ready,
                )
                return link.ready

    async def _end_session(self, link: _Link) -> None:
        client, link.client, link.connection = link.client, None, None
        link.open = link.ready = False
        link.generation += 1  # late callbacks of the old client are ignored
        if link.inflight:  # never stop c104 under a call still running in a thread
            await asyncio.shield(asyncio.wait(set(link.inflight)))
        if client is not None:
            client.stop()  # quick (milliseconds)
            now = time.monotonic()
            link.retired.append((now, client))
            while link.retired and now - link.retired[0][0] > _RETIRE_S:
                link.retired.popleft()

    # -- data ----------------------------------------------------------------------------------
    def _accept(self, c: Any, p: Point, cp: Any) -> None:
        """Called from c104's thread for each received information object of a known point."""
        value, quality = _decode(c, p, cp)
        stamp = _as_utc(cp.recorded_at) if p.type in _TIME_TAGGED else utc_now()
        m = Measurement(p.name, stamp, value, quality)
        with self._pending_lock:
            self._pending.append(m)
            first = len(self._pending) == 1
        if first and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._schedule_flush)

    def _schedule_flush(self) -> None:
        asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        for m in batch:
            state = self._states.setdefault(m.point, _PointState())
            state.value, state.quality = m.value, Quality(m.quality)
        await self._publish(batch)

    def _count_unknown(self, link: _Link, what: str) -> None:
        with self._pending_lock:
            self.counters.unknown += 1
        log.warning("event=iec104_unknown_address adapter=%s source=%s %s", self.name, link.source.name, what)

    async def _mark_stale(self, link: _Link) -> None:
        await self._flush()
        stamp = utc_now()
        batch = []
        for p in link.points.values():
            state = self._states.setdefault(p.name, _PointState())
            if state.quality is None or state.quality & Quality.NT:
                continue  # never received, or already stale
            state.quality = (state.quality or Quality.GOOD) | Quality.NT
            batch.append(Measurement(p.name, stamp, state.value, state.quality))
        if batch:
            log.warning(
                "event=iec104_points_stale adapter=%s source=%s points=%d", self.name, link.source.name, len(batch)
            )
            await self._publish(batch)

    # -- commands ------------------------------------------------------------------------------
    async def send_single_command(self, point: str, on: bool) -> bool:
        """Send a single command (C_SC_NA_1) for ``point``; return whether the RTU confirmed."""
        return await self._command(point, "C_SC_NA_1", 1.0 if on else 0.0)

    async def send_double_command(self, point: str, closed: bool) -> bool:
        """Send a double command (C_DC_NA_1: ON closes, OFF opens); return whether the RTU confirmed."""
        return await self._command(point, "C_DC_NA_1", 1.0 if closed else 0.0)

    async def send_setpoint(self, point: str, value: float) -> bool:
        """Send a set-point in ``point``'s unit (scaled back to raw; C_SE_NC/NB/NA_1 by the point's type).

        Return whether the RTU confirmed.
        """
        p = self._point(point)
        type_name = _COMMAND_TYPE.get(p.type or "")
        if type_name is None or not type_name.startswith("C_SE"):
            raise ValueError(f"iec104 client {self.name}: point {point!r} of type {p.type} takes no set-point")
        return await self._command(point, type_name, p.to_raw(value))

    def _point(self, name: str) -> Point:
        link, key = self._link_of(name)
        return link.points[key]

    def _link_of(self, name: str) -> tuple[_Link, tuple[int, int]]:
        found = self._by_name.get(name)
        if found is None:
            raise KeyError(f"iec104 client {self.name}: no iec104 point {name!r}")
        return found

    async def _command(self, point: str, type_name: str, raw: float) -> bool:
        link, (ca, ioa) = self._link_of(point)
        c = _import_c104()
        station = link.stations.get(ca)
        if not (link.open and station is not None):
            log.warning("event=iec104_command_not_sent adapter=%s point=%s reason=not_connected", self.name, point)
            return False
        cmd_ioa = ioa + self.command_ioa_offset
        key = (ca, cmd_ioa, type_name)
        cp = link.command_points.get(key)
        if cp is None:
            sbo = self.select_before_operate
            if sbo is None:
                sbo = DEFAULT_COMMAND_MODE[type_name] == "select"
            mode = c.CommandMode.SELECT_AND_EXECUTE if sbo else c.CommandMode.DIRECT
            cp = station.add_point(io_address=cmd_ioa, type=getattr(c.Type, type_name), command_mode=mode)
            if cp is None:
                raise ValueError(f"iec104 client {self.name}: cannot address command {type_name} at ioa {cmd_ioa}")
            link.command_points[key] = cp
        cp.value = _encode(c, type_name, raw)
        try:
            confirmed = bool(await link.call(cp.transmit, cause=c.Cot.ACTIVATION))
        except ValueError as exc:  # the connection went away under the command
            self.counters.errors += 1
            log.warning("event=iec104_command_failed adapter=%s point=%s error=%s", self.name, point, exc)
            return False
        log.info(
            "event=iec104_command adapter=%s point=%s type=%s ioa=%d raw=%s result=%s",
            self.name,
            point,
            type_name,
            cmd_ioa,
            raw,
            "confirmed" if confirmed else "refused",
        )
        return confirmed


_NONE: dict[str, Any] = {"return": None}


def iec104_clients(point_map: PointMap, **options: Any) -> list[Iec104Client]:
    """Return one :class:`Iec104Client` per IEC 104 source of ``point_map``."""
    return [
        Iec104Client(name=f"iec104:{s.name}", point_map=point_map, source=s.name, **options)
        for s in point_map.sources_of("iec104")
    ]


# -- server -----------------------------------------------------------------------------------
#: Called with (point name, engineering value) for each command; False refuses it.
CommandCallback = Callable[[str, float], Awaitable[bool | None] | bool | None]
#: Called with (point name, engineering value) for a select: False refuses it; nothing may change.
CommandCheck = Callable[[str, float], Awaitable[bool] | bool]

#: Command modes of a command object: ``direct`` (execute at once) or ``select`` (select before operate).
COMMAND_MODES = ("direct", "select")
#: Default command mode per command type: switching commands are selected before they operate
#: (a breaker must not move on one corrupted or misaddressed telegram); set-points, which a
#: controller adjusts continuously and which move nothing irreversibly, operate directly.
DEFAULT_COMMAND_MODE: Mapping[str, str] = {
    "C_SC_NA_1": "select",
    "C_DC_NA_1": "select",
    "C_SE_NA_1": "direct",
    "C_SE_NB_1": "direct",
    "C_SE_NC_1": "direct",
}
_COMMAND_TYPE_IDS = frozenset(TYPE_ID[t] for t in DEFAULT_COMMAND_MODE)
_GI, _READ, _CLOCK = TYPE_ID["C_IC_NA_1"], TYPE_ID["C_RD_NA_1"], TYPE_ID["C_CS_NA_1"]
_GLOBAL_CA = 0xFFFF
_QOI_STATION = 20


@dataclass
class _Monitored:
    point: Point
    type_id: int
    value: float = 0.0
    quality: Quality = Quality.GOOD
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


class Iec104Server:
    """An RTU simulator: an IEC 60870-5-104 controlled station serving a source's points.

    Monitoring: every point is an information object of its type at its address; GI
    (C_IC_NA_1, QOI 20) answers ACT_CON, every object with COT 20, ACT_TERM; a read
    (C_RD_NA_1, COT 5) answers the object with COT 5; :meth:`set_value` sends a change
    spontaneously (COT 3) to every started connection. Time tags are CP56Time2a in UTC.

    Commands (IEC 60870-5-101 clause 7.4.4 and IEC 60870-5-5 clause 6.8, command transmission):
    a point whose type has a command type (single point: C_SC_NA_1, double point: C_DC_NA_1,
    measured value: the set-point C_SE_NA/NB/NC_1 of its kind) has a command object at
    ``ioa + command_ioa_offset``. ``command_modes`` (point name -> ``direct`` or ``select``)
    overrides :data:`DEFAULT_COMMAND_MODE`. Answers, each the received ASDU mirrored with another
    cause and P/N bit:

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
    is asked on a select whether the command would be taken; False refuses the select.
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
            obj = _Monitored(p, TYPE_ID[p.type])
            self._monitored[(self._ca(p), p.ioa)] = obj
            self._by_name[name] = obj
            command_type = _COMMAND_TYPE.get(p.type)
            if command_type is not None:
                mode = modes.pop(name, DEFAULT_COMMAND_MODE[command_type])
                if mode not in COMMAND_MODES:
                    raise ValueError(f"iec104 server: command mode of {name!r} must be direct or select, got {mode!r}")
                key = (self._ca(p), p.ioa + command_ioa_offset)
                self._commands[key] = _CommandObject(p, command_type, TYPE_ID[command_type], mode)
        if modes:
            raise ValueError(f"iec104 server: command modes for points without a command object: {sorted(modes)}")
        self._stations = {ca for ca, _ in self._monitored}
        self._selections: dict[tuple[int, int], _Selection] = {}
        self._connections: set[LinkConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
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

        Return (points transmitted, points changed).
        """
        changed: list[_Monitored] = []
        now = utc_now()
        for name, item in values.items():
            obj = self._by_name.get(name)
            if obj is None:
                raise KeyError(f"iec104 server: no point {name!r}")
            value, quality = item if isinstance(item, tuple) else (item, Quality.GOOD)
            new_value, new_quality = float(value), Quality(int(quality))
            same_value = new_value == obj.value or (math.isnan(new_value) and math.isnan(obj.value))
            if new_quality == obj.quality and same_value:
                continue
            obj.value, obj.quality, obj.stamp = new_value, new_quality, now
            changed.append(obj)
        sent = self._transmit(changed, Cot.SPONTANEOUS, self._started()) if changed else 0
        return sent, len(changed)

    def value(self, point: str) -> tuple[float, Quality]:
        """Return the (value, quality) currently served for ``point``."""
        obj = self._by_name[point]
        return obj.value, obj.quality

    def _started(self) -> list[LinkConnection]:
        return [c for c in self._connections if c.started]

    def _transmit(self, objs: Iterable[_Monitored], cause: int, to: list[LinkConnection]) -> int:
        """Send ``objs`` grouped by station and type, as many per ASDU as fit; return the objects sent."""
        if not to:
            return 0
        groups: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        for obj in objs:
            assert obj.point.ioa is not None
            groups.setdefault((self._ca(obj.point), obj.type_id), []).append((obj.point.ioa, self._element(obj)))
        sent = 0
        for (ca, type_id), items in groups.items():
            size = objects_per_asdu(type_id)
            for i in range(0, len(items), size):
                chunk = items[i : i + size]
                asdu = encode_asdu(type_id, cause, ca, chunk)
                if sum(connection.send_asdu(asdu) for connection in to):
                    sent += len(chunk)
        return sent

    def _element(self, obj: _Monitored) -> bytes:
        """Return the information element of a monitoring object (IEC 60870-5-101 clause 7.3.1)."""
        p, type_name = obj.point, obj.point.type or ""
        raw = p.to_raw(obj.value) if math.isfinite(obj.value) else math.nan
        qds = obj.quality.to_qds()
        if type_name in _SINGLE:
            element = bytes([(1 if math.isfinite(raw) and raw != 0.0 else 0) | (qds & 0xF0)])
        elif type_name in _DOUBLE:
            dpi = 2 if raw == 1.0 else 1 if raw == 0.0 else 3  # ON, OFF, indeterminate
            element = bytes([dpi | (qds & 0xF0)])
        elif type_name in _STEP:
            step, over = _fit(raw, -64, 63)
            element = bytes([step & 0x7F, qds | over])
        elif type_name in _SCALED:
            sva, over = _fit(raw, -32768, 32767)
            element = struct.pack("<hB", sva, qds | over)
        elif type_name in _NORMALISED:
            nva, over = _fit(raw * 32768 if math.isfinite(raw) else raw, -32768, 32767)
            element = struct.pack("<hB", nva, qds | over)
        else:
            try:
                element = struct.pack("<fB", raw, qds)
            except OverflowError:  # beyond float32: the largest value, flagged overflow
                element = struct.pack("<fB", math.copysign(3.4e38, raw), qds | 0x01)
        if type_name in _TIME_TAGGED:
            element += cp56time2a(obj.stamp)
        return element

    # -- server --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    @property
    def connections(self) -> int:
        """Number of clients connected now."""
        return sum(not c.closed for c in self._connections)

    async def start(self) -> None:
        """Start listening; :attr:`port` holds the port (a free one when it was 0)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("event=iec104_server_start host=%s port=%d points=%d", self.host, self.port, len(self.points))

    async def stop(self) -> None:
        """Stop listening and drop the clients; :meth:`start` serves again on the same port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close("server_stop")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        self._selections.clear()
        log.info("event=iec104_server_stop port=%d", self.port)

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

    # -- received ASDUs ------------------------------------------------------------------------
    async def _on_asdu(self, connection: LinkConnection, data: bytes) -> None:
        try:
            asdu = Asdu.decode(data)
        except AsduError as exc:
            log.warning("event=iec104_server_bad_asdu peer=%s error=%s", connection.peer, exc)
            return

        def answer(cause: int, negative: bool) -> None:
            connection.send_asdu(asdu.mirror(cause, negative=negative))

        handled = (_GI, _READ, _CLOCK, *_COMMAND_TYPE_IDS)
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
        if asdu.type_id in _COMMAND_TYPE_IDS:
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
            self._transmit([o for (ca, _), o in self._monitored.items() if ca in stations], qoi, [connection])
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
        select = bool(element[-1] & 0x80)
        plain = element[:-1] + bytes([element[-1] & 0x7F])
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
        value = _command_value(cmd, plain)
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

    async def _run_check(self, name: str, value: float | None) -> bool:
        check = self.check_command
        if check is None or value is None:
            return True
        try:
            async with asyncio.timeout(self.command_timeout_s):
                result = check(name, value)
                if isinstance(result, Awaitable):
                    result = await result
        except Exception as exc:
            log.warning("event=iec104_server_check_failed point=%s error=%r", name, exc)
            return False
        return bool(result)

    async def _run_on_command(self, name: str, value: float) -> bool:
        callback = self.on_command
        if callback is None:
            return True
        try:
            async with asyncio.timeout(self.command_timeout_s):
                result = callback(name, value)
                if isinstance(result, Awaitable):
                    result = await result
        except Exception as exc:
            log.warning("event=iec104_server_command_failed point=%s error=%r", name, exc)
            return False
        if result is False:
            log.warning("event=iec104_server_command_refused point=%s value=%r reason=refused_by_twin", name, value)
        return result is not False


def _fit(raw: float, low: int, high: int) -> tuple[int, int]:
    """Return (``raw`` rounded into [low, high], the OV bit 0x01 when it had to be clipped); NaN gives 0 and OV."""
    if not math.isfinite(raw):
        return 0, 0x01
    value = round(raw)
    return min(max(value, low), high), 0x01 if not low <= value <= high else 0


def _command_value(cmd: _CommandObject, element: bytes) -> float | None:
    """Return the engineering value a command element (S/E cleared) asks for; None when it is not a valid command."""
    p, type_name = cmd.point, cmd.type_name
    if type_name == "C_SC_NA_1":
        raw = float(element[0] & 0x01)
    elif type_name == "C_DC_NA_1":
        dcs = element[0] & 0x03
        if dcs not in (1, 2):  # 0 and 3 are not permitted (IEC 60870-5-101 clause 7.2.6.16)
            return None
        raw = 1.0 if dcs == 2 else 0.0
    elif type_name == "C_SE_NA_1":
        raw = struct.unpack("<h", element[:2])[0] / 32768
    elif type_name == "C_SE_NB_1":
        raw = float(struct.unpack("<h", element[:2])[0])
    else:
        raw = float(struct.unpack("<f", element[:4])[0])
        if not math.isfinite(raw):
            return None
    return p.to_value(raw)
