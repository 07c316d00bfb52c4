"""Switching: the gate's answer, operating a switch through it, tags, safety documents, earths, fault flags.

=================================================  ==========  ========================================
route                                              permission  what it does
=================================================  ==========  ========================================
``GET /api/switching/state``                       view        tags, documents, earths, fault flags
``POST /api/switching/preview``                    control     the gate's answer, nothing is sent
``POST /api/switching/operate``                    control     open/close through the gate (the
                                                               dispatcher): the outcome
``POST /api/switching/tags``                       control     place a do-not-operate or caution tag
``DELETE /api/switching/tags/{id}``                control     remove a tag, with a reason
``POST /api/switching/documents``                  configure   a permit to work / sanction for test
                                                               in draft (devices, earths)
``POST /api/switching/documents/{id}/issue``       configure   issue (devices open, earthed nodes dead)
``POST /api/switching/documents/{id}/start``       control     work starts (in work)
``POST /api/switching/documents/{id}/clear``       control     work done, document cleared
``POST /api/switching/documents/{id}/cancel``      configure   cancel a draft or issued document
``POST /api/switching/earths``                     control     record an earth (refused on a live node)
``DELETE /api/switching/earths/{node}``            control     remove an earth, with a reason
``POST /api/switching/faults``                     control     flag a section faulted, with a reason
``DELETE /api/switching/faults/{node}``            configure   clear a fault flag, with a reason
``POST /api/switching/approvals``                  control or  the second person approves one open or
                                                   configure   close of one switch (for 15 minutes)
=================================================  ==========  ========================================

Control is the operators' permission, configure the engineers' (IEC 62351-8 roles, as
:mod:`.deps` has them). A request from the web UI (session cookie) is on the ``ui`` command path,
one with a bearer token on the ``api`` path. Every change is recorded in the event log and the
audit trail with the actor and the client address; reasons pass
:func:`~opendso.text.check_text`. An unknown switch, node, tag or document is 404, a move that
does not fit the present state (document state machine, switch already in that state, earth on a
live node) 409, bad input 400/422. The gate asks for a second person's approval on critical
switches: that person approves the open or close of that switch from their own session
(``POST /api/switching/approvals``, valid :data:`APPROVAL_TTL`, used once), and the request names
them as ``approver``. A request naming an approver who has not so approved, or naming its own
actor, is 400: nobody approves in another's name.

The app holds the dispatcher and the register in ``app.state.switching`` (a :class:`Switching`);
``opendso run`` sets one routed to its adapters (:func:`switching_for_room`). Without one, the
first request builds one with no route to the field: every operate is refused ("no telemetry
point commands switch X").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status

from opendso.errors import ForbiddenError, InputError, UnknownSwitchError, UnknownUserError
from opendso.grid.model import Grid
from opendso.operations.switching import (
    CommandPath,
    Confirmation,
    DocumentAction,
    GateConfig,
    GateRule,
    Override,
    SafetyGate,
    SwitchAction,
    SwitchingDispatcher,
    SwitchingRegister,
    SwitchingRequest,
)
from opendso.operations.switching.dispatch import PointRoute, Route, StatusReader, decision_dict
from opendso.operations.switching.documents import record_dict
from opendso.quality import Quality
from opendso.service import schemas
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.deps import ConfigureSession, ControlSession, RoomDep, ViewSession, client_ip
from opendso.service.security import Permission, Security, Session
from opendso.store.switching import SwitchingStore
from opendso.text import check_text

__all__ = ["APPROVAL_TTL", "Approvals", "Switching", "SwitchingDep", "router", "switching_for_room"]

#: How long a second person's approval of one switching operation stays valid.
APPROVAL_TTL = timedelta(minutes=15)

router = APIRouter(tags=["switching"])


class Approvals:
    """Second persons' approvals of single switching operations: recorded from their own sessions, used once."""

    def __init__(self, ttl: timedelta = APPROVAL_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], datetime] = {}  # (switch, action, approver) -> when

    def record(self, switch: str, action: str, approver: str, at: datetime) -> datetime:
        """Record ``approver``'s approval of ``action`` on ``switch``; return when it expires."""
        with self._lock:
            self._held[(switch, action, approver)] = at
        return at + self.ttl

    def holds(self, switch: str, action: str, approver: str, at: datetime) -> bool:
        """True when ``approver`` approved ``action`` on ``switch`` within the last :attr:`ttl`."""
        with self._lock:
            when = self._held.get((switch, action, approver))
        return when is not None and at - when <= self.ttl

    def use(self, switch: str, action: str, approver: str) -> None:
        """An approval is used by the request it was for: it does not approve another."""
        with self._lock:
            self._held.pop((switch, action, approver), None)


