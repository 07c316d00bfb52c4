"""Outages and reliability: the outage list, customer calls, restoration steps, crews, ETRs, IEEE 1366 indices.

=======================================  ==========  ===============================================
route                                    permission  what it does
=======================================  ==========  ===============================================
``GET /api/outages``                     view        outages newest first; ``state``, ``before``
                                                     (an id: pages back), ``limit``
``GET /api/outages/{id}``                view        one outage with its loads and calls
``POST /api/outages/calls``              control     log a customer call; it joins or opens a
                                                     predicted outage (201)
``POST /api/outages/{id}/steps``         control     a restoration step (nodes, or customers)
``POST /api/outages/{id}/crew``          control     the crew sent
``POST /api/outages/{id}/etr``           control     the estimated restoration time
``POST /api/outages/{id}/close``         control     restore everyone still off, with the cause
``POST /api/outages/{id}/confirm``       control     a predicted outage seen by a crew or SCADA
``POST /api/outages/{id}/cancel``        control     a prediction found false (not counted)
``GET /api/reliability``                 view        IEEE 1366 indices of ``[from, to)``, ``tz``
=======================================  ==========  ===============================================

Every action is appended to the event log (``outage.<action>``) and the audit trail with the
operator and their address. An unknown outage, node or load is 404, an outage restored or
cancelled 409, a time before the outage's start or free text with control characters 400,
a malformed body 422. Times default to the control room's clock. The outage records and the
call grouping are :mod:`opendso.operations.outages`'; one :class:`OutageManager` per app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.operations.outages import (
    OutageManager,
    OutageState,
    add_restoration_step,
    assign_crew,
    cancel,
    close,
    confirm,
    records_table,
    report_from_store,
    set_etr,
)
from opendso.operations.reliability import daily_saidi, zone_of
from opendso.service import schemas
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.deps import ControlSession, RoomDep, ViewSession, client_ip, query_time
from opendso.store.outages import OutageRecord, OutageStore
from opendso.text import check_text

__all__ = ["MAX_OUTAGE_PAGE", "REPORT_WINDOW", "router"]

router = APIRouter(tags=["outages"])

#: Most outages one request lists.
MAX_OUTAGE_PAGE = 500
#: Longest period of a reliability report.
REPORT_WINDOW = timedelta(days=3660)
_MANAGER_LOCK = threading.Lock()
#: An outage id in a path: a positive 32-bit integer (the column's range).
OutageId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _manager(request: Request, room: ControlRoom) -> OutageManager:
    """The app's outage manager, made on first use (one per app, on the room's database and grid)."""
    with _MANAGER_LOCK:
        manager: OutageManager | None = getattr(request.app.state, "outages", None)
        if manager is None:
            manager = OutageManager(OutageStore(room.historian.engine), room.grid)
            request.app.state.outages = manager
    return manager


def _grid_now(room: ControlRoom) -> Grid:
    return room.cycle.grid if room.cycle is not None else room.grid


def _public(
    record: OutageRecord, *, calls: list[dict[str, Any]] | None = None, loads: bool = False
) -> schemas.OutagePublic:
    data = record.to_dict(with_loads=loads)
    if calls is not None:
        data["calls"] = calls
    return schemas.OutagePublic.model_validate(data)


def _record_action(
    room: ControlRoom,
    request: Request,
    action: str,
    record: OutageRecord,
    actor: str,
    details: dict[str, Any],
) -> None:
    """One event and one audit record of an operator's action on an outage."""
    element = f"outage:{record.id}"
    payload = {"outage": record.id, "state": record.state, **details}
    room.historian.events.append(f"outage.{action}", actor=actor, element=element, payload=payload)
    room.audit.append(f"outage.{action}", actor=actor, element=element, source_ip=client_ip(request), details=payload)


@router.get("/api/outages")
def list_outages(
    _: ViewSession,
    room: RoomDep,
    request: Request,
    state: Annotated[list[OutageState] | None, Query(max_length=5)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**31)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_OUTAGE_PAGE)] = 100,
) -> list[schemas.OutagePublic]:
    """Outages newest first; filter by ``state`` (repeatable); ``before`` an id pages back."""
    store = _manager(request, room).store
    records = store.select(states=[str(s) for s in state or ()], before=before, limit=limit)
    return [_public(r) for r in records]


@router.get("/api/reliability")
def reliability(
    _: ViewSession,
    room: RoomDep,
    request: Request,
    start: Annotated[str, Query(alias="from", max_length=64)],
    end: Annotated[str, Query(alias="to", max_length=64)],
    tz: Annotated[str, Query(max_length=64)] = "UTC",
    customers_served: Annotated[int | None, Query(ge=1, le=10**9)] = None,
    feeder: Annotated[list[str] | None, Query(max_length=100)] = None,
) -> schemas.ReliabilityPublic:
    """IEEE 1366 indices of the stored outages that began in ``[from, to)``, major event days in ``tz``.

    ``daily_saidi`` lists the SAIDI of each day of the period with a sustained interruption
    (customer minutes of events begun that day in ``tz`` / customers served; the series T_MED is
    compared with). ``customers_served`` defaults to every customer of the grid; ``feeder`` (repeatable) keeps the
    steps of those feeders (then give the area's ``customers_served``).
    """
    t0, t1 = query_time(start, "from"), query_time(end, "to")
    if t1 <= t0:
        raise InputError(f"'to' ({t1.isoformat()}) must be after 'from' ({t0.isoformat()})")
    if t1 - t0 > REPORT_WINDOW:
        raise InputError(f"the period from 'from' to 'to' is at most {REPORT_WINDOW.days} days")
    manager = _manager(request, room)
    served = customers_served or manager.customers_served
    if served <= 0:
        raise InputError("the grid has no customers: give customers_served")
    zone = zone_of(tz)
    report = report_from_store(manager.store, customers_served=served, start=t0, end=t1, tz=zone, feeders=feeder or ())
    daily = daily_saidi(
        records_table(manager.store, feeders=list(feeder or ())), customers_served=served, start=t0, end=t1, tz=zone
    )
    return schemas.ReliabilityPublic.model_validate(
        {
            **report.to_json(),
            "customers_served": served,
            "daily_saidi": [{"date": day.isoformat(), "saidi_min": value} for day, value in daily.items()],
        }
    )


