"""IEC 60870-5-104 client (controlling station) adapter on c104.

c104 (GPL-3.0) is an optional extra (``pip install opendso[iec104]``): this module imports it
inside the functions that need it, never when it is imported.

:class:`Iec104Client` connects to the IEC 104 sources of a point map (one connection per
source: host, port, and a station per common address), runs a general interrogation (GI) on
every connect and reconnect, and hands out one :class:`Measurement` per received information
object: the value scaled by the point (``raw * scale + offset``), the quality from the IEC 104
quality descriptor, and the time tag when the type carries one (CP56Time2a read as UTC; the
receipt time when the tag is flagged invalid). Double points map ON to 1.0 (closed) and OFF to
0.0 (open); intermediate and indeterminate states arrive as NaN with quality IV. Objects whose
address is not in the point map are counted as ``unknown``. A lost connection, a peer that
sends garbage or truncated frames, or a link silent for longer than the source's
``stale_after_s`` ends the session: the error is counted, the source's points are handed out
once with quality NT (last value kept), and the client connects again after an exponential
back-off; the GI then makes them good again. IEC 104 sends test frames every t3 seconds on a
quiet link, so t3 must stay below ``stale_after_s``. Link parameters are whole seconds (c104's
resolution).

Monitoring data is read from c104's raw-frame callback, one call per APDU, and decoded here a
whole ASDU at a time (:func:`~opendso.telemetry.iec104.codec.decode_monitoring`): c104's
per-point callbacks cost a Python call, three c104 objects and the GIL for every information
object, which capped the client at a few thousand points per second.

Commands (:meth:`~opendso.telemetry.base.TelemetryAdapter.operate_switch`,
:meth:`~opendso.telemetry.base.TelemetryAdapter.send_setpoint`) follow the command transmission
of IEC 60870-5-101 clause 7.4.4 and IEC 60870-5-5 clause 6.8, which IEC 104 uses: a switch point of type
single point gets a single command (C_SC_NA_1), a double point a double command (C_DC_NA_1; ON
closes, OFF opens); a measured value gets the set-point command of its kind (C_SE_NC/NB/NA_1).
The command goes to the command object at ``ioa + command_ioa_offset`` (default 100000) of the
point's station, as select then execute (select-before-operate: the select is confirmed
before the execute is sent) or as a direct execute. Outcomes: a positive activation
confirmation (ACT_CON) of the execute, then the point's monitored status reporting the
requested value (return information, COT 11, or a spontaneous report) within the feedback
timeout: completed; confirmed but no such report: not executed (ACT_TERM, the activation
termination, alone is not taken for execution); a negative ACT_CON (P/N = 1) of the select or
the execute, or a negative mirror with COT 44-47 (unknown type, cause, common address or object
address): refused; no confirmation within ``command_timeout_s``: no response. The mirrors are
read from the raw frames, as c104 reports only whether the command was confirmed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opendso.errors import AsduError
from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.commands import CommandAttempt, CommandKind, CommandRequest, CommandResult, setpoint_tolerance
from opendso.telemetry.iec104.codec import (
    COMMAND_IOA_OFFSET,
    COMMAND_TYPE,
    COMMAND_TYPE_IDS,
    COT_TEXT,
    DEFAULT_COMMAND_MODE,
    DOUBLE_TYPES,
    QUALITY_OF_QDS,
    SELECT_BIT,
    SINGLE_TYPES,
    TYPE_ID,
    Cot,
    decode_cp56time2a,
    decode_monitoring,
)
from opendso.telemetry.iec104.link import LinkParameters
from opendso.telemetry.points import Connection, Point, PointMap
from opendso.telemetry.quality import Quality
from opendso.timeutil import Backoff

__all__ = ["Iec104Client", "iec104_clients"]

log = logging.getLogger(__name__)

_POLL_S = 0.05
#: Type identifications of monitoring ASDUs this client decodes.
_MONITORING_IDS = frozenset(TYPE_ID[t] for t in TYPE_ID if t.startswith("M_"))
#: Causes whose negative mirror of a command refuses it.
_REFUSING_COTS = frozenset((Cot.ACTIVATION_CON, Cot.UNKNOWN_TYPE_ID, Cot.UNKNOWN_COT, Cot.UNKNOWN_CA, Cot.UNKNOWN_IOA))


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


def _encode(c: Any, type_name: str, raw: float) -> Any:
    """Return the c104 value of a command type for a raw protocol value."""
    if type_name == "C_DC_NA_1":
        return c.Double.ON if raw == 1.0 else c.Double.OFF
    if type_name == "C_SC_NA_1":
        return bool(raw)
    if type_name == "C_SE_NB_1":
        return c.Int16(round(raw))
    if type_name == "C_SE_NA_1":
        return c.NormalizedFloat(raw)
    return float(raw)


@dataclass
class _PointState:
    value: float = math.nan
    quality: Quality | None = None


@dataclass
class _Mirror:
    """One answer of the RTU to a command object, as read from the raw frames."""

    cause: int
    negative: bool
    select: bool


@dataclass
class _Trace:
    """The answers of the RTU to one command under way (filled by c104's thread)."""

    type_id: int
    loop: asyncio.AbstractEventLoop
    answers: list[_Mirror] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)


