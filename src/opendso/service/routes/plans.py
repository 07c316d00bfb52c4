"""Switching plans: prepared and approved by engineers, executed step by step by operators.

=====================================================  ==========  ====================================
route                                                  permission  what it does
=====================================================  ==========  ====================================
``GET /api/plans``                                     view        plans, newest change first
``GET /api/plans/{id}``                                view        one plan with its steps and archive
``POST /api/plans``                                    configure   a new draft (title, steps)
``PUT /api/plans/{id}/steps``                          configure   replace a draft's steps
``POST /api/plans/{id}/simulate``                      configure   every step through the gate on the
                                                                   model, on the grid as it is now
``POST /api/plans/{id}/approve``                       configure   approval by a second engineer
``POST /api/plans/{id}/cancel``                        configure   cancel a plan not started
``POST /api/plans/{id}/start``                         control     begin executing an approved plan
``POST /api/plans/{id}/steps/{n}/execute``             control     send remote step n through the
                                                                   dispatcher (the gate decides again)
``POST /api/plans/{id}/steps/{n}/confirm``             control     a field crew's manual step n done
``POST /api/plans/{id}/abort``                         control     abort an executing plan
=====================================================  ==========  ====================================

Every change names the plan's ``version`` the caller read (409 when someone changed it since), is
logged (``plan.<what>``) and audited with the actor and client address. The domain rules (a
second person approves, only a feasible simulation of the present steps is approved, steps run
in order) are :mod:`opendso.operations.switching.plans`'; the orchestration is
:class:`~opendso.operations.switching.plan_book.PlanBook`.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from opendso.errors import InputError
from opendso.operations.switching import (
    Confirmation,
    GateRule,
    Override,
    PlanStep,
    StepKind,
    SwitchAction,
    SwitchingPlan,
)
from opendso.operations.switching.plan_book import PlanBook, StepResult
from opendso.service import schemas
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.deps import ConfigureSession, ControlSession, RoomDep, ViewSession, client_ip
from opendso.service.routes.switching import SwitchingDep
from opendso.store.plans import PlanStore
from opendso.text import check_text

__all__ = ["plan_book_for_room", "router"]

router = APIRouter(tags=["plans"])

_BUILD = threading.Lock()


def plan_book_for_room(room: ControlRoom, dispatcher: Any) -> PlanBook:
    """The plan book of a control room: its database, event log, audit trail and dispatcher.

    A field crew's manual step on a switch without telemetry is entered into the real-time
    cycle's grid (marked as manually entered) when the room has a monitor.
    """
    monitor = room.monitor

    def enter_manual(switch: str, closed: bool) -> None:
        if monitor is None:
            return
        with monitor.lock:
            monitor.cycle.enter_switch_state(switch, closed)

    return PlanBook(
        PlanStore(room.historian.engine),
        dispatcher,
        events=room.historian.events,
        audit=room.audit.append,
        enter_manual=enter_manual,
    )


def _book(request: Request, room: RoomDep, switching: SwitchingDep) -> PlanBook:
    state = request.app.state
    with _BUILD:
        held: PlanBook | None = getattr(state, "plans", None)
        if held is None or held.dispatcher is not switching.dispatcher:
            held = state.plans = plan_book_for_room(room, switching.dispatcher)
    return held


BookDep = Annotated[PlanBook, Depends(_book)]


def _steps(bodies: list[schemas.PlanStepBody]) -> list[PlanStep]:
    out = []
    for number, body in enumerate(bodies, start=1):
        where = f"step {number}"
        out.append(
            PlanStep(
                switch=body.switch,
                action=SwitchAction(body.action),
                kind=StepKind(body.kind),
                instruction=check_text(f"{where}: instruction", body.instruction, max_len=1000)
                if body.instruction
                else "",
                overrides=tuple(
                    Override(o.tag, check_text(f"{where}: override reason", o.reason, max_len=1000))
                    for o in body.overrides
                ),
                confirmations=tuple(
                    Confirmation(
                        _rule(c.rule, where), check_text(f"{where}: confirmation reason", c.reason, max_len=1000)
                    )
                    for c in body.confirmations
                ),
            )
        )
    return out


def _rule(value: str, where: str) -> GateRule:
    try:
        return GateRule(value)
    except ValueError:
        raise InputError(f"{where}: confirmation rule must be one of {', '.join(r.value for r in GateRule)}") from None


def _out(plan: SwitchingPlan, version: int) -> dict[str, Any]:
    return {**plan.to_json(), "version": version}


def _step_out(result: StepResult) -> dict[str, Any]:
    return {
        "plan": _out(result.plan, result.version),
        "outcome": result.outcome.as_dict() if result.outcome is not None else None,
    }


# -- reading ---------------------------------------------------------------------------------------------
@router.get("/api/plans")
def list_plans(
    _: ViewSession,
    book: BookDep,
    state: Annotated[str | None, Query(pattern="^(draft|approved|executing|completed|aborted|cancelled)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Switching plans, the most recently changed first (optionally of one state)."""
    return [_out(p, v) for p, v in book.list(state=state, limit=limit)]