@dataclass(frozen=True)
class Switching:
    """What the switching routes use: the register of tags, documents, earths and faults, and the dispatcher."""

    register: SwitchingRegister
    dispatcher: SwitchingDispatcher
    approvals: Approvals = field(default_factory=Approvals)


def switching_for_room(
    room: ControlRoom,
    *,
    route: Route | None = None,
    setpoint_route: PointRoute | None = None,
    qualities: Callable[[], Mapping[str, Quality] | None] | None = None,
    status: StatusReader | None = None,
    config: GateConfig | None = None,
    feedback_timeout_s: float | None = None,
) -> Switching:
    """Return the register and the dispatcher of a control room (its grid, event log and audit trail).

    ``route`` sends each switch's commands to an adapter and point (None: no switch is
    commanded), ``setpoint_route`` each set-point (None: none is sent); ``qualities`` and
    ``status`` read the latest telemetry (see :class:`SwitchingDispatcher`).
    """

    def grid_now() -> Grid:
        return room.cycle.grid if room.cycle is not None else room.grid

    register = SwitchingRegister(
        SwitchingStore(room.historian.engine),
        grid_now,
        events=room.historian.events,
        audit=room.audit.append,
        qualities=qualities,
    )
    dispatcher = SwitchingDispatcher(
        SafetyGate(config or GateConfig()),
        grid_now,
        register.state,
        route or (lambda switch: None),
        events=room.historian.events,
        audit=room.audit.append,
        qualities=qualities,
        status=status,
        feedback_timeout_s=feedback_timeout_s,
        setpoint_route=setpoint_route,
    )
    return Switching(register, dispatcher)


_BUILD = threading.Lock()


def _switching(request: Request, room: RoomDep) -> Switching:
    state = request.app.state
    with _BUILD:
        held: Switching | None = getattr(state, "switching", None)
        if held is None:
            held = state.switching = switching_for_room(room)
    return held


SwitchingDep = Annotated[Switching, Depends(_switching)]


def _request(
    body: schemas.SwitchingBody, session: Session, security: Security, approvals: Approvals
) -> SwitchingRequest:
    actor = session.user.username
    overrides = tuple(Override(o.tag, check_text("override reason", o.reason, max_len=1000)) for o in body.overrides)
    confirmations = []
    for c in body.confirmations:
        try:
            rule = GateRule(c.rule)
        except ValueError:
            raise InputError(f"confirmation rule must be one of {', '.join(r.value for r in GateRule)}") from None
        confirmations.append(Confirmation(rule, check_text("confirmation reason", c.reason, max_len=1000)))
    approver = body.approver
    if approver is not None:
        if approver == actor:
            raise InputError(f"the approver must be a second person, not the actor {actor}")
        try:
            user = security.get_user(approver)
        except UnknownUserError:
            raise InputError(f"approver {approver!r} is not a user") from None
        if user.disabled or not (user.can(Permission.CONTROL) or user.can(Permission.CONFIGURE)):
            raise InputError(
                f"approver {approver!r} may not approve switching (disabled, or no control/configure role)"
            )
        if not approvals.holds(body.switch, body.action, approver, datetime.now(UTC)):
            raise InputError(
                f"approver {approver!r} has not approved {body.action} {body.switch} from their own session "
                f"in the last {int(APPROVAL_TTL.total_seconds() // 60)} minutes (POST /api/switching/approvals)"
            )
    return SwitchingRequest(
        switch=body.switch,
        action=SwitchAction(body.action),
        actor=actor,
        roles=frozenset(session.user.roles),
        overrides=overrides,
        confirmations=tuple(confirmations),
        approver=approver,
    )


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