#: Seconds c104's raw-frame callback may lag behind c104's own report of a command's outcome.
_LATE_ANSWER_S = 0.5
#: Seconds a stopped c104 client is kept before it is destroyed (see ``_Link.retired``).
_RETIRE_S = 1.0


@dataclass
class _Link:
    """One source: its points, and the c104 client of the current session."""

    source: Connection
    points: dict[tuple[int, int], Point]  # (common address, ioa) -> point
    client: Any = None
    connection: Any = None
    stations: dict[int, Any] = field(default_factory=dict)
    command_points: dict[tuple[int, int, str], Any] = field(default_factory=dict)
    traces: dict[tuple[int, int], _Trace] = field(default_factory=dict)  # (ca, command ioa) -> the command's answers
    busy: set[tuple[int, int]] = field(default_factory=set)  # command objects with a command under way
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
    :data:`~opendso.telemetry.iec104.codec.DEFAULT_COMMAND_MODE` says per command type (select
    before operate for single and double commands, direct for set-points), as the simulator's
    RTU expects; a command's own ``select_before_operate`` overrides it. ``command_timeout_s``
    bounds the wait for each confirmation (c104's command timeout); ``feedback_timeout_s`` the
    wait for the status after it. ``startdt_timeout_s`` (default t1) bounds the wait for the
    RTU's STARTDT confirmation before the session is started over.
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
    _frames: list[tuple[_Link, bytes]] = field(default_factory=list, init=False, repr=False)
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
            sources: tuple[Connection, ...] = (src,)
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
        backoff = Backoff(self.backoff_s, self.backoff_max_s)
        while True:
            up = False
            try:
                self._start_session(link)
                up = await self._session(link)
            finally:
                await self._end_session(link)
            await self._mark_stale(link)
            if up:
                backoff.reset()
            delay = backoff.current if up else backoff.next()
            log.warning("event=iec104_retry adapter=%s source=%s retry_in_s=%.3f", self.name, link.source.name, delay)
            await asyncio.sleep(delay)

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
        generation = link.generation

        def on_receive_raw(connection: Any, data: bytes) -> None:
            # c104's thread: keep it short (the GIL), decode on the event loop
            if link.generation != generation:
                return
            link.last_rx = time.monotonic()
            if len(data) < 12 or data[2] & 0x01:  # S or U frame: no ASDU
                return
            type_id = data[6]
            if type_id in COMMAND_TYPE_IDS:
                self._note_answer(link, data)
                return
            if type_id not in _MONITORING_IDS:
                return
            link.session_rx = True
            with self._pending_lock:
                self._frames.append((link, data))
                first = len(self._frames) == 1
            if first and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._schedule_flush)

        raw = _signed(on_receive_raw, connection=c.Connection, data=bytes, **{"return": None})
        con.on_receive_raw(callable=raw)
        for ca, _ in link.points:
            if ca not in link.stations:
                link.stations[ca] = con.add_station(common_address=ca)
        link.callbacks = [on_receive_raw, raw]
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
    def _schedule_flush(self) -> None:
        asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        with self._pending_lock:
            frames, self._frames = self._frames, []
        if not frames:
            return
        batch: list[Measurement] = []
        for link, data in frames:
            self._decode(link, data, batch)
        states = self._states
        for m in batch:
            state = states.get(m.point)
            if state is None:
                state = states[m.point] = _PointState()
            state.value, state.quality = m.value, m.quality  # type: ignore[assignment]
        await self._publish(batch)

    def _decode(self, link: _Link, data: bytes, batch: list[Measurement]) -> None:
        """Append the measurements of one monitoring APDU (start octet included) to ``batch``."""
        vsq, ca = data[7], data[10] | data[11] << 8
        try:
            objects = decode_monitoring(data[6], bool(vsq & 0x80), vsq & 0x7F, data[12:])
        except AsduError as exc:
            self.counters.errors += 1
            log.warning("event=iec104_bad_asdu adapter=%s source=%s error=%s", self.name, link.source.name, exc)
            return
        now = utc_now()
        points = link.points
        append = batch.append
        for ioa, raw, qds, tag in objects:
            p = points.get((ca, ioa))
            if p is None:
                self._count_unknown(link, f"ca={ca} ioa={ioa} type={data[6]}")
                continue
            stamp = (decode_cp56time2a(tag) or now) if tag else now
            append(Measurement(p.name, stamp, raw * p.scale + p.offset, QUALITY_OF_QDS[qds]))

    def _count_unknown(self, link: _Link, what: str) -> None:
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
    def _status(self, point: str) -> tuple[float, int] | None:
        state = self._states.get(point)
        if state is None or state.quality is None:
            return None
        return state.value, int(state.quality)

    def _note_answer(self, link: _Link, data: bytes) -> None:
        """c104's thread: record the RTU's answer to a command under way (start octet included)."""
        if len(data) < 16:
            return
        cot = data[8]
        ca = data[10] | data[11] << 8
        ioa = data[12] | data[13] << 8 | data[14] << 16
        with self._pending_lock:
            trace = link.traces.get((ca, ioa))
            if trace is None or trace.type_id != data[6]:
                return
            trace.answers.append(_Mirror(cot & 0x3F, bool(cot & 0x40), bool(data[-1] & SELECT_BIT)))
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            trace.loop.call_soon_threadsafe(trace.answered.set)

    async def _answers(self, trace: _Trace, wanted: Callable[[_Mirror], bool]) -> list[_Mirror]:
        """Return the command's answers once one is ``wanted`` or :data:`_LATE_ANSWER_S` passed."""
        deadline = time.monotonic() + _LATE_ANSWER_S
        while True:
            with self._pending_lock:
                answers = list(trace.answers)
                trace.answered.clear()
            left = deadline - time.monotonic()
            if any(wanted(a) for a in answers) or left <= 0:
                return answers
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await trace.answered.wait()

    async def _command(self, request: CommandRequest, attempt: CommandAttempt) -> CommandResult:
        """Send a single, double or set-point command through c104; see the module docstring."""
        found = self._by_name.get(request.point)
        if found is None:
            return attempt.refused(f"no IEC 104 point {request.point!r} in {self.name}")
        link, (ca, ioa) = found
        p = link.points[(ca, ioa)]
        type_name, problem = _command_type(p, request)
        if type_name is None:
            return attempt.refused(problem)
        raw = p.to_raw(request.value)
        encoding = _encoding_problem(type_name, raw)
        if encoding is not None:
            return attempt.refused(f"{request.description} for point {p.name!r}: {encoding}")
        sbo = request.select_before_operate
        if sbo is None:
            sbo = self.select_before_operate
        if sbo is None:
            sbo = DEFAULT_COMMAND_MODE[type_name] == "select"
        attempt.select_before_operate = sbo
        station = link.stations.get(ca)
        if not (link.open and station is not None):
            return attempt.refused(f"not connected to IEC 104 source {link.source.name!r}")
        cmd_ioa = ioa + self.command_ioa_offset
        if (ca, cmd_ioa) in link.busy:
            return attempt.refused(f"a command to the command object of {p.name!r} is under way")
        c = _import_c104()
        cp = link.command_points.get((ca, cmd_ioa, type_name))
        if cp is None:
            cp = station.add_point(io_address=cmd_ioa, type=getattr(c.Type, type_name))
            if cp is None:
                return attempt.refused(f"c104 cannot address {type_name} at ioa {cmd_ioa} of station {ca}")
            link.command_points[(ca, cmd_ioa, type_name)] = cp
        cp.command_mode = c.CommandMode.SELECT_AND_EXECUTE if sbo else c.CommandMode.DIRECT
        cp.value = _encode(c, type_name, raw)
        resolution = {"C_SE_NB_1": 1.0, "C_SE_NA_1": 1 / 32768}.get(type_name, 0.0) * abs(p.scale)
        tolerance = setpoint_tolerance(request, deadband=p.deadband, resolution=resolution)
        trace = _Trace(TYPE_ID[type_name], asyncio.get_running_loop())
        link.busy.add((ca, cmd_ioa))
        with self._pending_lock:
            link.traces[(ca, cmd_ioa)] = trace
        try:
            with self._watching(attempt, tolerance):
                what = f"{type_name} to ioa {cmd_ioa} ({'select, execute' if sbo else 'direct execute'})"
                for send in (1, 2):
                    with self._pending_lock:
                        trace.answers.clear()
                    attempt.mark_sent()
                    t0 = time.monotonic()
                    try:
                        confirmed = bool(await link.call(cp.transmit, cause=c.Cot.ACTIVATION))
                    except ValueError as exc:  # the connection went away under the command
                        self.counters.errors += 1
                        return attempt.refused(f"c104 could not send {type_name}: {exc}")
                    # c104 may report before its raw-frame callback ran: wait for a deciding frame
                    answers = trace.answers if confirmed else await self._answers(trace, _deciding)
                    if confirmed or any(_deciding(a) and not a.negative for a in answers):
                        # c104 2.2.1 misses a confirmation that arrives before it waits for it (a
                        # fast RTU); the frame itself is the confirmation then
                        attempt.mark_confirmed()
                        await self._flush()  # what arrived with the confirmation (return information) first
                        return await self._await_feedback(attempt, f"{what} confirmed (ACT_CON)")
                    refusal = next((a for a in answers if a.negative and a.cause in _REFUSING_COTS), None)
                    if refusal is not None:
                        phase = "select" if refusal.select else "execute"
                        return attempt.refused(
                            f"{what}: negative {COT_TEXT.get(refusal.cause, f'COT {refusal.cause}')} "
                            f"(COT {refusal.cause}, P/N = 1) to the {phase}"
                        )
                    if not answers and time.monotonic() - t0 < self.command_timeout_s / 2:
                        return attempt.refused(f"{what}: c104 did not send it (link not ready)")
                    selected = any(a.select and a.cause == Cot.ACTIVATION_CON for a in answers)
                    if not (sbo and selected and send == 1):
                        break
                    # the same race on the select: c104 timed out on a select the RTU confirmed and
                    # never sent the execute; select again (the RTU takes a new select of this connection)
                    log.warning(
                        "event=iec104_select_again adapter=%s point=%s reason=c104_missed_select_confirmation",
                        self.name,
                        p.name,
                    )
                phase = "execute" if selected else "command"
                return attempt.no_response(
                    f"{what}: no activation confirmation of the {phase} within {self.command_timeout_s:g} s"
                )
        finally:
            link.busy.discard((ca, cmd_ioa))
            with self._pending_lock:
                link.traces.pop((ca, cmd_ioa), None)


