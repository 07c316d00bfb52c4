"""Alarms (ISA-18.2): the list and its actions, areas suppressed by design, the journal and its figures.

=================================================  ==========  ========================================
route                                              permission  what it does
=================================================  ==========  ========================================
``GET /api/alarms``                                view        the list, most urgent first; filters
                                                               ``priority``, ``area``, ``state``,
                                                               ``from``/``to``; ``X-Alarm-Version``
``POST /api/alarms/acknowledge``                   control     acknowledge the alarms named
``GET /api/alarms/areas``                          view        the areas and their designed suppression
``POST /api/alarms/areas/{area}/suppress``         configure   suppress an area by design, with a reason
``POST /api/alarms/areas/{area}/release``          configure   lift an area's suppression
``GET /api/alarms/history``                        view        the alarm journal, newest first
``GET /api/alarms/summary``                        view        the ISA-18.2 performance figures
``POST /api/alarms/{key}/acknowledge``             control     acknowledge one alarm
``POST /api/alarms/{key}/shelve``                  control     shelve until a time or for a duration
``POST /api/alarms/{key}/unshelve``                control     take it off the shelf
``POST /api/alarms/{key}/out-of-service``          configure   out of service for maintenance
``POST /api/alarms/{key}/return-to-service``       configure   back in service
=================================================  ==========  ========================================

Control is the operators' permission, configure the engineers'. An action that does not fit the
alarm's state is 409, an unknown key or area 404, bad input 400/422. The journal and the figures
cover a window of at most :data:`HISTORY_WINDOW` (default: the last 24 hours of the alarms' clock).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from opendso.errors import InputError
from opendso.operations.alarms import AlarmEvent
from opendso.service import schemas
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.deps import (
    MAX_PAGE,
    ConfigureSession,
    ControlSession,
    RoomDep,
    ViewSession,
    client_ip,
    query_time,
)

__all__ = ["HISTORY_WINDOW", "router"]

router = APIRouter(tags=["alarms"])

#: The longest window of the alarm journal and the performance figures.
HISTORY_WINDOW = timedelta(days=366)


def _window(start: str | None, end: str | None, room: ControlRoom, default: timedelta) -> tuple[datetime, datetime]:
    t1 = query_time(end, "to") if end else room.alarm_time()
    t0 = query_time(start, "from") if start else t1 - default
    if t1 <= t0:
        raise InputError(f"'to' ({t1.isoformat()}) must be after 'from' ({t0.isoformat()})")
    if t1 - t0 > HISTORY_WINDOW:
        raise InputError(f"the window from 'from' to 'to' is at most {HISTORY_WINDOW.days} days")
    return t0, t1


def _event_public(event: AlarmEvent) -> schemas.AlarmEventPublic:
    return schemas.AlarmEventPublic.model_validate(event.to_dict())


@router.get("/api/alarms")
def alarms(
    _: ViewSession,
    room: RoomDep,
    response: Response,
    priority: Annotated[list[str] | None, Query(max_length=4)] = None,
    area: Annotated[list[str] | None, Query(max_length=1000)] = None,
    state: Annotated[list[str] | None, Query(max_length=6)] = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
) -> list[schemas.AlarmPublic]:
    """The alarm list, most urgent first: standing, shelved, out-of-service and suppressed alarms.

    Filters (each may repeat): ``priority``, ``area`` (the alarm group, e.g. a feeder),
    ``state`` (``unacknowledged``, ``acknowledged``, ``returned_unacknowledged``, ``shelved``,
    ``suppressed``, ``out_of_service``), and ``from``/``to`` on the time raised. The list's
    version is in ``X-Alarm-Version``: stream messages with a larger ``v`` are newer.
    """
    version, listed = room.select_alarms(
        priorities=priority or (),
        areas=area or (),
        states=state or (),
        start=query_time(start, "from") if start else None,
        end=query_time(end, "to") if end else None,
    )
    response.headers["X-Alarm-Version"] = str(version)
    response.headers["Cache-Control"] = "no-cache"
    return [schemas.AlarmPublic.model_validate(a) for a in listed]


@router.post("/api/alarms/acknowledge")
def acknowledge_many(
    body: schemas.AcknowledgeMany, session: ControlSession, request: Request, room: RoomDep
) -> schemas.AcknowledgedPublic:
    """Acknowledge the alarms named (those on the operator's screen; operator role).

    404 (nothing acknowledged) when a key names no alarm; alarms already acknowledged are skipped.
    """
    events, skipped = room.acknowledge_many(body.keys, actor=session.user.username, source_ip=client_ip(request))
    return schemas.AcknowledgedPublic(acknowledged=[_event_public(e) for e in events], skipped=skipped)


@router.get("/api/alarms/areas")
def areas(_: ViewSession, room: RoomDep) -> list[schemas.AlarmAreaPublic]:
    """The alarm areas (groups, e.g. feeders) and which are suppressed by design, by whom and why."""
    return [schemas.AlarmAreaPublic.model_validate(a) for a in room.alarm_areas()]


@router.post("/api/alarms/areas/{area:path}/suppress")
def suppress_area(
    area: str,
    body: schemas.ReasonCreate,
    session: ConfigureSession,
    request: Request,
    room: RoomDep,
) -> schemas.AlarmAreaPublic:
    """Suppress by design every alarm of an area, with a reason (engineer role): the hook a work permit uses.

    404 for an unknown area, 409 when it is suppressed already.
    """
    done = room.suppress_area(area, reason=body.reason, actor=session.user.username, source_ip=client_ip(request))
    return schemas.AlarmAreaPublic(suppressed=True, **done)


@router.post("/api/alarms/areas/{area:path}/release")
def release_area(
    area: str,
    session: ConfigureSession,
    request: Request,
    room: RoomDep,
) -> schemas.AlarmAreaPublic:
    """Lift an area's designed suppression (engineer role); alarms still active are announced again.

    404 for an unknown area, 409 when it is not suppressed.
    """
    room.release_area(area, actor=session.user.username, source_ip=client_ip(request))
    return schemas.AlarmAreaPublic(area=area, suppressed=False)


@router.get("/api/alarms/history")
def history(
    _: ViewSession,
    room: RoomDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    priority: Annotated[list[str] | None, Query(max_length=4)] = None,
    area: Annotated[list[str] | None, Query(max_length=1000)] = None,
    transition: Annotated[list[str] | None, Query(max_length=20)] = None,
    key: Annotated[str | None, Query(max_length=400)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
) -> list[schemas.AlarmJournalPublic]:
    """The alarm journal from the event log, newest first (default: the last 24 hours).

    Filters: ``priority``, ``area``, ``transition`` (raised, cleared, acknowledged, shelved, ...),
    ``key``; ``before`` a sequence number pages back.
    """
    t0, t1 = _window(start, end, room, timedelta(hours=24))
    entries = room.alarm_journal(
        start=t0,
        end=t1,
        priorities=priority or (),
        areas=area or (),
        transitions=transition or (),
        key=key,
        before=before,
        limit=limit,
    )
    return [schemas.AlarmJournalPublic.model_validate(e) for e in entries]


@router.get("/api/alarms/summary", response_model_by_alias=True)
def summary(
    _: ViewSession,
    room: RoomDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    positions: Annotated[int, Query(ge=1, le=100)] = 1,
) -> schemas.AlarmSummaryPublic:
    """The ISA-18.2 alarm performance figures of a window (default: the last 24 hours).

    Annunciated alarms per operator position per 10 minutes, flood periods (more than 10 alarms
    in 10 minutes), the ten most frequent alarms, stale alarms (standing over 24 h), chattering
    alarms, the priority distribution and the present counts.
    """
    t0, t1 = _window(start, end, room, timedelta(hours=24))
    return schemas.AlarmSummaryPublic.model_validate(room.alarm_summary(start=t0, end=t1, positions=positions))


@router.post("/api/alarms/{key:path}/acknowledge")
def acknowledge(key: str, session: ControlSession, request: Request, room: RoomDep) -> schemas.AlarmEventPublic:
    """Acknowledge an alarm (operator role); 404 for an unknown key, 409 when it is not in the list."""
    event = room.acknowledge(key, actor=session.user.username, source_ip=client_ip(request))
    return _event_public(event)


@router.post("/api/alarms/{key:path}/shelve")
def shelve(
    key: str, body: schemas.ShelveCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.AlarmEventPublic:
    """Shelve an alarm that is active or unacknowledged, until a time or for ``duration_s``, with a reason.

    Operator role. At most 8 hours (400 beyond); 409 for an alarm that is normal or out of service.
    """
    event = room.shelve(
        key,
        until=body.until,
        duration_s=body.duration_s,
        reason=body.reason,
        actor=session.user.username,
        source_ip=client_ip(request),
    )
    return _event_public(event)


@router.post("/api/alarms/{key:path}/unshelve")
def unshelve(
    key: str,
    session: ControlSession,
    request: Request,
    room: RoomDep,
    body: schemas.OptionalReason | None = None,
) -> schemas.AlarmEventPublic:
    """Take an alarm off the shelf (operator role); 409 when it is not shelved. Still active: announced again."""
    events = room.unshelve(
        key, actor=session.user.username, reason=body.reason if body else None, source_ip=client_ip(request)
    )
    return _event_public(events[0])


@router.post("/api/alarms/{key:path}/out-of-service")
def out_of_service(
    key: str,
    body: schemas.ReasonCreate,
    session: ConfigureSession,
    request: Request,
    room: RoomDep,
) -> schemas.AlarmEventPublic:
    """Take an alarm out of service for maintenance, with a reason (engineer role); 409 when it is already."""
    event = room.remove_from_service(key, reason=body.reason, actor=session.user.username, source_ip=client_ip(request))
    return _event_public(event)


@router.post("/api/alarms/{key:path}/return-to-service")
def return_to_service(
    key: str,
    session: ConfigureSession,
    request: Request,
    room: RoomDep,
    body: schemas.OptionalReason | None = None,
) -> schemas.AlarmEventPublic:
    """Return an alarm to service (engineer role); 409 when it is not out of service. Active: announced again."""
    events = room.return_to_service(
        key, actor=session.user.username, reason=body.reason if body else None, source_ip=client_ip(request)
    )
    return _event_public(events[0])
