"""The headless monitor: telemetry adapters -> historian -> real-time cycle -> alarms -> event log.

:class:`Monitor` runs in one asyncio loop. Every batch an adapter hands out is written to the
historian (in a worker thread, so a slow database never stalls the protocols; the historian's
store-and-forward buffer keeps it while the database is away) and updates the latest values
(:class:`~opendso.measurement.LatestValues`: arrays indexed by the point map's point index, one
name lookup per arriving measurement). Every ``period_s`` the real-time cycle runs on a snapshot
of them (also in a worker thread), every alarm transition is appended to the event log, and the
cycle's result goes to every ``on_cycle`` subscriber in order (the command line prints it; the
service publishes it; the event log, switching and FLISR applications can subscribe). A
subscriber that raises is logged and the others still get the result; the cycles go on. The
cycle's own duration and observability are part of every summary, and a cycle that overruns its
period is logged.

Switch changes run a cycle at once (``CycleSettings.event_driven``, on by default): when a batch
changes the value or the quality of a switch-status point (quantity ``switch``; a point's first
value counts, a repeated one does not), topology, estimation and alarms run without waiting for
the period, so a breaker trip reaches the screen one cycle after its arrival. Analog values
stay on the period. The schedule (:class:`CycleSchedule`):

- at most one cycle runs at a time, and at most one extra cycle waits: changes that arrive while
  a cycle runs only mark one as pending, which runs when that cycle ends; a burst of changes (a
  storm, a FLISR sequence) therefore costs the running cycle plus one extra;
- the periodic deadlines lie one period apart and extra cycles do not move them (a periodic
  cycle that starts late because an extra one ran keeps the next deadline where it was); a
  cycle that overruns makes the next one start at once, as without events, and deadlines
  missed entirely are skipped, not made up;
- a periodic cycle due within a quarter of the period (:data:`EVENT_CYCLE_COVERS`) after an
  extra cycle started is left out: that cycle read the analog values just before the deadline,
  and another one straight after it would repeat it. Cycles are thus never run back to back for
  the schedule's sake, and (overruns aside) never more than 1.25 periods apart;
- a periodic cycle that is due while a switch change waits serves both; it counts as periodic.

Every result says what made it run (``CycleResult.trigger``: ``"period"`` or ``"switch"``);
:class:`MonitorStats` counts all cycles in ``cycles``, the extra ones again in ``event_cycles``
and the periodic ones left out in ``skipped_periods``.

The alarm state outlives a restart (:mod:`opendso.operations.alarm_store`): :meth:`Monitor.run`
restores it before the first cycle, and every cycle that changed it writes the changed
channels, in the cycle's worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import LatestValues, Measurement
from opendso.operations.alarm_store import AlarmStore
from opendso.operations.alarms import AlarmEvent
from opendso.operations.cycle import CycleResult, CycleSettings, CycleTrigger, RealTimeCycle
from opendso.store.engine import UNAVAILABLE_ERRORS
from opendso.store.events import EventLog
from opendso.store.historian import Historian
from opendso.telemetry.base import TelemetryAdapter
from opendso.telemetry.binding import SWITCH, Target
from opendso.telemetry.points import PointMap

log = logging.getLogger(__name__)

#: A subscriber of the cycle: called with every cycle's result, in the monitor's event loop.
CycleCallback = Callable[[CycleResult], None]

#: A periodic cycle due within this fraction of the period after an extra (switch) cycle started is left out.
EVENT_CYCLE_COVERS = 0.25


def alarm_event_payload(event: AlarmEvent) -> dict[str, Any]:
    """The event-log payload of an alarm transition."""
    record = event.to_dict()
    record.pop("time", None)
    return record


def log_alarm_events(event_log: EventLog, events: Iterable[AlarmEvent]) -> None:
    """Append alarm transitions to the event log, one event each (kind ``alarm.<transition>``), in one transaction."""
    event_log.append_many(
        [
            (f"alarm.{event.transition.value}", "opendso", event.key, alarm_event_payload(event), event.time)
            for event in events
        ]
    )


class Decision(NamedTuple):
    """What :meth:`CycleSchedule.next` decided: run a cycle now (``trigger``), or wait up to ``wait_s``."""

    trigger: CycleTrigger | None  # None: wait (a switch change may end the wait early)
    wait_s: float  # with no trigger: seconds until the next periodic cycle is due
    skipped: int  # periodic cycles left out on the way (an extra cycle had just run)


class CycleSchedule:
    """When the monitor's cycles run: on the period, and extra ones for switch changes (pure; any monotonic clock).

    Ask :meth:`next` whenever no cycle runs, with the clock's time and whether a switch change
    waits; it says to start a cycle now, and why, or how long to wait. The rules are those of
    the module docstring: periodic deadlines ``period_s`` apart, never moved by extra cycles (a
    periodic cycle that starts late keeps the next deadline; after an overrun the next one is
    due at once; deadlines missed entirely are skipped); a pending change runs an extra cycle at
    once; a periodic cycle due within ``covers`` of the period after an extra cycle started is
    left out; a due periodic cycle serves a pending change too.
    """

    def __init__(self, period_s: float, *, start: float, covers: float = EVENT_CYCLE_COVERS) -> None:
        """Schedule cycles every ``period_s`` seconds, the first at ``start``."""
        self.period_s = period_s
        self.covers_s = covers * period_s
        self.due = start  # the next periodic cycle
        self.last_extra = -math.inf  # when the last extra cycle started

    def next(self, now: float, *, pending: bool) -> Decision:
        """Decide at ``now`` (no cycle running; ``pending``: a switch change waits) what to do."""
        skipped = 0
        while now >= self.due:
            if self.due - self.last_extra <= self.covers_s:
                skipped += 1  # the extra cycle just before was this period's
                self.due += self.period_s
                continue
            following = self.due + self.period_s
            self.due = following if following > now else now + self.period_s  # on the grid; missed ones skipped
            return Decision("period", 0.0, skipped)
        if pending:
            self.last_extra = now
            return Decision("switch", 0.0, skipped)
        return Decision(None, self.due - now, skipped)


@dataclass
class MonitorStats:
    """Counts since the monitor started.

    ``cycles`` counts every cycle run (periodic, extra and direct :meth:`Monitor.run_cycle`
    calls); ``event_cycles`` the extra cycles run for switch changes among them;
    ``skipped_periods`` the periodic cycles left out because an extra one had just run;
    ``switch_changes`` the batches that changed a switch-status point (each asks for a cycle).
    """

    measurements: int = 0
    batches: int = 0
    cycles: int = 0
    overruns: int = 0
    alarm_events: int = 0
    last_cycle_ms: float = 0.0
    event_cycles: int = 0
    skipped_periods: int = 0
    switch_changes: int = 0


@dataclass
class Monitor:
    """Adapters + historian + real-time cycle + alarms, headless (see the module docstring).

    ``on_cycle`` is one subscriber or a sequence of them (see :meth:`subscribe`); ``latest``
    holds the latest value of every point of the point map (assigning a mapping of point name
    -> :class:`~opendso.measurement.Measurement` replaces them all).
    """

    grid: Grid
    point_map: PointMap
    historian: Historian
    adapters: Sequence[TelemetryAdapter]
    settings: CycleSettings = field(default_factory=CycleSettings)
    on_cycle: CycleCallback | Sequence[CycleCallback] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    stats: MonitorStats = field(default_factory=MonitorStats)
    max_write_rows: int = 50_000
    #: held while a cycle runs; whoever acknowledges or shelves alarms from another thread holds it too
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.historian.register_points({p.name: p.unit or None for p in self.point_map.points})
        topo = analyse_topology(self.grid)
        feeder_names = dict(zip(topo.feeders.id.tolist(), topo.feeders.name.tolist(), strict=True))
        self.cycle = RealTimeCycle(
            self.grid,
            self.point_map,
            settings=self.settings,
            feeder_of_node=np.array([feeder_names.get(int(f)) for f in topo.node_feeder], dtype=object),
        )
        # the cycle's own point list: its snapshots are read as arrays, without a lookup by name
        self._latest = LatestValues(self.cycle.binding.names)
        # switch-status points by point index: a change of one of them asks for a cycle at once
        self._is_switch = np.zeros(len(self.cycle.binding), dtype=bool)
        self._is_switch[self.cycle.binding.gather(Target.SWITCH, quantities={SWITCH}).points] = True
        self._wake = asyncio.Event()  # set by a switch change (and by stop); the cycle task waits on it
        self._cycle_loop: asyncio.AbstractEventLoop | None = None  # the cycle task's loop while it runs
        on_cycle = self.on_cycle
        self._subscribers: list[CycleCallback] = (
            [] if on_cycle is None else [on_cycle] if callable(on_cycle) else list(on_cycle)
        )
        self.alarm_store = AlarmStore(self.historian.engine)
        self._restored = False
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- ingest ---------------------------------------------------------------------------------------
    async def _ingest(self, adapter: TelemetryAdapter) -> None:
        async for first in adapter.batches():
            # everything queued while the last write ran goes in one write (one transaction), up
            # to a cap, so ingest keeps up with protocols that deliver many small batches
            batch = list(first)
            while len(batch) < self.max_write_rows:
                more = adapter.drain_up_to(self.max_write_rows - len(batch))
                if not more:
                    break
                batch += more
            self.accept(batch)
            await asyncio.to_thread(self.historian.write, batch)

    @property
    def latest(self) -> LatestValues:
        """The latest measurement of every point (arrays by point index; also a mapping name -> Measurement)."""
        return self._latest

    @latest.setter
    def latest(self, measurements: Mapping[str, Measurement]) -> None:
        fresh = LatestValues.of(self._latest.names, measurements)
        self._latest = fresh

    def accept(self, batch: Sequence[Measurement]) -> None:
        """Update the latest values with a batch (newer source times win).

        When the batch changes a switch-status point's value or quality and cycles are event
        driven, the running monitor is asked for a cycle at once (see the module docstring).
        """
        changed = self._latest.update(batch)
        self.stats.measurements += len(batch)
        self.stats.batches += 1
        if changed.size and self.settings.event_driven and bool(self._is_switch[changed].any()):
            self.stats.switch_changes += 1
            self._ask_for_cycle()

    def _ask_for_cycle(self) -> None:
        """Wake the cycle task for an extra cycle (from any thread); nothing when no cycle task runs."""
        loop = self._cycle_loop
        if loop is None or loop.is_closed():
            return  # the first cycle of run() reads every value anyway
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no cycle to run
                loop.call_soon_threadsafe(self._wake.set)

    # -- subscribers --------------------------------------------------------------------------------
    def subscribe(self, callback: CycleCallback) -> None:
        """Call ``callback`` with every cycle's result from now on, after the subscribers before it."""
        self._subscribers.append(callback)

    @property
    def subscribers(self) -> tuple[CycleCallback, ...]:
        """The cycle's subscribers, in the order they are called."""
        return tuple(self._subscribers)

    def _notify(self, result: CycleResult) -> None:
        """Hand ``result`` to every subscriber; one that raises is logged and does not stop the others."""
        for callback in tuple(self._subscribers):
            try:
                callback(result)
            except Exception:
                log.exception("event=cycle_subscriber_failed subscriber=%s", _name_of(callback))

    # -- the cycle ------------------------------------------------------------------------------------
    def run_cycle(self, now: datetime | None = None) -> CycleResult:
        """Run one cycle on the latest readings and log its alarm transitions; return its result."""
        now = now or self.clock()
        with self.lock:
            result = self.cycle.run(self._latest.snapshot(), now)
        log_alarm_events(self.historian.events, result.alarm_events)
        self.save_alarms()
        self.stats.cycles += 1
        self.stats.alarm_events += len(result.alarm_events)
        self.stats.last_cycle_ms = result.timings_ms.get("cycle", 0.0)
        return result

    # -- alarm state across restarts -------------------------------------------------------------------
    def restore_alarms(self) -> int:
        """Restore the alarm state saved before a restart (once); return how many channels were restored.

        A database that cannot be reached is logged and the monitor starts with a fresh state.
        """
        if self._restored:
            return 0
        try:
            with self.lock:
                restored = self.alarm_store.restore(self.cycle.monitors)
                self.cycle.restore_areas(self.alarm_store.load_areas())
        except UNAVAILABLE_ERRORS as exc:
            log.error("event=alarm_state_not_restored error=%s", type(exc).__name__)
            return 0
        self._restored = True
        return restored

    def save_alarms(self) -> int:
        """Write the alarm channels changed since the last save; return how many rows were written."""
        return self.alarm_store.persist(self.cycle.monitors, self.lock)

    async def _cycles(self) -> None:
        """Run cycles on the period, and extra ones for switch changes (see :class:`CycleSchedule`)."""
        period = self.settings.period_s
        clock = _time.perf_counter
        schedule = CycleSchedule(period, start=clock())
        self._cycle_loop = asyncio.get_running_loop()
        self._wake.clear()
        try:
            while not self._stopping.is_set():
                decision = schedule.next(clock(), pending=self._wake.is_set())
                self.stats.skipped_periods += decision.skipped
                if decision.trigger is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=decision.wait_s)
                    continue
                self._wake.clear()  # changes from here on ask for the next extra cycle
                await self._one_cycle(decision.trigger, period)
        finally:
            self._cycle_loop = None

    async def _one_cycle(self, trigger: CycleTrigger, period: float) -> None:
        """Run one cycle in a worker thread and hand its result to the subscribers."""
        started = _time.perf_counter()
        result = await asyncio.to_thread(self.run_cycle)
        result.trigger = trigger
        if trigger == "switch":
            self.stats.event_cycles += 1
        self._notify(result)
        elapsed = _time.perf_counter() - started
        if elapsed > period:
            self.stats.overruns += 1
            log.warning("event=cycle_overrun elapsed_s=%.3f period_s=%.3f trigger=%s", elapsed, period, trigger)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self, *, duration_s: float | None = None) -> None:
        """Run until :meth:`stop` is called (or for ``duration_s``), then stop everything cleanly."""
        # before anything else: nothing may see (or overwrite) the alarm state before it is back
        self.restore_alarms()
        for adapter in self.adapters:
            await adapter.start()
        self._tasks = [asyncio.create_task(self._ingest(a), name=f"ingest-{a.name}") for a in self.adapters]
        self._tasks.append(asyncio.create_task(self._cycles(), name="cycle"))
        try:
            if duration_s is None:
                await self._stopping.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=duration_s)
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask the monitor to stop (safe from a signal handler in the loop's thread)."""
        self._stopping.set()
        self._wake.set()  # the cycle task waits on it

    async def _shutdown(self) -> None:
        self.stop()
        for adapter in self.adapters:
            await adapter.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # what arrived after the last ingest pass is written too: nothing is lost on a clean stop
        for adapter in self.adapters:
            rest = adapter.drain()
            if rest:
                self.accept(rest)
                await asyncio.to_thread(self.historian.write, rest)
        await asyncio.to_thread(self.historian.flush)
        await asyncio.to_thread(self.save_alarms)
        log.info("event=monitor_stopped measurements=%d cycles=%d", self.stats.measurements, self.stats.cycles)


def _name_of(callback: Callable[..., object]) -> str:
    """A subscriber's name for the log: its qualified name, else its type's."""
    return str(getattr(callback, "__qualname__", None) or type(callback).__qualname__)
