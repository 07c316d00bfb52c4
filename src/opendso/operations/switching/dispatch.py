"""The dispatcher: the one way from a switching request to the field, through the safety gate.

Every open/close, whether it comes from the web UI, the REST API, FLISR, a switching plan or a
script (:class:`CommandPath`), goes through :meth:`SwitchingDispatcher.execute`:

1. the gate decides (:meth:`~opendso.operations.switching.gate.SafetyGate.check`) on the grid as
   it is now, the stored tags, documents, earths and fault flags, and the quality of the states
   the decision depends on, built from the latest telemetry (:func:`qualities_from_latest`), so
   an invalid, intermediate, stale or manually entered state is refused;
2. a refusal is logged (event ``switching.refused`` with the rule and the reason) and audited,
   and nothing is sent; on the FLISR path with ``advisory_fallback`` a refusal for an
   untrustworthy state becomes ``advisory`` (the step is proposed to an operator, not sent);
3. an allowed request is routed to the adapter and point that command the switch (a switch
   without one is refused: "no telemetry point commands switch X") and sent with
   :meth:`~opendso.telemetry.base.TelemetryAdapter.operate_switch` (IEC 104 select-before-operate
   with its feedback timeout, Modbus writes), which ends in one of the four outcomes of
   :class:`~opendso.telemetry.commands.CommandOutcome`;
4. the outcome is checked against the telemetry: the switch's status as the latest values hold
   it (what the real-time cycle sees) when a status reader is given, else the adapter's own
   feedback; the outcome record says which (``telemetry["checked_by"]``);
5. event ``switching.<outcome>`` with the decision (overrides and confirmations with their
   reasons) and the command's result, and one audit record.

Commands are serialised (one at a time per dispatcher and event loop), so the gate decides on
the state the command is sent in. :meth:`SwitchingDispatcher.preview` gives the gate's answer
before anything is sent (the UI shows it). :func:`execute_steps` runs an ordered list of steps
(a switching plan, a FLISR isolation and restoration) through the dispatcher and stops at the
first step that does not complete.

Set-points (DER export limits) take the same road: :meth:`SwitchingDispatcher.dispatch_setpoint`
sends a value the set-point arbiter's own gate allowed
(:mod:`opendso.operations.setpoints`) to the adapter that writes the point
(``setpoint_route``, e.g. :func:`route_setpoints_by_point_map`), under the same lock, and logs
(event ``setpoint.<outcome>``) and audits it.

Nothing else in the package calls ``TelemetryAdapter.command``, ``operate_switch`` or
``send_setpoint``: a test walks the source to keep it so.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.switching.documents import AuditSink
from opendso.operations.switching.gate import SafetyGate
from opendso.operations.switching.model import (
    GateDecision,
    GateRule,
    SwitchAction,
    SwitchingRequest,
    SwitchingState,
)
from opendso.quality import Quality
from opendso.store.events import EventLog
from opendso.telemetry.base import TelemetryAdapter
from opendso.telemetry.binding import Target, bind_points
from opendso.telemetry.commands import CommandAttempt, CommandOutcome, CommandRequest, CommandResult
from opendso.telemetry.points import PointMap

__all__ = [
    "ADVISORY",
    "CommandPath",
    "PointRoute",
    "Route",
    "StatusReader",
    "Step",
    "SwitchingDispatcher",
    "SwitchingOutcome",
    "SwitchingStep",
    "decision_dict",
    "execute_steps",
    "measured_nodes",
    "qualities_from_latest",
    "route_by_point_map",
    "route_setpoints_by_point_map",
]

log = logging.getLogger(__name__)

#: The status of an outcome that was proposed to an operator instead of sent (FLISR's advisory fallback).
ADVISORY = "advisory"
#: The status of a request the gate (or the routing) refused.
REFUSED = "refused"

#: Switch name -> (adapter, point) that commands it; None when no telemetry point does.
Route = Callable[[str], tuple[TelemetryAdapter, str] | None]
#: Set-point point name -> the adapter that writes it; None when no adapter does.
PointRoute = Callable[[str], TelemetryAdapter | None]
#: Switch name -> (value, quality) of its status as the latest values hold it; None when none is held.
StatusReader = Callable[[str], tuple[float, int] | None]


class CommandPath(enum.StrEnum):
    """Where a switching request comes from; every path goes through :class:`SwitchingDispatcher`."""

    UI = "ui"
    API = "api"
    FLISR = "flisr"
    PLAN = "plan"
    SCRIPT = "script"
    ANM = "anm"  #: the set-point arbiter's writes of DER export limits (any source it merges)


@dataclass(frozen=True)
class SwitchingOutcome:
    """What came of one switching request.

    ``status``: ``refused`` (by the gate or the routing: ``result`` is None; or by the field:
    ``result.outcome`` is refused), ``advisory`` (FLISR's fallback, nothing sent), or the
    command's outcome (``no_response``, ``not_executed``, ``completed``). ``telemetry``: what the
    status of the switch said after the command (``checked_by`` names the source).
    """

    request: SwitchingRequest
    decision: GateDecision
    result: CommandResult | None
    path: CommandPath
    status: str
    requested_at: datetime
    finished_at: datetime
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    event_seq: int | None = None
    source_ip: str | None = None

    @property
    def actor(self) -> str:
        """Who asked."""
        return self.request.actor

    @property
    def completed(self) -> bool:
        """True when the command was sent, confirmed and its feedback matched."""
        return self.result is not None and self.result.outcome == CommandOutcome.COMPLETED

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain values (events, audit, API)."""
        return {
            "switch": self.request.switch,
            "action": self.request.action.value,
            "actor": self.request.actor,
            "approver": self.request.approver,
            "path": self.path.value,
            "status": self.status,
            "decision": decision_dict(self.decision),
            "result": self.result.as_dict() if self.result is not None else None,
            "telemetry": dict(self.telemetry),
            "requested_at": self.requested_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "event_seq": self.event_seq,
            "source_ip": self.source_ip,
        }


def decision_dict(decision: GateDecision) -> dict[str, Any]:
    """A gate decision as plain values (overrides and confirmations with their reasons)."""
    return {
        "switch": decision.switch,
        "action": decision.action.value,
        "allowed": decision.allowed,
        "rule": decision.rule.value if decision.rule is not None else None,
        "reason": decision.reason,
        "confirm": list(decision.confirm),
        "overrides": [{"tag": o.tag, "reason": o.reason} for o in decision.overrides],
        "confirmations": [{"rule": c.rule.value, "reason": c.reason} for c in decision.confirmations],
        "passed": [r.value for r in decision.passed],
    }


def measured_nodes(grid: Grid, point_map: PointMap) -> dict[str, str]:
    """Point name -> the node whose voltage it measures (voltage sensors placed on nodes, node voltage points)."""
    binding = bind_points(grid, point_map)
    names = grid.names_of("node")
    out: dict[str, str] = {}
    for k, point in enumerate(binding.names):
        if binding.quantities[k] != "u":
            continue
        target, component, row = int(binding.target[k]), binding.component[k], int(binding.row[k])
        if target == Target.NODE:
            out[point] = str(names[row])
        elif target == Target.SENSOR and component is not None and "voltage_sensor" in str(component):
            node_id = grid.component(str(component))["measured_object"][row]
            out[point] = str(names[int(grid.node_positions([node_id])[0])])
    return out


def qualities_from_latest(
    latest: Mapping[str, Measurement],
    point_map: PointMap,
    *,
    nodes: Mapping[str, str] | None = None,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
) -> dict[str, Quality]:
    """The quality of each switch's status and each measured node, from the latest values (for the gate).

    A switch's quality is its status point's (quantity ``switch``, element the switch's name); a
    node's is the worst (bitwise OR) of the points ``nodes`` maps to it (point name -> node name,
    see :func:`measured_nodes`). A point without a value yet is left out, so the gate calls its
    state unknown. With ``stale_after``, a value older than that at ``now`` is marked stale.
    """
    node_of = nodes or {}
    out: dict[str, Quality] = {}
    for point in point_map.points:
        is_switch = point.quantity == "switch"
        key = point.element if is_switch else node_of.get(point.name)
        if key is None:
            continue
        m = latest.get(point.name)
        if m is None:
            continue
        quality = Quality(int(m.quality))
        if stale_after is not None and now is not None and now - m.time > stale_after:
            quality |= Quality.STALE
        out[key] = quality if is_switch else out.get(key, Quality.GOOD) | quality
    return out


def route_by_point_map(adapters: Iterable[TelemetryAdapter], point_map: PointMap) -> Route:
    """Route each switch to the adapter that reads its status point (``<element>``, quantity ``switch``).

    An adapter is matched to a point by its ``source`` (the connection it reads); adapters
    without one (in-process) are matched when they are the only adapter.
    """
    by_source: dict[str, TelemetryAdapter] = {}
    listed = list(adapters)
    for each in listed:
        source = getattr(each, "source", None)
        if isinstance(source, str):
            by_source[source] = each
    table: dict[str, tuple[TelemetryAdapter, str]] = {}
    for point in point_map.points:
        if point.quantity != "switch":
            continue
        adapter: TelemetryAdapter | None = by_source.get(point.source)
        if adapter is None and len(listed) == 1 and not by_source:
            adapter = listed[0]
        if adapter is not None:
            table.setdefault(point.element, (adapter, point.name))
    return table.get


def route_setpoints_by_point_map(
    adapters: Iterable[TelemetryAdapter], point_map: PointMap, *, quantities: Iterable[str] = ("p_limit",)
) -> PointRoute:
    """Route each set-point point (of ``quantities``) to the adapter that reads its connection.

    Adapters are matched to points as :func:`route_by_point_map` does.
    """
    wanted = set(quantities)
    listed = list(adapters)
    by_source = {s: a for a in listed if isinstance(s := getattr(a, "source", None), str)}
    table: dict[str, TelemetryAdapter] = {}
    for point in point_map.points:
        if point.quantity not in wanted:
            continue
        adapter: TelemetryAdapter | None = by_source.get(point.source)
        if adapter is None and len(listed) == 1 and not by_source:
            adapter = listed[0]
        if adapter is not None:
            table[point.name] = adapter
    return table.get


class SwitchingDispatcher:
    """The one path from a switching request to the field (see the module docstring).

    ``grid`` returns the grid as it is now; ``state`` the stored tags, documents, earths and
    fault flags (e.g. :meth:`SwitchingRegister.state`); ``qualities`` the quality of switch and
    node states from the latest telemetry (None, or returning None: the model's own states are
    trusted, for studies); ``route`` the adapter and point of a switch; ``status`` the switch's
    status as the latest values hold it; ``events`` and ``audit`` record every decision and
    outcome; ``feedback_timeout_s`` and ``select_before_operate`` go to the adapter (None: its
    defaults). ``setpoint_route`` gives the adapter that writes a set-point point
    (:meth:`dispatch_setpoint`; None: no set-point is routed).
    """

    def __init__(
        self,
        gate: SafetyGate,
        grid: Callable[[], Grid],
        state: Callable[[], SwitchingState],
        route: Route,
        *,
        events: EventLog | None = None,
        audit: AuditSink | None = None,
        qualities: Callable[[], Mapping[str, Quality] | None] | None = None,
        status: StatusReader | None = None,
        feedback_timeout_s: float | None = None,
        select_before_operate: bool | None = None,
        clock: Callable[[], datetime] | None = None,
        setpoint_route: PointRoute | None = None,
    ) -> None:
        self.gate = gate
        self.setpoint_route = setpoint_route
        self.grid = grid
        self.state = state
        self.route = route
        self.events = events
        self.audit = audit
        self.qualities = qualities
        self.status = status
        self.feedback_timeout_s = feedback_timeout_s
        self.select_before_operate = select_before_operate
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._sent: dict[str, tuple[SwitchAction, float]] = {}  # switch -> last action sent, monotonic time

    # -- deciding -----------------------------------------------------------------------------------
    def current_state(self) -> SwitchingState:
        """The switching state the gate decides on now: stored records and the qualities of the telemetry."""
        state = self.state()
        if self.qualities is not None:
            state = replace(state, qualities=self.qualities())
        return state

    def preview(self, request: SwitchingRequest) -> GateDecision:
        """The gate's answer to ``request`` now, before anything is sent (what the UI shows).

        An allowed request for a switch that no telemetry point commands is refused here too
        (no rule: nothing could be sent). Unknown switch: :class:`UnknownSwitchError`; a switch
        already in the requested state: :class:`ConflictError`.
        """
        decision = self.gate.check(self.grid(), request, state=self.current_state())
        if decision.allowed and self.route(request.switch) is None:
            return replace(decision, allowed=False, reason=f"no telemetry point commands switch {request.switch}")
        return decision

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    # -- sending ------------------------------------------------------------------------------------
    async def execute(
        self,
        request: SwitchingRequest,
        *,
        path: CommandPath,
        advisory_fallback: bool = False,
        source_ip: str | None = None,
    ) -> SwitchingOutcome:
        """Decide, and when allowed send, one request; log and audit it (see the module docstring).

        ``source_ip`` is the client's address for the audit trail (API and UI requests).
        """
        path = CommandPath(path)
        async with self._lock():
            requested_at = self.clock()
            decision = await asyncio.to_thread(self.preview, request)
            if not decision.allowed:
                advisory = advisory_fallback and decision.rule is GateRule.TRUSTWORTHY_STATE
                outcome = SwitchingOutcome(
                    request,
                    decision,
                    None,
                    path,
                    ADVISORY if advisory else REFUSED,
                    requested_at,
                    self.clock(),
                    source_ip=source_ip,
                )
                return await asyncio.to_thread(self._record, outcome)
            routed = self.route(request.switch)
            assert routed is not None  # preview refused an unrouted switch
            adapter, point = routed
            self._sent[request.switch] = (request.action, time.monotonic())
            result = await adapter.operate_switch(
                point,
                closed=request.action is SwitchAction.CLOSE,
                select_before_operate=self.select_before_operate,
                feedback_timeout_s=self.feedback_timeout_s,
            )
            telemetry = self._telemetry(request, result)
            outcome = SwitchingOutcome(
                request,
                decision,
                result,
                path,
                str(result.outcome),
                requested_at,
                self.clock(),
                telemetry,
                None,
                source_ip,
            )
            return await asyncio.to_thread(self._record, outcome)

    async def dispatch_setpoint(
        self,
        point: str,
        value: float,
        *,
        path: CommandPath,
        actor: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
        tolerance: float | None = None,
        select_before_operate: bool | None = None,
        record: bool = True,
    ) -> CommandResult:
        """Send set-point ``value`` to ``point``, which a gate of the caller's already allowed; log and audit it.

        The set-point arbiter (:class:`~opendso.operations.setpoints.arbiter.SetpointArbiter`) is
        the caller: its gate decided, this sends, under the dispatcher's lock. A point no adapter
        writes is refused (nothing sent). ``details`` (the arbiter's decision and the requests
        merged) go into the event (``setpoint.<outcome>``) and the audit record. ``record=False``
        (a heartbeat: the value in force written again to feed the DER's watchdog) leaves the event
        log and the audit trail out unless the write does not complete.
        """
        path = CommandPath(path)
        async with self._lock():
            adapter = self.setpoint_route(point) if self.setpoint_route is not None else None
            if adapter is None:
                attempt = CommandAttempt(CommandRequest.setpoint(point, value), "-")
                result = attempt.refused(f"no telemetry adapter writes set-point point {point}")
            else:
                result = await adapter.send_setpoint(
                    point,
                    value,
                    select_before_operate=self.select_before_operate
                    if select_before_operate is None
                    else select_before_operate,
                    feedback_timeout_s=self.feedback_timeout_s,
                    tolerance=tolerance,
                )
            body: dict[str, Any] = {
                "point": point,
                "value": value,
                "path": path.value,
                "actor": actor,
                "reason": reason,
                "status": str(result.outcome),
                "result": result.as_dict(),
                **dict(details or {}),
            }
            if record or not result.completed:
                await asyncio.to_thread(self._record_setpoint, body)
            else:
                log.debug("event=setpoint_heartbeat point=%s value=%g", point, value)
            return result

    def _record_setpoint(self, body: dict[str, Any]) -> None:
        kind = f"setpoint.{body['status']}"
        if self.events is not None:
            self.events.append(kind, actor=body["actor"], element=body["point"], payload=body)
        if self.audit is not None:
            self.audit(
                kind,
                actor=body["actor"],
                element=body["point"],
                result=body["status"],
                source_ip=None,
                reason=body["reason"],
                details=body,
            )

    def commanded(self, switch: str, action: SwitchAction, *, within_s: float) -> bool:
        """True when this dispatcher sent ``action`` to ``switch`` within the last ``within_s`` seconds.

        A change the control room commanded is not a trip: FLISR's detection asks this, so the
        switches it opens to isolate a fault (their indicators still picked up) are not new trips.
        """
        sent = self._sent.get(switch)
        return sent is not None and sent[0] is action and time.monotonic() - sent[1] <= within_s

    async def settled(self, switch: str, *, closed: bool, timeout_s: float = 5.0) -> bool:
        """Wait until the grid as it is now (the cycle's, following the field) shows ``switch`` closed or open.

        Return False when ``timeout_s`` passed first. Steps after a completed one wait for it, so
        the gate decides the next step on the state the field reports.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            grid = self.grid()
            rows = (grid.switch_names == switch).nonzero()[0]
            if rows.size and bool(grid.switches["closed"][rows[0]]) == closed:
                return True
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.05)

    def _telemetry(self, request: SwitchingRequest, result: CommandResult) -> dict[str, Any]:
        want = 1.0 if request.action is SwitchAction.CLOSE else 0.0
        held = self.status(request.switch) if self.status is not None else None
        if held is not None:
            value, quality = held
            return {
                "checked_by": "latest_values",
                "value": value,
                "quality": int(quality),
                "agrees": bool(int(quality) == Quality.GOOD and value == want),
                "adapter_feedback": result.feedback,
            }
        return {
            "checked_by": "adapter_feedback",
            "value": result.feedback,
            "quality": None,
            "agrees": None if result.feedback is None else result.feedback == want,
            "adapter_feedback": result.feedback,
        }

    def _record(self, outcome: SwitchingOutcome) -> SwitchingOutcome:
        body = outcome.as_dict()
        kind = f"switching.{outcome.status}"
        seq = None
        if self.events is not None:
            seq = self.events.append(kind, actor=outcome.actor, element=outcome.request.switch, payload=body).seq
        if self.audit is not None:
            reasons = [o.reason for o in outcome.decision.overrides] + [
                c.reason for c in outcome.decision.confirmations
            ]
            self.audit(
                kind,
                actor=outcome.actor,
                element=outcome.request.switch,
                result=outcome.status,
                source_ip=outcome.source_ip,
                reason=outcome.decision.reason if not outcome.decision.allowed else "; ".join(reasons) or None,
                details=body,
            )
        return replace(outcome, event_seq=seq)


class Step(Protocol):
    """A remote step of an ordered list (a switching plan's :class:`~.plans.PlanStep` fits)."""

    @property
    def switch(self) -> str: ...

    @property
    def action(self) -> SwitchAction: ...

    def request(self, actor: str, roles: Iterable[str] = (), approver: str | None = None) -> SwitchingRequest: ...


@dataclass(frozen=True)
class SwitchingStep:
    """One remote step: open or close one switch (FLISR's isolation and restoration, scripts)."""

    switch: str
    action: SwitchAction

    def request(self, actor: str, roles: Iterable[str] = (), approver: str | None = None) -> SwitchingRequest:
        """Return the gate's request for this step by ``actor``."""
        return SwitchingRequest(self.switch, SwitchAction(self.action), actor, frozenset(roles), approver=approver)


async def execute_steps(
    dispatcher: SwitchingDispatcher,
    steps: Sequence[Step],
    *,
    actor: str,
    path: CommandPath,
    roles: frozenset[str] = frozenset(),
    approver: str | None = None,
    advisory_fallback: bool = False,
    settle_s: float = 5.0,
) -> list[SwitchingOutcome]:
    """Run ``steps`` in order through the dispatcher; stop after the first step that does not complete.

    The executor of switching plans (``path=CommandPath.PLAN``) and of FLISR's isolation and
    restoration (``CommandPath.FLISR``, with ``advisory_fallback`` in automatic mode): each step is
    one request that the gate decides on the state the steps before it left; after a completed
    step it waits up to ``settle_s`` for the grid to show it, and stops when it does not.
    """
    done: list[SwitchingOutcome] = []
    for step in steps:
        request = step.request(actor, roles, approver)
        outcome = await dispatcher.execute(request, path=path, advisory_fallback=advisory_fallback)
        done.append(outcome)
        if not outcome.completed:
            break
        if not await dispatcher.settled(step.switch, closed=step.action is SwitchAction.CLOSE, timeout_s=settle_s):
            break
    return done
