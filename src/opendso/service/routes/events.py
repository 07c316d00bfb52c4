"""The event log and the shift log.

==========================  ==========  ==========================================================
route                       permission  what it does
==========================  ==========  ==========================================================
``GET /api/events``         view        events after a sequence number (``after``), oldest first
``GET /api/shiftlog``       view        the newest operator notes, oldest first
``POST /api/shiftlog``      control     write an operator note (201); audited
==========================  ==========  ==========================================================
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from opendso.service import schemas
from opendso.service.routes.deps import MAX_PAGE, MAX_SEQ, ControlSession, RoomDep, ViewSession, client_ip

__all__ = ["router"]

router = APIRouter(tags=["events"])


@router.get("/api/events")
def events(
    _: ViewSession,
    room: RoomDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
) -> list[schemas.EventPublic]:
    """Events of the event log after a sequence number, oldest first."""
    return [schemas.EventPublic.model_validate(e) for e in room.events(after, limit)]


@router.get("/api/shiftlog")
def shiftlog(
    _: ViewSession, room: RoomDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
) -> list[schemas.EventPublic]:
    """The newest operator notes for the shift handover, oldest first."""
    return [schemas.EventPublic.model_validate(e) for e in room.shift_notes(limit)]


@router.post("/api/shiftlog", status_code=201)
def add_note(
    body: schemas.ShiftNoteCreate, session: ControlSession, request: Request, room: RoomDep
) -> schemas.EventPublic:
    """Write an operator note (operator role)."""
    note = room.add_shift_note(body.text, actor=session.user.username, source_ip=client_ip(request))
    return schemas.EventPublic.model_validate(note)
