"""Views of the event log: pages of events, shift notes, the alarm journal and its ISA-18.2 figures.

Everything here reads through :class:`~opendso.store.events.EventLog` (``read`` by sequence,
``find`` by kind, time and sequence); nothing touches the events table directly, so the log's
one writer keeps its chain. Alarm events are the kinds ``alarm.<transition>``: the cycle's
transitions and the actions of people (acknowledged, shelved, ...). At most
:data:`MAX_JOURNAL_SCAN` events are read for one journal page or one summary.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from opendso.errors import InputError
from opendso.operations import alarm_performance
from opendso.service.controlroom.views import PRIORITIES, check_choices
from opendso.store.events import Event, EventLog

__all__ = [
    "ALARM_KIND_PREFIX",
    "MAX_JOURNAL_SCAN",
    "SHIFT_NOTE",
    "TRANSITIONS",
    "alarm_journal",
    "alarm_summary",
    "event_dict",
    "events_after",
    "shift_notes",
]

#: The event kind of an operator's note for the shift handover.
SHIFT_NOTE = "shift.note"
#: Every alarm event's kind starts with this.
ALARM_KIND_PREFIX = "alarm."
#: Most events the alarm journal and the performance summary read from the event log per request.
MAX_JOURNAL_SCAN = 200_000
#: The transitions the journal's ``transition`` filter knows.
TRANSITIONS = tuple(
    sorted(
        {
            "raised",
            "escalated",
            "deescalated",
            "cleared",
            "acknowledged",
            "shelved",
            "unshelved",
            "chattering",
            "chattering_ended",
            "out_of_service",
            "returned_to_service",
            "suppressed",
            "unsuppressed",
            "area_suppressed",
            "area_released",
        }
    )
)


def event_dict(event: Event) -> dict[str, Any]:
    """One event as the API gives it."""
    return {
        "seq": event.seq,
        "ts": event.ts.isoformat(),
        "actor": event.actor,
        "kind": event.kind,
        "element": event.element,
        "payload": event.payload,
    }


def events_after(log: EventLog, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    """Events with ``seq > after``, in order, at most ``limit``."""
    return [event_dict(e) for e in log.read(after + 1, limit=limit)]


def shift_notes(log: EventLog, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` shift notes, oldest first."""
    return [event_dict(e) for e in reversed(log.find(kind=SHIFT_NOTE, newest_first=True, limit=limit))]


def _alarm_events(
    log: EventLog, start: datetime, end: datetime, *, before: int | None = None, newest_first: bool = False
) -> list[Event]:
    return log.find(
        kind_prefix=ALARM_KIND_PREFIX,
        start=start,
        end=end,
        before=before,
        newest_first=newest_first,
        limit=MAX_JOURNAL_SCAN,
    )


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InputError(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")


def alarm_journal(
    log: EventLog,
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
    """The alarm history of ``start <= ts < end``, newest first: transitions and actions, filtered.

    ``before`` pages back (events with a smaller sequence number). Unknown priorities or
    transitions and an empty window raise :class:`InputError`.
    """
    _check_window(start, end)
    check_choices("priority", priorities, PRIORITIES)
    check_choices("transition", transitions, TRANSITIONS)
    out: list[dict[str, Any]] = []
    for event in _alarm_events(log, start, end, before=before, newest_first=True):
        payload = event.payload
        transition = payload.get("transition") or event.kind.removeprefix(ALARM_KIND_PREFIX)
        group = payload.get("group", payload.get("area"))
        if priorities and payload.get("priority") not in priorities:
            continue
        if areas and group not in areas:
            continue
        if transitions and transition not in transitions:
            continue
        if key is not None and event.element != key:
            continue
        out.append(
            {
                "seq": event.seq,
                "ts": event.ts.isoformat(),
                "actor": event.actor,
                "kind": event.kind,
                "transition": transition,
                "key": event.element,
                "condition": payload.get("condition"),
                "priority": payload.get("priority"),
                "severity": payload.get("severity"),
                "value": payload.get("value"),
                "group": group,
                "cause": payload.get("cause"),
                "reason": payload.get("reason"),
                "shelved": bool(payload.get("shelved", False)),
                "suppressed": bool(payload.get("suppressed", False)),
                "out_of_service": bool(payload.get("out_of_service", False)),
                "announced": alarm_performance.journal_entry(event.ts, payload).announced,
            }
        )
        if len(out) >= limit:
            break
    return out


def alarm_summary(
    log: EventLog,
    *,
    start: datetime,
    end: datetime,
    standing_since: Mapping[str, datetime],
    counts: Mapping[str, int],
    positions: int = 1,
) -> dict[str, Any]:
    """The ISA-18.2 performance figures of the window (see :mod:`opendso.operations.alarm_performance`).

    ``standing_since`` gives the active alarms' start times (for stale alarms), ``counts`` the
    present alarm counts, added as ``counts``.
    """
    _check_window(start, end)
    entries = [alarm_performance.journal_entry(e.ts, e.payload) for e in _alarm_events(log, start, end)]
    summary = alarm_performance.performance(
        entries, start=start, end=end, standing_since=dict(standing_since), positions=positions
    )
    summary["counts"] = dict(counts)
    return summary