@router.post("/api/outages/calls", status_code=201)
def log_call(
    body: schemas.OutageCallCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutageCallPublic:
    """Log a customer call at a load or node (operator role): it joins the outage that explains it or opens one.

    404 for an unknown load or node; 409 for a node without supply that no open outage names.
    """
    manager = _manager(request, room)
    actor = session.user.username
    call, record = manager.log_call(
        time=body.time or room.alarm_time(),
        text=body.text,
        actor=actor,
        load=body.load,
        node=body.node,
        grid=_grid_now(room),
    )
    _record_action(
        room,
        request,
        "call",
        record,
        actor,
        {"call": call.id, "node": call.node, "load": call.load, "device": record.device},
    )
    return schemas.OutageCallPublic(call=call.to_dict(), outage=_public(record))


@router.get("/api/outages/{outage_id}")
def get_outage(outage_id: OutageId, _: ViewSession, room: RoomDep, request: Request) -> schemas.OutagePublic:
    """One outage with its interrupted loads and its calls; 404 when there is none."""
    store = _manager(request, room).store
    record = store.get(outage_id)
    return _public(record, calls=[c.to_dict() for c in store.calls(outage_id)], loads=True)


def _change(
    request: Request,
    room: RoomDep,
    outage_id: int,
    session: ControlSession,
    action: str,
    change: Callable[[OutageRecord], OutageRecord],
    details: dict[str, Any],
) -> schemas.OutagePublic:
    record = _manager(request, room).change(outage_id, change)
    _record_action(room, request, action, record, session.user.username, details)
    return _public(record)


@router.post("/api/outages/{outage_id}/steps")
def add_step(
    outage_id: OutageId, body: schemas.OutageStepCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutagePublic:
    """A restoration step (operator role): the nodes restored, or the customers when the loads are unknown."""
    when = body.time or room.alarm_time()
    actor = session.user.username
    return _change(
        request,
        room,
        outage_id,
        session,
        "step",
        lambda r: add_restoration_step(r, when, nodes=body.nodes, customers=body.customers, actor=actor),
        {"time": when.isoformat(), "nodes": len(body.nodes), "customers": body.customers},
    )


@router.post("/api/outages/{outage_id}/crew")
def crew(
    outage_id: OutageId, body: schemas.OutageCrewCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutagePublic:
    """Assign a crew (operator role)."""
    when = body.time or room.alarm_time()
    return _change(
        request, room, outage_id, session, "crew", lambda r: assign_crew(r, body.crew, when), {"crew": body.crew}
    )


@router.post("/api/outages/{outage_id}/etr")
def etr(
    outage_id: OutageId, body: schemas.OutageEtrCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutagePublic:
    """Set the estimated restoration time (operator role); before the outage's start is 400."""
    return _change(
        request, room, outage_id, session, "etr", lambda r: set_etr(r, body.etr), {"etr": body.etr.isoformat()}
    )


@router.post("/api/outages/{outage_id}/close")
def close_outage(
    outage_id: OutageId, body: schemas.OutageCloseCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutagePublic:
    """Close an outage (operator role): everyone still off is restored at ``time``; an end before the start is 400."""
    when: datetime = body.time or room.alarm_time()
    actor = session.user.username
    return _change(
        request,
        room,
        outage_id,
        session,
        "close",
        lambda r: close(r, when, actor=actor, cause=body.cause),
        {"time": when.isoformat(), "cause": body.cause},
    )


@router.post("/api/outages/{outage_id}/confirm")
def confirm_outage(
    outage_id: OutageId, session: ControlSession, request: Request, room: RoomDep
) -> schemas.OutagePublic:
    """Confirm a predicted outage (operator role); 409 in any other state."""
    return _change(request, room, outage_id, session, "confirm", confirm, {})


@router.post("/api/outages/{outage_id}/cancel")
def cancel_outage(
    outage_id: OutageId,
    session: ControlSession,
    request: Request,
    room: RoomDep,
    body: schemas.OptionalReason | None = None,
) -> schemas.OutagePublic:
    """Cancel an outage that did not happen (operator role): not counted; 409 once a customer was restored."""
    when = room.alarm_time()
    reason = check_text("reason", body.reason, max_len=1000) if body and body.reason else None
    return _change(
        request, room, outage_id, session, "cancel", lambda r: cancel(r, max(when, r.start)), {"reason": reason}
    )
