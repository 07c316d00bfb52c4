"""IEC 60870-5-104: a client (controlling station) adapter and an RTU simulator, both on c104.

c104 (GPL-3.0) is an optional extra (``pip install opendso[iec104]``): it is imported inside
the functions and classes that need it, never when this module is imported.

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
and received commands are handed to ``on_command`` (then applied to the served value and
returned to the client with cause "return information remote", unless ``apply_commands`` is
off).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.points import Point, PointMap, Source
from opendso.telemetry.quality import Quality

if TYPE_CHECKING:
    import c104

__all__ = [
    "COMMAND_IOA_OFFSET",
    "CommandCallback",
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


@dataclass(frozen=True)
class LinkParameters:
    """IEC 60870-5-104 link parameters; the defaults are the standard's (IEC 60870-5-104 9.6).

    ``t0_s`` connection establishment, ``t1_s`` acknowledgement of a sent APDU, ``t2_s``
    acknowledgement without data, ``t3_s`` test frame on an idle link; ``k`` unacknowledged
    APDUs sent, ``w`` received APDUs before acknowledging. Times are whole seconds (>= 1).
    """

    t0_s: int = 30
    t1_s: int = 15
    t2_s: int = 10
    t3_s: int = 20
    k: int = 12
    w: int = 8

    def __post_init__(self) -> None:
        for name in ("t0_s", "t1_s", "t2_s", "t3_s", "k", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"IEC 104 link parameter {name} must be an integer >= 1, got {value!r}")
        if self.t2_s >= self.t1_s:
            raise ValueError(f"IEC 104 link parameters: t2 ({self.t2_s} s) must be below t1 ({self.t1_s} s)")
        if self.w > self.k:
            raise ValueError(f"IEC 104 link parameters: w ({self.w}) must not exceed k ({self.k})")

    def apply(self, params: c104.ProtocolParameters) -> None:
        """Write these parameters into a c104 connection's or server's protocol parameters."""
        params.connection_timeout = self.t0_s
        params.message_timeout = self.t1_s
        params.confirm_interval = self.t2_s
        params.keep_alive_interval = self.t3_s
        params.send_window_size = self.k
        params.receive_window_size = self.w


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


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    ``port`` override the source's (tests). ``select_before_operate`` sends commands as select
    then execute instead of direct execute. ``startdt_timeout_s`` (default t1) bounds the wait
    for the RTU's STARTDT confirmation before the session is started over.
    """

    point_map: PointMap | None = None
    source: str | None = None
    link: LinkParameters = field(default_factory=LinkParameters)
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    command_timeout_s: float = 10.0
    command_ioa_offset: int = COMMAND_IOA_OFFSET
    select_before_operate: bool = False
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
        link.open = link.ready = False
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
            if state == c.ConnectionState.OPEN_MUTED and not link.ready:
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
            elif is_open and not link.ready:
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
            mode = c.CommandMode.SELECT_AND_EXECUTE if self.select_before_operate else c.CommandMode.DIRECT
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
            "event=iec104_command adapter=%s point=%s type=%s ioa=%d raw=%s confirmed=%s",
            self.name,
            point,
            type_name,
            cmd_ioa,
            raw,
            confirmed,
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