# -- reading ---------------------------------------------------------------------------------------------
@router.get("/api/switching/state")
def switching_state(_: ViewSession, switching: SwitchingDep) -> schemas.SwitchingStatePublic:
    """Tags, safety documents (with their devices and earths), earths and fault flags."""
    return schemas.SwitchingStatePublic.model_validate(switching.register.snapshot())


# -- deciding and operating ----------------------------------------------------------------------------
@router.post("/api/switching/preview")
def preview(
    body: schemas.SwitchingBody, session: ControlSession, request: Request, switching: SwitchingDep
) -> schemas.GateDecisionPublic:
    """The gate's answer to opening or closing a switch now; nothing is sent (operator role).

    404 for an unknown switch, 409 when it already has the state asked for.
    """
    decision = switching.dispatcher.preview(_request(body, session, _security(request), switching.approvals))
    return schemas.GateDecisionPublic.model_validate(decision_dict(decision))


@router.post("/api/switching/operate")
async def operate(
    body: schemas.SwitchingBody, session: ControlSession, request: Request, switching: SwitchingDep
) -> schemas.SwitchingOutcomePublic:
    """Open or close a switch through the safety gate (operator role): the outcome, logged and audited.

    ``status`` is ``refused`` (by the gate: ``decision.rule`` says which rule and why, nothing
    was sent; or by the field), ``no_response``, ``not_executed`` or ``completed``. The path is
    ``ui`` for the web UI's session, ``api`` for a bearer token.
    """
    path = CommandPath.UI if session.kind == "cookie" else CommandPath.API
    switching_request = _request(body, session, _security(request), switching.approvals)
    if switching_request.approver is not None:
        switching.approvals.use(body.switch, body.action, switching_request.approver)
    outcome = await switching.dispatcher.execute(switching_request, path=path, source_ip=client_ip(request))
    return schemas.SwitchingOutcomePublic.model_validate(outcome.as_dict())