def _deciding(answer: _Mirror) -> bool:
    """True for an answer that decides a command: any negative one, or the confirmation of an execute."""
    return answer.negative or (answer.cause == Cot.ACTIVATION_CON and not answer.select)


def _command_type(p: Point, request: CommandRequest) -> tuple[str | None, str]:
    """Return (command type, "") for ``request`` on point ``p``, or (None, why it takes none)."""
    type_name = COMMAND_TYPE.get(p.type or "")
    if request.kind == CommandKind.SWITCH:
        if p.quantity != "switch" or p.type not in (*SINGLE_TYPES, *DOUBLE_TYPES) or type_name is None:
            return None, f"point {p.name!r} ({p.quantity}, {p.type}) is not a switch with a single or double point"
    elif type_name is None or not type_name.startswith("C_SE") or p.quantity == "switch":
        return None, f"point {p.name!r} ({p.quantity}, {p.type}) takes no set-point"
    if not p.in_range(request.value):
        return None, f"{request.description} is outside the range of point {p.name!r} ({p.min_value} .. {p.max_value})"
    return type_name, ""


def _encoding_problem(type_name: str, raw: float) -> str | None:
    """Return why ``raw`` cannot be carried by a command of ``type_name`` (None when it can)."""
    if type_name == "C_SE_NB_1" and not -32768 <= round(raw) <= 32767:
        return f"raw value {raw:g} does not fit a scaled value (-32768 .. 32767)"
    if type_name == "C_SE_NA_1" and not -1.0 <= raw < 1.0:
        return f"raw value {raw:g} does not fit a normalised value (-1 .. 1)"
    if type_name == "C_SE_NC_1" and not abs(raw) <= 3.4e38:
        return f"raw value {raw:g} does not fit a short floating point number"
    return None


def iec104_clients(point_map: PointMap, **options: Any) -> list[Iec104Client]:
    """Return one :class:`Iec104Client` per IEC 104 source of ``point_map``."""
    return [
        Iec104Client(name=f"iec104:{s.name}", point_map=point_map, source=s.name, **options)
        for s in point_map.sources_of("iec104")
    ]
