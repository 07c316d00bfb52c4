"""FLISR: the proposals made after protection trips, an operator's approval or rejection, and studies.

=====================================  ==========  ==========================================================
route                                  permission  what it does
=====================================  ==========  ==========================================================
``GET /api/flisr``                     view        the mode and every proposal, newest first
``GET /api/flisr/{id}``                view        one proposal: located section, steps, outcomes
``POST /api/flisr/{id}/approve``       control     execute the proposal's steps through the gate (FLISR path)
``POST /api/flisr/{id}/reject``        control     reject it, with a reason; nothing is sent
``POST /api/flisr/study``              view        plan for a fault at a node on the grid as it is now
                                                   (nothing is sent: what the operator would get)
=====================================  ==========  ==========================================================

The responder (:class:`~opendso.operations.fault_response.FaultResponder`) is held in
``app.state.flisr``; ``opendso run`` sets one subscribed to its real-time cycle. Without one the
mode is ``off`` and there are no proposals. Approvals and rejections are audited with the actor
and client address; the steps themselves are logged and audited by the dispatcher like every
command.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from opendso.errors import NotFoundError
from opendso.operations.fault_response import FaultResponder, FlisrMode
from opendso.operations.flisr import simulate_fault_and_plan
from opendso.service import schemas
from opendso.service.routes.deps import ControlSession, RoomDep, ViewSession, client_ip
from opendso.text import check_text

__all__ = ["router"]

router = APIRouter(tags=["flisr"])


def _responder(request: Request) -> FaultResponder | None:
    held: FaultResponder | None = getattr(request.app.state, "flisr", None)
    return held


ResponderDep = Annotated[FaultResponder | None, Depends(_responder)]


def _require(responder: FaultResponder | None, proposal_id: int) -> FaultResponder:
    if responder is None:
        raise NotFoundError(f"no FLISR proposal {proposal_id}: FLISR is off")
    return responder


@router.get("/api/flisr")
def flisr_state(_: ViewSession, responder: ResponderDep) -> dict[str, Any]:
    """The FLISR mode (off, advisory, automatic) and every proposal, newest first."""
    if responder is None:
        return {"mode": FlisrMode.OFF.value, "proposals": []}
    return {"mode": responder.config.mode.value, "proposals": [p.to_json() for p in responder.proposals]}


@router.post("/api/flisr/study")
async def study(body: schemas.FlisrStudy, _: ViewSession, room: RoomDep) -> dict[str, Any]:
    """The plan FLISR would make for a fault at ``fault`` (a node) on the grid as it is now; nothing is sent."""
    grid = room.cycle.grid if room.cycle is not None else room.grid
    plan = await asyncio.to_thread(simulate_fault_and_plan, grid, body.fault)
    return plan.to_json()


@router.get("/api/flisr/{proposal_id}")
def get_proposal(proposal_id: int, _: ViewSession, responder: ResponderDep) -> dict[str, Any]:
    """One proposal; 404 when unknown."""
    return _require(responder, proposal_id).proposal(proposal_id).to_json()


@router.post("/api/flisr/{proposal_id}/approve")
async def approve(
    proposal_id: int, session: ControlSession, request: Request, room: RoomDep, responder: ResponderDep
) -> dict[str, Any]:
    """Approve a proposal (operator role): its steps go through the gate to the field, in order.

    A step that does not complete stops the run (``stopped``): approve again to go on once the
    cause is removed. 409 for a proposal already executed, rejected or failed.
    """
    held = _require(responder, proposal_id)
    held.proposal(proposal_id)  # 404 before the audit record
    actor = session.user.username
    room.audit.append("flisr.approve", actor=actor, element=str(proposal_id), source_ip=client_ip(request))
    proposal = await held.approve(proposal_id, actor=actor, roles=frozenset(session.user.roles))
    return proposal.to_json()


@router.post("/api/flisr/{proposal_id}/reject")
def reject(
    proposal_id: int,
    body: schemas.FlisrReject,
    session: ControlSession,
    request: Request,
    room: RoomDep,
    responder: ResponderDep,
) -> dict[str, Any]:
    """Reject a proposal with a reason (operator role); nothing is sent."""
    held = _require(responder, proposal_id)
    reason = check_text("reason", body.reason, max_len=1000)
    proposal = held.reject(proposal_id, actor=session.user.username, reason=reason)
    room.audit.append(
        "flisr.reject",
        actor=session.user.username,
        element=str(proposal_id),
        source_ip=client_ip(request),
        reason=reason,
    )
    return proposal.to_json()