@router.post("/api/switching/approvals", status_code=status.HTTP_201_CREATED)
def approve_operation(
    body: schemas.ApprovalCreate, session: ViewSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """The second person approves one open or close of one switch from their own session (control or configure).

    The approval is valid for :data:`APPROVAL_TTL` and used by the first request that names its
    approver; 403 for a user who may neither control nor configure; 404 for an unknown switch.
    """
    user = session.user
    if not (user.can(Permission.CONTROL) or user.can(Permission.CONFIGURE)):
        raise ForbiddenError(f"{user.username} may not approve switching (no control or configure role)")
    grid = switching.dispatcher.grid()
    if body.switch not in set(grid.switch_names.tolist()):
        raise UnknownSwitchError(body.switch)
    now = datetime.now(UTC)
    expires = switching.approvals.record(body.switch, body.action, user.username, now)
    details = {"switch": body.switch, "action": body.action, "expires_at": expires.isoformat()}
    request.app.state.room.audit.append(
        "switching.approved", actor=user.username, element=body.switch, source_ip=client_ip(request), details=details
    )
    return {**details, "approver": user.username}


# -- tags ------------------------------------------------------------------------------------------------
@router.post("/api/switching/tags", status_code=status.HTTP_201_CREATED)
def place_tag(
    body: schemas.TagCreate, session: ControlSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Place a do-not-operate or caution tag on a switch, with its text (operator role); 404 unknown switch."""
    tag = switching.register.place_tag(
        body.switch, body.kind, body.text, actor=session.user.username, source_ip=client_ip(request)
    )
    return record_dict(tag)


@router.delete("/api/switching/tags/{tag_id}")
def remove_tag(
    tag_id: str, body: schemas.ReasonCreate, session: ControlSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Remove a tag, with a reason (operator role); 404 for an unknown tag."""
    tag = switching.register.remove_tag(tag_id, body.reason, actor=session.user.username, source_ip=client_ip(request))
    return record_dict(tag)


# -- safety documents --------------------------------------------------------------------------------------
@router.post("/api/switching/documents", status_code=status.HTTP_201_CREATED)
def create_document(
    body: schemas.DocumentCreate, session: ConfigureSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Create a safety document in draft, listing its isolating devices and earthed nodes (engineer role)."""
    doc = switching.register.create_document(
        body.kind,
        devices=body.devices,
        earths=body.earths,
        description=body.description,
        actor=session.user.username,
        source_ip=client_ip(request),
    )
    return record_dict(doc)


def _move(
    document_id: str,
    action: DocumentAction,
    session: Session,
    request: Request,
    switching: Switching,
    reason: str | None,
) -> dict[str, Any]:
    doc = switching.register.move_document(
        document_id, action, actor=session.user.username, reason=reason, source_ip=client_ip(request)
    )
    return record_dict(doc)


@router.post("/api/switching/documents/{document_id}/issue")
def issue_document(
    document_id: str,
    session: ConfigureSession,
    request: Request,
    switching: SwitchingDep,
    body: schemas.OptionalReason | None = None,
) -> dict[str, Any]:
    """Issue a draft document (engineer role): its devices must be open and its earthed nodes dead (409)."""
    return _move(document_id, DocumentAction.ISSUE, session, request, switching, body.reason if body else None)


@router.post("/api/switching/documents/{document_id}/start")
def start_document(
    document_id: str,
    session: ControlSession,
    request: Request,
    switching: SwitchingDep,
    body: schemas.OptionalReason | None = None,
) -> dict[str, Any]:
    """Work under an issued document starts (operator role); 409 from any other state."""
    return _move(document_id, DocumentAction.START, session, request, switching, body.reason if body else None)


@router.post("/api/switching/documents/{document_id}/clear")
def clear_document(
    document_id: str,
    session: ControlSession,
    request: Request,
    switching: SwitchingDep,
    body: schemas.OptionalReason | None = None,
) -> dict[str, Any]:
    """Work is done and the document cleared (operator role); its devices may be operated again."""
    return _move(document_id, DocumentAction.CLEAR, session, request, switching, body.reason if body else None)


@router.post("/api/switching/documents/{document_id}/cancel")
def cancel_document(
    document_id: str,
    body: schemas.ReasonCreate,
    session: ConfigureSession,
    request: Request,
    switching: SwitchingDep,
) -> dict[str, Any]:
    """Cancel a draft or issued document, with a reason (engineer role); 409 once work started."""
    return _move(document_id, DocumentAction.CANCEL, session, request, switching, body.reason)


# -- earths ----------------------------------------------------------------------------------------------
@router.post("/api/switching/earths", status_code=status.HTTP_201_CREATED)
def apply_earth(
    body: schemas.EarthCreate, session: ControlSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Record an earth on a node (operator role): 409 on a live or not isolated node, 404 unknown node."""
    earth = switching.register.apply_earth(
        body.node, body.kind, body.reference, actor=session.user.username, source_ip=client_ip(request)
    )
    return record_dict(earth)


@router.delete("/api/switching/earths/{node:path}")
def remove_earth(
    node: str, body: schemas.ReasonCreate, session: ControlSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Remove the earth recorded on a node, with a reason (operator role)."""
    earth = switching.register.remove_earth(
        node, body.reason, actor=session.user.username, source_ip=client_ip(request)
    )
    return record_dict(earth)


# -- fault flags -----------------------------------------------------------------------------------------
@router.post("/api/switching/faults", status_code=status.HTTP_201_CREATED)
def flag_fault(
    body: schemas.FaultCreate, session: ControlSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Flag a node (section) faulted, with a reason (operator role): no close connects it until cleared."""
    fault = switching.register.flag_faulted(
        body.node, body.reason, actor=session.user.username, source_ip=client_ip(request)
    )
    return record_dict(fault)


@router.delete("/api/switching/faults/{node:path}")
def clear_fault(
    node: str, body: schemas.ReasonCreate, session: ConfigureSession, request: Request, switching: SwitchingDep
) -> dict[str, Any]:
    """Clear a fault flag, with a reason (engineer role: an authorised user, not the operator who switches)."""
    fault = switching.register.clear_faulted(
        node, body.reason, actor=session.user.username, source_ip=client_ip(request)
    )
    return record_dict(fault)