class Iec104Server:
    """An RTU simulator: serve IEC 104 points from a c104 server; see the module docstring.

    ``port`` 0 picks a free port at the first :meth:`start` and keeps it across restarts.
    ``on_command`` runs on the event loop that called :meth:`start`; the RTU confirms the
    command once it returns (negatively when it returns False or raises).
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
        tick_rate_ms: int = 50,
        command_timeout_s: float = 5.0,
    ) -> None:
        self.points: dict[str, Point] = {p.name: p for p in points if p.ioa is not None and p.type is not None}
        self.host, self.port, self.common_address = host, port, common_address
        self.on_command = on_command
        self.apply_commands = apply_commands
        self.command_ioa_offset = command_ioa_offset
        self.link = link or LinkParameters()
        self.tick_rate_ms = tick_rate_ms
        self.command_timeout_s = command_timeout_s
        self._values: dict[str, tuple[float, Quality]] = dict.fromkeys(self.points, (0.0, Quality.GOOD))
        self._server: Any = None
        self._c104_points: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commands_received = 0

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

    # -- values --------------------------------------------------------------------------------
    def set_value(self, point: str, value: float, quality: Quality | int = Quality.GOOD) -> bool:
        """Serve ``value`` (engineering units) with ``quality``; transmit it spontaneously if it changed.

        Return whether it was transmitted (False when unchanged or the server is not running).
        """
        return self.set_values({point: (value, quality)})[0] > 0

    def set_values(self, values: Mapping[str, float | tuple[float, Quality | int]]) -> tuple[int, int]:
        """Serve several values (``value`` or ``(value, quality)``); changed ones go out in batches.

        Return (points transmitted, points changed).
        """
        changed: dict[tuple[int, str], list[Any]] = {}
        n_changed = 0
        for name, item in values.items():
            p = self.points.get(name)
            if p is None:
                raise KeyError(f"iec104 server: no point {name!r}")
            value, quality = item if isinstance(item, tuple) else (item, Quality.GOOD)
            new = (float(value), Quality(int(quality)))
            old = self._values[name]
            if new[1] == old[1] and (new[0] == old[0] or (math.isnan(new[0]) and math.isnan(old[0]))):
                continue
            self._values[name] = new
            n_changed += 1
            cp = self._c104_points.get(name)
            if cp is not None:
                self._write(cp, p, *new)
                changed.setdefault((self._ca(p), p.type or ""), []).append(cp)
        sent = 0
        if self._server is not None and changed:
            c = _import_c104()
            for cps in changed.values():
                for i in range(0, len(cps), 30):  # a few dozen objects per APDU at most
                    chunk = cps[i : i + 30]
                    if len(chunk) == 1:
                        ok = chunk[0].transmit(cause=c.Cot.SPONTANEOUS)
                    else:
                        ok = self._server.transmit_batch(c.Batch(cause=c.Cot.SPONTANEOUS, points=chunk))
                    sent += len(chunk) if ok else 0
        return sent, n_changed

    def value(self, point: str) -> tuple[float, Quality]:
        """Return the (value, quality) currently served for ``point``."""
        return self._values[point]

    def _write(self, cp: Any, p: Point, value: float, quality: Quality) -> None:
        c = _import_c104()
        raw = p.to_raw(value) if math.isfinite(value) else math.nan
        if p.type in _DOUBLE or p.type in _SINGLE or p.type in _STEP or p.type in _SCALED:
            raw = raw if math.isfinite(raw) else -1.0  # DP: indeterminate; others: a number is needed
        cp.value = _encode(c, p.type or "", raw)
        cp.quality = c.Quality(quality.to_qds())

    # -- server --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    @property
    def connections(self) -> int:
        """Number of clients connected now."""
        return int(self._server.open_connection_count) if self._server is not None else 0

    async def start(self) -> None:
        """Start listening; :attr:`port` holds the port (a free one when it was 0)."""
        if self._server is not None:
            return
        c = _import_c104()
        self._loop = asyncio.get_running_loop()
        if self.port == 0:
            self.port = _free_port(self.host)
        server = c.Server(ip=self.host, port=self.port, tick_rate_ms=self.tick_rate_ms)
        self.link.apply(server.protocol_parameters)
        stations: dict[int, Any] = {}
        self._c104_points = {}

        def on_receive(point: Any, previous_info: Any, message: Any) -> Any:
            return self._on_command_received(point, message)

        receive = _signed(
            on_receive,
            point=c.Point,
            previous_info=c.Information,
            message=c.IncomingMessage,
            **{"return": c.ResponseState},
        )
        for name, p in self.points.items():
            ca = self._ca(p)
            station = stations.get(ca) or server.add_station(common_address=ca)
            stations[ca] = station
            assert p.ioa is not None
            cp = station.add_point(io_address=p.ioa, type=getattr(c.Type, p.type or ""))
            if cp is None:
                raise ValueError(f"iec104 server: cannot serve point {name!r} at ca={ca} ioa={p.ioa}")
            self._write(cp, p, *self._values[name])
            self._c104_points[name] = cp
            command_type = _COMMAND_TYPE.get(p.type or "")
            if command_type is not None:
                cmd = station.add_point(
                    io_address=p.ioa + self.command_ioa_offset,
                    type=getattr(c.Type, command_type),
                    related_io_address=p.ioa,
                    related_io_autoreturn=self.apply_commands,
                )
                if cmd is not None:
                    cmd.on_receive(callable=receive)
        self._by_command = {(self._ca(p), p.ioa + self.command_ioa_offset): p for p in self.points.values() if p.ioa}
        self._stations = stations
        server.start()
        self._server = server
        log.info("event=iec104_server_start host=%s port=%d points=%d", self.host, self.port, len(self.points))

    async def stop(self) -> None:
        """Stop listening and drop the clients; :meth:`start` serves again on the same port."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.stop)
            self._c104_points = {}
            log.info("event=iec104_server_stop port=%d", self.port)

    async def __aenter__(self) -> Iec104Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_command_received(self, point: Any, message: Any) -> Any:
        """c104 thread: decode a command, run ``on_command`` on the loop, apply it, confirm."""
        c = _import_c104()
        p = self._by_command.get((int(message.common_address), int(point.io_address)))
        if p is None:
            return c.ResponseState.FAILURE
        if message.is_select_command:
            return c.ResponseState.SUCCESS
        value = point.value
        if point.type == c.Type.C_DC_NA_1:
            if value not in (c.Double.ON, c.Double.OFF):
                return c.ResponseState.FAILURE
            engineering = p.to_value(1.0 if value == c.Double.ON else 0.0)
        elif point.type == c.Type.C_SC_NA_1:
            engineering = p.to_value(1.0 if bool(value) else 0.0)
        elif point.type == c.Type.C_SE_NB_1:
            engineering = p.to_value(float(int(value)))
        else:
            engineering = p.to_value(float(value))
        self.commands_received += 1
        log.info("event=iec104_server_command point=%s type=%s value=%s", p.name, point.type.name, engineering)
        accepted = self._run_on_command(p.name, engineering)
        if not accepted:
            return c.ResponseState.FAILURE
        if self.apply_commands:
            # the related monitoring point is returned to the client after this callback
            self._values[p.name] = (engineering, self._values[p.name][1])
            cp = self._c104_points.get(p.name)
            if cp is not None:
                self._write(cp, p, *self._values[p.name])
        return c.ResponseState.SUCCESS

    def _run_on_command(self, name: str, value: float) -> bool:
        callback, loop = self.on_command, self._loop
        if callback is None or loop is None:
            return True

        async def call() -> bool | None:
            assert callback is not None
            result = callback(name, value)
            if isinstance(result, Awaitable):
                return await result
            return result

        try:
            result = asyncio.run_coroutine_threadsafe(call(), loop).result(self.command_timeout_s)
        except Exception:
            log.exception("event=iec104_server_command_failed point=%s", name)
            return False
        return result is not False
