"""The headless monitor: telemetry adapters -> historian -> real-time cycle -> alarms -> event log.

:class:`Monitor` runs in one asyncio loop. Every batch an adapter hands out is written to the
historian (in a worker thread, so a slow database never stalls the protocols; the historian's
store-and-forward buffer keeps it while the database is away) and updates the table of latest
readings. Every ``period_s`` the real-time cycle runs on those readings (also in a worker
thread), every alarm transition is appended to the event log, and the cycle's summary goes to
the ``on_cycle`` callback (the command line prints it; the service publishes it). The cycle's
own duration and observability are part of every summary, and a cycle that overruns its period
is logged.

The alarm state outlives a restart (:mod:`opendso.operations.alarm_store`): :meth:`Monitor.run`
restores it before the first cycle, and every cycle that changed it writes the changed
channels, in the cycle's worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time as _time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import Measurement
from opendso.operations.alarm_store import AlarmStore
from opendso.operations.alarms import AlarmEvent
from opendso.operations.cycle import CycleResult, CycleSettings, Reading, RealTimeCycle
from opendso.store.engine import UNAVAILABLE_ERRORS
from opendso.store.events import EventLog
from opendso.store.historian import Historian
from opendso.telemetry.base import TelemetryAdapter
from opendso.telemetry.points import PointMap

log = logging.getLogger(__name__)

CycleCallback = Callable[[CycleResult], None]


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


@dataclass
class MonitorStats:
    """Counts since the monitor started."""

    measurements: int = 0
    batches: int = 0
    cycles: int = 0
    overruns: int = 0
    alarm_events: int = 0
    last_cycle_ms: float = 0.0


@dataclass
class Monitor:
    """Adapters + historian + real-time cycle + alarms, headless (see the module docstring)."""

    grid: Grid
    point_map: PointMap
    historian: Historian
    adapters: Sequence[TelemetryAdapter]
    settings: CycleSettings = field(default_factory=CycleSettings)
    on_cycle: CycleCallback | None = None
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
            {p.name: (p.element, p.quantity) for p in self.point_map.points},
            settings=self.settings,
            feeder_of_node=np.array([feeder_names.get(int(f)) for f in topo.node_feeder], dtype=object),
        )
        self.latest: dict[str, Reading] = {}
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

    def accept(self, batch: Sequence[Measurement]) -> None:
        """Update the latest readings with a batch (newer source times win)."""
        for m in batch:
            old = self.latest.get(m.point)
            if old is None or m.time >= old.time:
                self.latest[m.point] = Reading(float(m.value), int(m.quality), m.time)
        self.stats.measurements += len(batch)
        self.stats.batches += 1

    # -- the cycle ------------------------------------------------------------------------------------
    def run_cycle(self, now: datetime | None = None) -> CycleResult:
        """Run one cycle on the latest readings and log its alarm transitions; return its result."""
        now = now or self.clock()
        with self.lock:
            result = self.cycle.run(dict(self.latest), now)
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
        period = self.settings.period_s
        while not self._stopping.is_set():
            started = _time.perf_counter()
            result = await asyncio.to_thread(self.run_cycle)
            if self.on_cycle is not None:
                self.on_cycle(result)
            elapsed = _time.perf_counter() - started
            if elapsed > period:
                self.stats.overruns += 1
                log.warning("event=cycle_overrun elapsed_s=%.3f period_s=%.3f", elapsed, period)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(period - elapsed, 0.0))

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

    async def _shutdown(self) -> None:
        self._stopping.set()
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