@router.get("/api/plans/{plan_id}")
def get_plan(plan_id: str, _: ViewSession, book: BookDep) -> dict[str, Any]:
    """One plan: its steps, last simulation and archive (who did what, when); 404 when unknown."""
    return _out(*book.get(plan_id))


# -- engineering -----------------------------------------------------------------------------------------
@router.post("/api/plans", status_code=status.HTTP_201_CREATED)
def create_plan(body: schemas.PlanCreate, session: ConfigureSession, request: Request, book: BookDep) -> dict[str, Any]:
    """A new draft plan (engineer role); a step naming an unknown switch is 404 naming the step."""
    return _out(*book.create(body.title, _steps(body.steps), actor=session.user.username, source_ip=client_ip(request)))


@router.put("/api/plans/{plan_id}/steps")
def edit_plan(
    plan_id: str, body: schemas.PlanEdit, session: ConfigureSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Replace a draft's steps (engineer role); the simulation is discarded; 409 once approved."""
    return _out(
        *book.edit(plan_id, body.version, _steps(body.steps), actor=session.user.username, source_ip=client_ip(request))
    )


@router.post("/api/plans/{plan_id}/simulate")
def simulate(
    plan_id: str, body: schemas.PlanVersion, session: ConfigureSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Simulate every step through the gate on the grid as it is now (engineer role)."""
    return _out(
        *book.simulate(
            plan_id,
            body.version,
            actor=session.user.username,
            roles=session.user.roles,
            source_ip=client_ip(request),
        )
    )


@router.post("/api/plans/{plan_id}/approve")
def approve(
    plan_id: str, body: schemas.PlanVersion, session: ConfigureSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Approve a draft (engineer role): not its author or last editor, on a feasible simulation (409)."""
    return _out(*book.approve(plan_id, body.version, actor=session.user.username, source_ip=client_ip(request)))


@router.post("/api/plans/{plan_id}/cancel")
def cancel(
    plan_id: str, body: schemas.PlanReason, session: ConfigureSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Cancel a draft or approved plan, with a reason (engineer role)."""
    return _out(
        *book.cancel(plan_id, body.version, body.reason, actor=session.user.username, source_ip=client_ip(request))
    )


# -- operating ---------------------------------------------------------------------------------------------
@router.post("/api/plans/{plan_id}/start")
def start(
    plan_id: str, body: schemas.PlanVersion, session: ControlSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Begin executing an approved plan (operator role)."""
    return _out(*book.start(plan_id, body.version, actor=session.user.username, source_ip=client_ip(request)))


@router.post("/api/plans/{plan_id}/steps/{number}/execute")
async def execute_step(
    plan_id: str, number: int, body: schemas.PlanVersion, session: ControlSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Send remote step ``number`` (the next one) through the gate to the field (operator role).

    The answer holds the plan and the dispatcher's outcome; a step that did not complete stays
    the next step (retry, or abort the plan).
    """
    result = await book.execute_step(
        plan_id,
        body.version,
        number,
        actor=session.user.username,
        roles=session.user.roles,
        source_ip=client_ip(request),
    )
    return _step_out(result)


@router.post("/api/plans/{plan_id}/steps/{number}/confirm")
def confirm_manual(
    plan_id: str, number: int, body: schemas.PlanManualConfirm, session: ControlSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """A field crew reports manual step ``number`` done (operator role); the gate checks it first (409)."""
    note = check_text("note", body.note, max_len=1000) if body.note else ""
    result = book.confirm_manual(
        plan_id,
        body.version,
        number,
        note,
        actor=session.user.username,
        roles=session.user.roles,
        source_ip=client_ip(request),
    )
    return _step_out(result)


@router.post("/api/plans/{plan_id}/abort")
def abort(
    plan_id: str, body: schemas.PlanReason, session: ControlSession, request: Request, book: BookDep
) -> dict[str, Any]:
    """Abort an executing plan, with a reason (operator role); the steps done stay done."""
    return _out(
        *book.abort(plan_id, body.version, body.reason, actor=session.user.username, source_ip=client_ip(request))
    )
