"""Demand response in the control room: the OpenADR 2.0b VTN, its enrolled VENs and its events.

=======================================  ==========  ================================================
route                                    permission  what it does
=======================================  ==========  ================================================
``GET /api/dr``                          view        whether demand response is on, the VTN's URL,
                                                     every enrolled VEN with its registration state,
                                                     the latest refusals
``POST /api/dr/enrollments``             configure   enroll a VEN: name, certificate fingerprint,
                                                     registry asset ids, party (audited)
``DELETE /api/dr/enrollments/{ven}``     configure   withdraw a VEN's enrollment (audited)
``GET /api/dr/events``                   view        every event: signal, intervals, targets, origin,
                                                     status and each targeted VEN's opt-in/out
``POST /api/dr/events``                  control     a new event from the operator: ``level`` (SIMPLE
                                                     0-3) or ``price`` signal, consecutive intervals
                                                     ``{start, duration_s, value}``, ``vens`` and/or
                                                     ``assets``, ``reason`` (audited)
``POST /api/dr/events/{id}/cancel``      control     cancel an event for every VEN it went to (audited)
=======================================  ==========  ================================================

The VTN (:class:`~opendso.der.openadr.DemandResponseVtn`) is held in ``app.state.dr``;
``opendso run`` starts one when ``OPENDSO_OPENADR_CERT``, ``_KEY`` and ``_CA`` are set. Without
one, demand response is off: the reads say so (``"on": false``) and every change is 409
"demand response is off".

The routes are ``async``: they run on the event loop that serves the VTN (``opendso run`` serves
the API and the VTN in one loop), so the VTN's state is only ever touched from that loop. Bad
input is 422 (the body's shape) or 400 (a time, fingerprint or interval sequence), naming the
field; an unknown VEN, asset or event is 404; an event id or VEN name in use is 409.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field

from opendso.der.openadr import DemandResponseVtn, DrEvent, DrInterval, DrSignal, VenEnrollment
from opendso.errors import ConflictError
from opendso.operations.setpoints.model import SetpointSource
from opendso.service.routes.deps import ConfigureSession, ControlSession, RoomDep, ViewSession, client_ip
from opendso.timeutil import parse_time

__all__ = ["DrEnrollmentBody", "DrEventBody", "DrIntervalBody", "router"]

router = APIRouter(tags=["dr"])

#: How many of the VTN's latest refusals ``GET /api/dr`` shows.
_REFUSALS_SHOWN = 20
_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


def _vtn(request: Request) -> DemandResponseVtn | None:
    held: DemandResponseVtn | None = getattr(request.app.state, "dr", None)
    return held


VtnDep = Annotated[DemandResponseVtn | None, Depends(_vtn)]


def _running(vtn: DemandResponseVtn | None) -> DemandResponseVtn:
    """The VTN, or :class:`ConflictError` (409) when demand response is off."""
    if vtn is None:
        raise ConflictError("demand response is off")
    return vtn


class DrEnrollmentBody(BaseModel):
    """A VEN the DSO enrolls: its name, its certificate's OpenADR fingerprint, the assets it controls, its party."""

    model_config = ConfigDict(extra="forbid")

    ven_name: str = Field(min_length=1, max_length=200)
    fingerprint: str = Field(min_length=1, max_length=64)
    assets: list[Annotated[str, Field(pattern=_ID_PATTERN)]] = Field(min_length=1, max_length=10_000)
    party: str = Field(min_length=1, max_length=200)


class DrIntervalBody(BaseModel):
    """One interval of an event's signal: start (ISO 8601 with a zone), duration in whole seconds, value."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(min_length=1, max_length=64)
    duration_s: int = Field(gt=0, le=7 * 86_400)
    value: float = Field(allow_inf_nan=False)


class DrEventBody(BaseModel):
    """An operator's demand-response event: signal, consecutive intervals, targets and reason."""

    model_config = ConfigDict(extra="forbid")

    signal: str = Field(pattern="^(level|price)$")
    intervals: list[DrIntervalBody] = Field(min_length=1, max_length=1000)
    vens: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=1000)
    assets: list[Annotated[str, Field(pattern=_ID_PATTERN)]] = Field(default_factory=list, max_length=10_000)
    reason: str = Field(min_length=1, max_length=500)
    id: str | None = Field(None, pattern=_ID_PATTERN)


def _ven_out(vtn: DemandResponseVtn, enrollment: VenEnrollment) -> dict[str, Any]:
    return {**enrollment.to_json(), "registered": vtn.registered(enrollment.ven_name)}


def _event_out(vtn: DemandResponseVtn, event_id: str) -> dict[str, Any]:
    event = vtn.event(event_id)
    opts = vtn.opts(event_id)
    vens = vtn.event_vens(event_id)
    return {
        **event.to_json(),
        "status": vtn.event_status(event_id),
        "targeted_vens": list(vens),
        "assets_reached": list(vtn.event_assets(event_id)),
        "opts": {
            name: ({"opt": opts[name].opt_type, "at": opts[name].at.isoformat()} if name in opts else None)
            for name in vens
        },
    }


