"""What people do in the control room: alarm actions, designed suppression, shift notes, trainer moves.

:class:`Actions` changes the alarm monitors of the real-time cycle under the cycle's lock (an
acknowledgement never races a cycle updating the alarms), then records each action twice: its
alarm transitions in the event log (``alarm.<transition>``; a re-announcement the action causes
is the alarm system's, not the person's) and one record in the audit trail (``alarm.acknowledge``,
``alarm.shelve``, ...). The changed alarm state is saved (:class:`AlarmStore`) and ``on_change``
is told the transitions, so every screen gets them and the new counts.

Operators acknowledge, shelve and unshelve; engineers take alarms out of service and suppress
areas by design (the permission is the route's, :mod:`opendso.service.routes`). An action that does
not fit the alarm's state is a :class:`ConflictError` (409), an unknown key a
:class:`NotFoundError` (404); free text passes :func:`~opendso.text.check_text`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opendso.errors import AlarmStateError, ConflictError, InputError, NotFoundError
from opendso.operations.alarm_store import AlarmStore
from opendso.operations.alarms import AlarmEvent, AlarmMonitor
from opendso.operations.cycle import RealTimeCycle
from opendso.operations.monitor import alarm_event_payload, log_alarm_events
from opendso.service.audit import AuditTrail
from opendso.service.controlroom.journal import SHIFT_NOTE, event_dict
from opendso.store.events import EventLog
from opendso.text import check_text

__all__ = ["MAX_NOTE", "MAX_REASON", "Actions"]

#: Longest free-text reason (shelving, out of service, suppression).
MAX_REASON = 1000
#: Longest shift note.
MAX_NOTE = 10_000


def _guard[T](action: Callable[[], T]) -> T:
    """Run an alarm action; an action that does not fit the alarm's state is a conflict (409)."""
    try:
        return action()
    except AlarmStateError as exc:
        raise ConflictError(str(exc)) from None


