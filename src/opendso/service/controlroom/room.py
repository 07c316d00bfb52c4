"""The control room's runtime: the facade the web service and ``opendso run`` talk to.

:class:`ControlRoom` holds the grid, the real-time cycle's alarm monitors (from a
:class:`Monitor`, or a bare :class:`RealTimeCycle` in tests), the historian and its event log,
the audit trail and, optionally, the field simulator whose clock the status bar shows. It
composes the parts of this package and keeps their public methods in one place:

- views (:mod:`.views`): the grid drawing, elements, the state, the alarm list, trends;
- the WebSocket fan-out (:mod:`.fanout`): every cycle result goes to :meth:`ControlRoom.publish`
  (the monitor's ``on_cycle`` subscriber), which keeps it as the latest state and pushes a
  ``state``, ``alarm`` and ``status`` message to every subscriber;
- operator and engineer actions (:mod:`.actions`): acknowledge, shelve, unshelve, alarms out of
  service, areas suppressed by design, shift notes, trainer moves; each is appended to the event
  log and the audit trail, and the alarm state is saved (:mod:`opendso.operations.alarm_store`);
- the event log's views (:mod:`.journal`): events, shift notes, the alarm journal and its figures.

Alarm messages carry the alarm's list entry after the transition (``alarm``, None when it left
the list) and the alarm-list version ``v``; ``GET /api/alarms`` gives the version of its list
(``X-Alarm-Version``), so a screen that reloads the list after a reconnect applies only the
messages newer than its list and ends up with exactly the server's list. The counts every
display shows come from one function (:func:`~opendso.operations.alarms.count_alarms`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from opendso.errors import ConflictError
from opendso.grid.model import Grid
from opendso.measurement import LatestValues, Measurement
from opendso.operations.alarm_store import AlarmStore
from opendso.operations.alarms import AlarmEvent, AlarmMonitor, count_alarms
from opendso.operations.cycle import CycleResult, RealTimeCycle
from opendso.operations.monitor import Monitor, log_alarm_events
from opendso.service.audit import AuditTrail
from opendso.service.controlroom import journal
from opendso.service.controlroom.actions import Actions
from opendso.service.controlroom.fanout import Fanout, Outbox
from opendso.service.controlroom.views import AlarmList, GridView, StateView, measurement_rows
from opendso.store.historian import Historian

__all__ = ["ControlRoom"]


class ControlRoom:
    """The runtime behind the web service (see the module docstring)."""

    def __init__(
        self,
        grid: Grid,
        historian: Historian,
        *,
        monitor: Monitor | None = None,
        cycle: RealTimeCycle | None = None,
        points: Mapping[str, tuple[str, str]] | None = None,
        simulator: Any | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Serve ``grid`` from ``historian``; alarms come from ``monitor.cycle`` or ``cycle``.

        ``points`` (point name -> (element, quantity)) lists the measurement points (taken from
        the monitor's point map when a monitor is given). ``simulator`` (a FieldSimulator) gives
        the simulated clock. ``clock`` is the wall clock (UTC).
        """
        if monitor is not None:
            cycle = monitor.cycle
            points = {p.name: (p.element, p.quantity) for p in monitor.point_map.points}
        self.grid = grid
        self.historian = historian
        self.monitor = monitor
        self.cycle = cycle
        self.points: dict[str, tuple[str, str]] = dict(points or {})
        self.simulator = simulator
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.audit = AuditTrail(historian.engine)
        self._readings: dict[str, Measurement] = {}
        # one lock with the monitor's cycle: acknowledging never races a cycle updating the alarms
        self._lock: threading.RLock = monitor.lock if monitor is not None else threading.RLock()
        # the monitor restores the alarm state when it starts; a bare cycle's state is restored here
        self.alarm_store = monitor.alarm_store if monitor is not None else AlarmStore(historian.engine)
        if monitor is None and cycle is not None:
            with self._lock:
                self.alarm_store.restore(cycle.monitors)
                cycle.restore_areas(self.alarm_store.load_areas())
        self._fanout = Fanout()
        self._grid_view = GridView(grid, self.points, self._unit_of if monitor is not None else None)
        self._state = StateView(self._grid_now, self._lock)
        self._alarm_list = AlarmList(lambda: self.monitors, self._lock)
        self._actions = Actions(
            cycle=cycle,
            lock=self._lock,
            alarm_time=self.alarm_time,
            events=historian.events,
            audit=self.audit,
            alarm_store=self.alarm_store,
            on_change=self._alarms_acted_on,
        )

    # -- parts --------------------------------------------------------------------------------------------
    @property
    def monitors(self) -> tuple[AlarmMonitor, ...]:
        """The alarm monitors of the real-time cycle (none without a cycle)."""
        return self.cycle.monitors if self.cycle is not None else ()

    @property
    def latest(self) -> CycleResult | None:
        """The latest cycle result published (None before the first)."""
        return self._state.latest

    def alarm_time(self) -> datetime:
        """The alarms' clock: the monitor's (the time its cycles run on), else the control room's."""
        return self.monitor.clock() if self.monitor is not None else self.clock()

    def _grid_now(self) -> Grid:
        """The grid with the present switch states (the cycle's, which follows the field)."""
        return self.cycle.grid if self.cycle is not None else self.grid

    def _unit_of(self, point: str) -> str | None:
        assert self.monitor is not None
        unit: str | None = self.monitor.point_map.point(point).unit
        return unit

    # -- the cycle ----------------------------------------------------------------------------------------
    def run_cycle(self, readings: Mapping[str, Measurement], now: datetime | None = None) -> CycleResult:
        """Run one cycle of the bare :class:`RealTimeCycle` on ``readings``, log its alarms and publish it."""
        if self.cycle is None:
            raise ConflictError("the control room has no real-time cycle")
        now = now or self.clock()
        self._readings = dict(readings)
        with self._lock:
            result = self.cycle.run(self._readings, now)
        log_alarm_events(self.historian.events, result.alarm_events)
        self.alarm_store.persist(self.cycle.monitors, self._lock)
        self.publish(result)
        return result

    def publish(self, result: CycleResult) -> None:
        """Keep a cycle result as the latest state and push it to every subscriber (thread-safe)."""
        self._alarm_list.changed()
        self._state.update(result)
        # one serialisation per cycle, shared by /api/state and every WebSocket client;
        # published_at (epoch seconds) lets a client measure state-change-to-screen latency
        published = time.time()
        body, _ = self.state_json()
        self._fanout.send_text("state", f'{{"type":"state","published_at":{published:.6f},'.encode() + body[1:])
        self._send_alarms(result.alarm_events)
        self._fanout.send({"type": "status", **self.status()})

    def _send_alarms(self, events: list[AlarmEvent]) -> None:
        """Push alarm transitions, each with its alarm's list entry after the change and the list version."""
        if not events or not len(self._fanout):
            return
        version, listed = self.alarm_list()
        entries = {a["key"]: a for a in listed}
        for event in events:
            self._fanout.send(
                {"type": "alarm", "event": event.to_dict(), "alarm": entries.get(event.key), "v": version}
            )

    def _alarms_acted_on(self, events: list[AlarmEvent]) -> None:
        """After a person's action: a new alarm-list version, the transitions and the new counts to every screen."""
        self._alarm_list.changed()
        self._send_alarms(events)
        self._fanout.send({"type": "status", **self.status()})

    # -- subscribers --------------------------------------------------------------------------------------
    def subscribe(self) -> Outbox:
        """Return an outbox that receives every message from now on (call from the subscriber's event loop)."""
        return self._fanout.subscribe()

    def unsubscribe(self, queue: Outbox) -> None:
        """Stop sending to a queue."""
        self._fanout.unsubscribe(queue)

    @property
    def subscriber_count(self) -> int:
        """How many WebSocket clients listen."""
        return len(self._fanout)

    # -- views --------------------------------------------------------------------------------------------
    def grid_view(self) -> dict[str, Any]:
        """The grid for drawing: nodes with coordinates, branches and switches (see the API contract)."""
        return self._grid_view.drawing(self._grid_now())

    def element(self, element_id: int) -> dict[str, Any]:
        """Return one element: component, name, kind, its fields and the points measuring it."""
        return self._grid_view.element(element_id, self._grid_now())

    def state_json(self) -> tuple[bytes, str]:
        """The latest state as JSON bytes and its entity tag, serialised once per cycle for every reader."""
        return self._state.state_json()

    def state(self) -> dict[str, Any]:
        """The latest estimated state (see the API contract); empty maps before the first cycle."""
        return self._state.state()

    def status(self) -> dict[str, Any]:
        """Cycle time, observability, telemetry health, alarm counts and the clocks."""
        result = self.latest
        held, good = self._telemetry_counts()
        now, simulator = self.clock(), self.simulator
        # one time base for every screen: the simulated time of this instant, and the anchors that map any other
        simulated = None if simulator is None else simulator.simulated_time_at(now) or simulator.simulated_clock()
        return {
            "time": now.isoformat(),
            "simulated_time": simulated.isoformat() if simulated is not None else None,
            "time_base": None
            if simulator is None
            else {"speed": simulator.speed, "paused": simulator.paused, "anchors": simulator.time_base.to_dict()},
            "cycle_ms": round(result.timings_ms.get("cycle", 0.0), 3) if result is not None else None,
            "observable": bool(result.observable) if result is not None else False,
            "telemetry": {"points": len(self.points), "good": good, "bad": held - good},
            "alarms": self.alarm_counts(),
        }

    def _telemetry_counts(self) -> tuple[int, int]:
        """(measurements held, of which with good quality) of the latest values."""
        latest = self.monitor.latest if self.monitor is not None else self._readings
        if isinstance(latest, LatestValues):
            return latest.counts()
        return len(latest), sum(1 for m in list(latest.values()) if m.quality == 0)

    def alarm_counts(self) -> dict[str, int]:
        """The alarm counts (standing, unacknowledged, shelved, out of service, suppressed): one definition."""
        with self._lock:
            return count_alarms(self.monitors).to_dict()

    def alarms(self) -> list[dict[str, Any]]:
        """The alarm list: standing, shelved, out-of-service and suppressed alarms, most urgent first."""
        return self.alarm_list()[1]

    def alarm_list(self) -> tuple[int, list[dict[str, Any]]]:
        """The alarm list with its version (it grows with every change of any alarm)."""
        return self._alarm_list.snapshot()

    def select_alarms(
        self,
        *,
        priorities: Collection[str] = (),
        areas: Collection[str] = (),
        states: Collection[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The alarm list filtered by priority, area (group), state and time raised (``start <= since < end``)."""
        return self._alarm_list.select(priorities=priorities, areas=areas, states=states, start=start, end=end)

    def measurements(
        self, point: str, start: datetime, end: datetime, interval: timedelta | None = None
    ) -> list[dict[str, Any]]:
        """Measurements of a point (``[{ts, value, quality}]``) or, with ``interval``, aggregates."""
        return measurement_rows(self.historian, point, start, end, interval)

    # -- the event log ------------------------------------------------------------------------------------
    def events(self, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """Events of the event log with ``seq > after``, in order."""
        return journal.events_after(self.historian.events, after, limit)

    def shift_notes(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest shift notes, oldest first."""
        return journal.shift_notes(self.historian.events, limit)

    def alarm_journal(
        self,
        *,
        start: datetime,
        end: datetime,
        priorities: Collection[str] = (),
        areas: Collection[str] = (),
        transitions: Collection[str] = (),
        key: str | None = None,
        before: int | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """The alarm history from the event log, newest first: transitions and actions, filtered.

        ``before`` pages back (events with a smaller sequence number).
        """
        return journal.alarm_journal(
            self.historian.events,
            start=start,
            end=end,
            priorities=priorities,
            areas=areas,
            transitions=transitions,
            key=key,
            before=before,
            limit=limit,
        )

    def alarm_summary(self, *, start: datetime, end: datetime, positions: int = 1) -> dict[str, Any]:
        """The ISA-18.2 performance figures of the window (see :mod:`opendso.operations.alarm_performance`)."""
        with self._lock:
            standing = [a for m in self.monitors for a in m.active()]
            counts = count_alarms(self.monitors).to_dict()
        since = {a.key: a.since for a in standing if a.severity != 0}
        return journal.alarm_summary(
            self.historian.events, start=start, end=end, standing_since=since, counts=counts, positions=positions
        )

    # -- actions ------------------------------------------------------------------------------------------
    def acknowledge(self, key: str, *, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Acknowledge an alarm in the list; log it in the event log and the audit trail."""
        return self._actions.acknowledge(key, actor=actor, source_ip=source_ip)

    def acknowledge_many(
        self, keys: list[str], *, actor: str, source_ip: str | None = None
    ) -> tuple[list[AlarmEvent], list[str]]:
        """Acknowledge the alarms ``keys`` (those the operator sees); return the events and the keys skipped.

        Every key must name an alarm (else nothing is acknowledged, 404); alarms that are not in
        the list or acknowledged already (by someone else meanwhile) are skipped, not refused.
        """
        return self._actions.acknowledge_many(keys, actor=actor, source_ip=source_ip)

    def shelve(
        self,
        key: str,
        *,
        until: datetime | None = None,
        duration_s: float | None = None,
        reason: str,
        actor: str,
        source_ip: str | None = None,
    ) -> AlarmEvent:
        """Shelve an alarm until a time or for a duration, with a reason (see :meth:`Actions.shelve`)."""
        return self._actions.shelve(
            key, until=until, duration_s=duration_s, reason=reason, actor=actor, source_ip=source_ip
        )

    def unshelve(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Take an alarm off the shelf (409 when it is not shelved); it is announced again if still active."""
        return self._actions.unshelve(key, actor=actor, reason=reason, source_ip=source_ip)

    def remove_from_service(self, key: str, *, reason: str, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Take an alarm out of service for maintenance, with a reason (engineer role; 409 when it is already)."""
        return self._actions.remove_from_service(key, reason=reason, actor=actor, source_ip=source_ip)

    def return_to_service(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Return an alarm to service (409 when it is not out of service); announced again if active."""
        return self._actions.return_to_service(key, actor=actor, reason=reason, source_ip=source_ip)

    def alarm_areas(self) -> list[dict[str, Any]]:
        """Every alarm area (group) with its designed suppression, if any."""
        return self._actions.alarm_areas()

    def suppress_area(self, area: str, *, reason: str, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Suppress by design every alarm of an area, with a reason (engineer role); return the suppression."""
        return self._actions.suppress_area(area, reason=reason, actor=actor, source_ip=source_ip)

    def release_area(self, area: str, *, actor: str, source_ip: str | None = None) -> list[AlarmEvent]:
        """Lift an area's designed suppression (engineer role; 409 when it is not suppressed)."""
        return self._actions.release_area(area, actor=actor, source_ip=source_ip)

    def add_shift_note(self, text: str, *, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Append an operator note for the shift handover (an event of kind ``shift.note``); return it."""
        return self._actions.add_shift_note(text, actor=actor, source_ip=source_ip)

    def record_trainer_action(self, action: str, *, actor: str, source_ip: str | None, details: dict[str, Any]) -> None:
        """Record a move of the simulated clock in the audit trail and the event log (``trainer.<action>``)."""
        self._actions.record_trainer_action(action, actor=actor, source_ip=source_ip, details=details)