# -- reads -----------------------------------------------------------------------------------------------
@router.get("/api/dr")
async def dr_state(_: ViewSession, vtn: VtnDep) -> dict[str, Any]:
    """Whether demand response is on, the VTN's id and URL, the enrolled VENs and the latest refusals."""
    if vtn is None:
        return {"on": False, "vtn_id": None, "url": None, "poll_s": None, "vens": [], "refusals": []}
    refusals = list(vtn.refusals)[-_REFUSALS_SHOWN:]
    return {
        "on": True,
        "vtn_id": vtn.vtn_id,
        "url": vtn.url,
        "poll_s": vtn.poll_interval.total_seconds(),
        "vens": [_ven_out(vtn, e) for e in vtn.enrollments.all()],
        "refusals": [
            {"at": r.at.isoformat(), "ven_name": r.ven_name, "ven_id": r.ven_id, "reason": r.reason, "detail": r.detail}
            for r in reversed(refusals)
        ],
    }


@router.get("/api/dr/events")
async def dr_events(_: ViewSession, vtn: VtnDep) -> dict[str, Any]:
    """Every event by start (newest first): signal, intervals, targets, origin, status and each VEN's opt."""
    if vtn is None:
        return {"on": False, "events": []}
    events = [_event_out(vtn, event_id) for event_id in vtn.event_ids()]
    events.sort(key=lambda e: (e["intervals"][0]["start"], e["id"]), reverse=True)
    return {"on": True, "events": events}


# -- engineering: enrollment -----------------------------------------------------------------------------
@router.post("/api/dr/enrollments", status_code=status.HTTP_201_CREATED)
async def enroll(
    body: DrEnrollmentBody, session: ConfigureSession, request: Request, room: RoomDep, vtn: VtnDep
) -> dict[str, Any]:
    """Enroll a VEN (engineer role): 404 for an asset not in the registry, 409 for a name or asset taken."""
    server = _running(vtn)
    enrollment = server.enroll(body.ven_name, body.fingerprint, body.assets, party=body.party)
    room.audit.append(
        "dr.enrolled",
        actor=session.user.username,
        element=f"ven:{enrollment.ven_name}",
        details={"ven_id": enrollment.ven_id, "party": enrollment.party, "assets": list(enrollment.assets)},
        source_ip=client_ip(request),
    )
    return _ven_out(server, enrollment)


@router.delete("/api/dr/enrollments/{ven}")
async def withdraw(ven: str, session: ConfigureSession, request: Request, room: RoomDep, vtn: VtnDep) -> dict[str, Any]:
    """Withdraw a VEN's enrollment (engineer role): it can no longer register or be reached; 404 unknown."""
    server = _running(vtn)
    enrollment = server.withdraw(ven)
    room.audit.append(
        "dr.withdrawn",
        actor=session.user.username,
        element=f"ven:{enrollment.ven_name}",
        details={"ven_id": enrollment.ven_id},
        source_ip=client_ip(request),
    )
    return enrollment.to_json()


# -- operations: events ----------------------------------------------------------------------------------
def _event(body: DrEventBody) -> DrEvent:
    intervals = tuple(
        DrInterval(parse_time(iv.start, f"intervals[{k}].start"), timedelta(seconds=iv.duration_s), iv.value)
        for k, iv in enumerate(body.intervals)
    )
    return DrEvent(
        id=body.id or f"dr-{secrets.token_hex(6)}",
        signal=DrSignal(body.signal),
        intervals=intervals,
        origin=SetpointSource.OPERATOR,
        vens=tuple(body.vens),
        resources=tuple(body.assets),
        reason=body.reason,
    )


@router.post("/api/dr/events", status_code=status.HTTP_201_CREATED)
async def create_event(
    body: DrEventBody, session: ControlSession, request: Request, room: RoomDep, vtn: VtnDep
) -> dict[str, Any]:
    """Send an operator's event to the VENs it reaches (operator role); 404 for an unknown VEN or asset."""
    server = _running(vtn)
    event = _event(body)
    reached = server.create_event(event)
    room.audit.append(
        "dr.event_created",
        actor=session.user.username,
        element=f"dr:{event.id}",
        reason=event.reason,
        details={
            "signal": event.signal.value,
            "intervals": len(event.intervals),
            "start": event.start.isoformat(),
            "vens": list(reached),
        },
        source_ip=client_ip(request),
    )
    return _event_out(server, event.id)


@router.post("/api/dr/events/{event_id}/cancel")
async def cancel_event(
    event_id: str, session: ControlSession, request: Request, room: RoomDep, vtn: VtnDep
) -> dict[str, Any]:
    """Cancel an event for every VEN it went to (operator role); 404 unknown, 409 cancelled already."""
    server = _running(vtn)
    server.cancel_event(event_id)
    room.audit.append(
        "dr.event_cancelled",
        actor=session.user.username,
        element=f"dr:{event_id}",
        source_ip=client_ip(request),
    )
    return _event_out(server, event_id)