class Actions:
    """The actions of people on the control room's alarms and logs (see the module docstring).

    ``cycle`` holds the alarm monitors (None: no alarms, area actions are 409); ``lock`` is the
    cycle's; ``alarm_time`` the clock the alarms run on; ``on_change`` is called with the
    transitions of every action, after the state is saved.
    """

    def __init__(
        self,
        *,
        cycle: RealTimeCycle | None,
        lock: threading.RLock,
        alarm_time: Callable[[], datetime],
        events: EventLog,
        audit: AuditTrail,
        alarm_store: AlarmStore,
        on_change: Callable[[list[AlarmEvent]], None],
    ) -> None:
        self.cycle = cycle
        self.lock = lock
        self.alarm_time = alarm_time
        self.events = events
        self.audit = audit
        self.alarm_store = alarm_store
        self.on_change = on_change

    @property
    def monitors(self) -> Sequence[AlarmMonitor]:
        """The alarm monitors (none without a cycle)."""
        return self.cycle.monitors if self.cycle is not None else ()

    def monitor_and_channel(self, key: str) -> tuple[AlarmMonitor, str]:
        """The monitor and channel of an alarm key ``<monitor>:<channel>`` (404 when there is none)."""
        name, sep, channel = key.partition(":")
        for monitor in self.monitors:
            if monitor.name == name and sep:
                if not monitor.has_channel(channel):
                    break
                return monitor, channel
        raise NotFoundError(f"no alarm with key {key!r} (keys are '<monitor>:<channel>')")

    def _require_cycle(self) -> RealTimeCycle:
        if self.cycle is None:
            raise ConflictError("the control room has no real-time cycle")
        return self.cycle

    # -- alarms -----------------------------------------------------------------------------------------------
    def acknowledge(self, key: str, *, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Acknowledge an alarm in the list (409 when it is not in the list)."""
        monitor, channel = self.monitor_and_channel(key)
        with self.lock:
            if not monitor.in_list(channel):
                raise ConflictError(f"alarm {key!r} is not in the alarm list")
            event = monitor.acknowledge(self.alarm_time(), channel, actor=actor)
        self._record([event], actor, source_ip, "alarm.acknowledge")
        return event

    def acknowledge_many(
        self, keys: list[str], *, actor: str, source_ip: str | None = None
    ) -> tuple[list[AlarmEvent], list[str]]:
        """Acknowledge the alarms ``keys`` (those the operator sees); return the events and the keys skipped.

        Every key must name an alarm (else nothing is acknowledged, 404); alarms that are not in
        the list or acknowledged already (by someone else meanwhile) are skipped, not refused.
        """
        if len(set(keys)) != len(keys):
            raise InputError("acknowledge: the same alarm is named twice")
        targets = [(key, *self.monitor_and_channel(key)) for key in keys]
        events: list[AlarmEvent] = []
        skipped: list[str] = []
        with self.lock:
            now = self.alarm_time()
            for key, monitor, channel in targets:
                if not monitor.needs_acknowledgement(channel):
                    skipped.append(key)
                    continue
                events.append(monitor.acknowledge(now, channel, actor=actor))
        for event in events:
            self._record([event], actor, source_ip, "alarm.acknowledge", broadcast=False)
        self._after_change(events)
        return events, skipped

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
        """Shelve an alarm that is active or unacknowledged, until a time or for a duration, with a reason.

        The shelf lasts at most the cycle's ``shelve_max_s`` (8 h by default, 400 beyond); a normal
        or out-of-service alarm is not shelved (409).
        """
        monitor, channel = self.monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON)
        if (until is None) == (duration_s is None):
            raise InputError("shelve: give either 'until' or 'duration_s'")
        if until is not None and until.tzinfo is None:
            raise InputError("shelve: 'until' needs a timezone (e.g. 2026-11-23T12:00:00Z)")
        with self.lock:
            now = self.alarm_time()
            end = until.astimezone(UTC) if until is not None else now + timedelta(seconds=float(duration_s or 0))
            event = _guard(lambda: monitor.shelve(now, channel, until=end, reason=text, actor=actor))
        self._record([event], actor, source_ip, "alarm.shelve", reason=text, details={"until": end.isoformat()})
        return event

    def unshelve(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Take an alarm off the shelf (409 when it is not shelved); it is announced again if still active."""
        monitor, channel = self.monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON) if reason else None
        with self.lock:
            events = _guard(lambda: monitor.unshelve(self.alarm_time(), channel, actor=actor, reason=text))
        self._record(events, actor, source_ip, "alarm.unshelve", reason=text)
        return events

    def remove_from_service(self, key: str, *, reason: str, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Take an alarm out of service for maintenance, with a reason (409 when it is already)."""
        monitor, channel = self.monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON)
        with self.lock:
            event = _guard(lambda: monitor.remove_from_service(self.alarm_time(), channel, reason=text, actor=actor))
        self._record([event], actor, source_ip, "alarm.out_of_service", reason=text)
        return event

    def return_to_service(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Return an alarm to service (409 when it is not out of service); announced again if active."""
        monitor, channel = self.monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON) if reason else None
        with self.lock:
            events = _guard(lambda: monitor.return_to_service(self.alarm_time(), channel, actor=actor, reason=text))
        self._record(events, actor, source_ip, "alarm.return_to_service", reason=text)
        return events

    # -- designed suppression of areas (the hook a work permit uses) ----------------------------------------
    def alarm_areas(self) -> list[dict[str, Any]]:
        """Every alarm area (group) with its designed suppression, if any."""
        cycle = self._require_cycle()
        with self.lock:
            areas, suppressed = cycle.areas(), cycle.suppressed_areas
        return [
            {"area": a, "suppressed": a in suppressed, **({} if a not in suppressed else suppressed[a].to_dict())}
            for a in areas
        ]

    def suppress_area(self, area: str, *, reason: str, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Suppress by design every alarm of an area, with a reason; return the suppression (409: already)."""
        cycle = self._require_cycle()
        text = check_text("reason", reason, max_len=MAX_REASON)
        if area not in cycle.areas():
            raise NotFoundError(f"no alarm area {area!r} (GET /api/alarms/areas lists them)")
        with self.lock:
            now = self.alarm_time()
            events = _guard(lambda: cycle.suppress_area(area, reason=text, actor=actor, time=now))
            suppression = cycle.suppressed_areas[area]
        self.alarm_store.save_area(suppression)
        self.events.append(
            "alarm.area_suppressed", actor=actor, element=f"area:{area}", payload={"area": area, "reason": text}, ts=now
        )
        self.audit.append("alarm.suppress", actor=actor, element=f"area:{area}", source_ip=source_ip, reason=text)
        log_alarm_events(self.events, events)
        self._after_change(events)
        return suppression.to_dict()

    def release_area(self, area: str, *, actor: str, source_ip: str | None = None) -> list[AlarmEvent]:
        """Lift an area's designed suppression (409 when it is not suppressed)."""
        cycle = self._require_cycle()
        if area not in cycle.areas():
            raise NotFoundError(f"no alarm area {area!r} (GET /api/alarms/areas lists them)")
        with self.lock:
            now = self.alarm_time()
            events = _guard(lambda: cycle.release_area(area, time=now))
        self.alarm_store.delete_area(area)
        self.events.append("alarm.area_released", actor=actor, element=f"area:{area}", payload={"area": area}, ts=now)
        self.audit.append("alarm.release", actor=actor, element=f"area:{area}", source_ip=source_ip)
        log_alarm_events(self.events, events)
        self._after_change(events)
        return events

    # -- notes and the trainer ------------------------------------------------------------------------------
    def add_shift_note(self, text: str, *, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Append an operator note for the shift handover (an event of kind ``shift.note``); return it."""
        body = check_text("a shift note", text, max_len=MAX_NOTE)
        event = self.events.append(SHIFT_NOTE, actor=actor, payload={"text": body})
        self.audit.append(SHIFT_NOTE, actor=actor, element=f"event:{event.seq}", source_ip=source_ip)
        return event_dict(event)

    def record_trainer_action(self, action: str, *, actor: str, source_ip: str | None, details: dict[str, Any]) -> None:
        """One audit record and one event (both ``trainer.<action>``) for a move of the simulated clock."""
        kind = f"trainer.{action}"
        self.audit.append(kind, actor=actor, element="simulator", source_ip=source_ip, details=details)
        self.events.append(kind, actor=actor, payload=details)

    # -- recording ------------------------------------------------------------------------------------------
    def _record(
        self,
        events: list[AlarmEvent],
        actor: str,
        source_ip: str | None,
        action: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        broadcast: bool = True,
    ) -> None:
        """Log a person's action: its events (a re-announcement it causes is the alarm system's), audit, save."""
        first, *rest = events
        self.events.append(
            f"alarm.{first.transition.value}",
            actor=actor,
            element=first.key,
            payload=alarm_event_payload(first),
            ts=first.time,
        )
        log_alarm_events(self.events, rest)
        self.audit.append(
            action, actor=actor, element=first.key, source_ip=source_ip, reason=reason, details=details or {}
        )
        if broadcast:
            self._after_change(events)

    def _after_change(self, events: list[AlarmEvent]) -> None:
        """Save the changed alarm state, then tell ``on_change`` (screens get the transitions and counts)."""
        self.alarm_store.persist(self.monitors, self.lock)
        self.on_change(events)
