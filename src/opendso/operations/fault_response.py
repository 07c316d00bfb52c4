"""FLISR in the real-time loop: a protection trip detected, the fault located, isolated and supply restored.

:class:`FaultResponder` subscribes to the monitor's cycles
(:meth:`~opendso.operations.monitor.Monitor.subscribe`). A *trip* is a switch whose status went
from closed to open while its own fault-passage indicator or protection pick-up (point
``<switch>/fpi``) is picked up and the dispatcher did not command it open in the last
:data:`COMMANDED_WITHIN_S` seconds: operators' openings, and FLISR's own isolation of switches
whose indicators are still picked up, are not mistaken for trips.

After a trip the responder waits ``settle_s`` (indicators report over their own links and may
arrive a cycle later), then:

1. reads the indicators from the latest values (points of quantity ``fpi``; a value that is not
   good counts as unknown, so a lost indicator cuts no section) and plans with
   :func:`~opendso.operations.flisr.plan_flisr` on the grid as the field reports it (the tripped
   switch open; the planner takes the pre-trip state as the same with it closed);
2. flags the nodes of the located section as faulted (``flag_faulted``): the gate then refuses
   every close onto them until an authorised user clears the flag;
3. links the outage record of the trip (``outage_of``: the
   :class:`~opendso.operations.outage_tracker.OutageTracker` records it, and every restoration
   step as supply returns);
4. in ``automatic`` mode sends the plan's steps (the isolation, then the restoration) through the
   dispatcher on the FLISR path (:data:`~opendso.operations.switching.dispatch.CommandPath.FLISR`)
   with the advisory fallback: a step the gate refuses for an untrustworthy state stops the run
   and turns the rest of the plan into a proposal an operator must approve; in ``advisory`` mode
   the plan waits as a proposal until an operator approves it (:meth:`FaultResponder.approve`) or
   rejects it. Every step passes the safety gate like any other command.

Every proposal, approval, rejection and result is an event in the event log (kind ``flisr.*``).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from opendso.errors import ConflictError, NotFoundError, OpenDSOError
from opendso.measurement import Measurement
from opendso.operations.cycle import CycleResult
from opendso.operations.flisr import FlisrLimits, FlisrPlan, plan_flisr
from opendso.operations.switching.dispatch import (
    ADVISORY,
    CommandPath,
    SwitchingDispatcher,
    SwitchingOutcome,
    SwitchingStep,
    execute_steps,
)
from opendso.operations.switching.model import SwitchAction
from opendso.quality import Quality
from opendso.store.events import EventLog

__all__ = ["FaultResponder", "FlisrConfig", "FlisrMode", "FlisrProposal", "ProposalState", "indicators_from_latest"]

log = logging.getLogger(__name__)

#: The quantity of fault-passage indicator and protection pick-up points.
FPI_QUANTITY = "fpi"
#: An opening this soon after the dispatcher sent it is the command's, not a trip (seconds).
COMMANDED_WITHIN_S = 300.0


class FlisrMode(enum.StrEnum):
    """Off (trips are only reported), advisory (an operator approves each plan) or automatic."""

    OFF = "off"
    ADVISORY = "advisory"
    AUTOMATIC = "automatic"


class ProposalState(enum.StrEnum):
    """Where a FLISR plan stands."""

    PROPOSED = "proposed"
    EXECUTING = "executing"
    COMPLETED = "completed"
    STOPPED = "stopped"  # a step did not complete: the rest waits for an operator
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # supply came back otherwise before anything was sent (the breaker reclosed)
    FAILED = "failed"  # no plan could be made


@dataclass(frozen=True)
class FlisrConfig:
    """How FLISR runs: mode, the wait for indicators after a trip, the limits of restoration."""

    mode: FlisrMode = FlisrMode.ADVISORY
    settle_s: float = 2.0
    limits: FlisrLimits = field(default_factory=FlisrLimits)
    cold_load_pickup: float = 1.0
    actor: str = "flisr"
    step_settle_s: float = 10.0


@dataclass(frozen=True)
class FlisrProposal:
    """One trip's FLISR plan and what became of it."""

    id: int
    tripped: str
    tripped_at: datetime
    state: ProposalState
    plan: FlisrPlan | None = None
    error: str | None = None
    outage_id: int | None = None
    approved_by: str | None = None
    outcomes: tuple[Mapping[str, Any], ...] = ()
    restored_at: datetime | None = None

    def steps(self) -> list[SwitchingStep]:
        """The plan's switching steps in order: the isolation (opens), then the restoration."""
        if self.plan is None:
            return []
        out = [SwitchingStep(name, SwitchAction.OPEN) for name in self.plan.isolate]
        out += [SwitchingStep(name, SwitchAction(action)) for name, action in self.plan.restore]
        return out

    def to_json(self) -> dict[str, Any]:
        """Return the proposal as JSON-ready data (the API and the event log)."""
        return {
            "id": self.id,
            "tripped": self.tripped,
            "tripped_at": self.tripped_at.isoformat(),
            "state": self.state.value,
            "plan": self.plan.to_json() if self.plan is not None else None,
            "faulted_nodes": list(self.plan.faulted_nodes) if self.plan is not None else [],
            "steps": [{"switch": s.switch, "action": s.action.value} for s in self.steps()],
            "error": self.error,
            "outage_id": self.outage_id,
            "approved_by": self.approved_by,
            "outcomes": [dict(o) for o in self.outcomes],
            "restored_at": self.restored_at.isoformat() if self.restored_at else None,
        }


def indicators_from_latest(latest: Mapping[str, Measurement], fpi_points: Sequence[str]) -> dict[str, bool]:
    """The indicators as the latest values give them: point name -> picked up (good values only)."""
    out: dict[str, bool] = {}
    for name in fpi_points:
        m = latest.get(name)
        if m is None or m.value is None or Quality(int(m.quality)) & ~Quality.GOOD:
            continue
        out[name] = float(m.value) >= 0.5
    return out


#: tripped switch -> the id of the outage record of its trip, if there is one.
OutageOf = Callable[[str], int | None]
#: (faulted node names, reason, time): flag them for the gate.
FlagFaulted = Callable[[Sequence[str], str, datetime], None]


class FaultResponder:
    """Detects trips in the real-time cycles and runs FLISR on them (see the module docstring)."""

    def __init__(
        self,
        dispatcher: SwitchingDispatcher,
        *,
        latest: Callable[[], Mapping[str, Measurement]],
        fpi_points: Sequence[str],
        config: FlisrConfig | None = None,
        events: EventLog | None = None,
        flag_faulted: FlagFaulted | None = None,
        outage_of: OutageOf | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.latest = latest
        self.fpi_points = tuple(fpi_points)
        self.config = config or FlisrConfig()
        self.events = events
        self.flag_faulted = flag_faulted
        self.outage_of = outage_of
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._ids = itertools.count(1)
        self._proposals: dict[int, FlisrProposal] = {}
        self._fpi_of_switch = {p.removesuffix(f"/{FPI_QUANTITY}"): p for p in self.fpi_points}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()

    # -- queries -----------------------------------------------------------------------------------
    @property
    def proposals(self) -> list[FlisrProposal]:
        """Every proposal, the newest first."""
        return sorted(self._proposals.values(), key=lambda p: p.id, reverse=True)

    def proposal(self, proposal_id: int) -> FlisrProposal:
        """One proposal; an unknown id raises :class:`~opendso.errors.NotFoundError`."""
        found = self._proposals.get(proposal_id)
        if found is None:
            raise NotFoundError(f"no FLISR proposal {proposal_id}")
        return found

    # -- detection ---------------------------------------------------------------------------------
    def trips(self, result: CycleResult) -> list[str]:
        """The switches of this cycle's changes that opened with their own indicator picked up."""
        if not result.switch_changes:
            return []
        grid = self.dispatcher.grid()
        indicators = indicators_from_latest(self.latest(), list(self._fpi_of_switch.values()))
        out = []
        for name in result.switch_changes:
            rows = np.flatnonzero(grid.switch_names == name)
            if not rows.size or grid.switches["closed"][rows[0]]:
                continue
            point = self._fpi_of_switch.get(name)
            commanded = self.dispatcher.commanded(name, SwitchAction.OPEN, within_s=COMMANDED_WITHIN_S)
            if point is not None and indicators.get(point) and not commanded:
                out.append(name)
        return out

    def on_cycle(self, result: CycleResult) -> None:
        """Monitor subscriber: start a response for every trip of the cycle (on the running loop).

        A proposal nothing of which was sent is withdrawn when its tripped switch closes again
        otherwise (a transient fault, reclosed by the operator or the protection): its plan was
        made for a state that no longer holds.
        """
        if self.config.mode is FlisrMode.OFF:
            return
        if result.switch_changes:
            self._withdraw_outdated()
        for name in self.trips(result):
            if name in self._busy:
                continue
            self._busy.add(name)
            task = asyncio.get_running_loop().create_task(self._respond_later(name, result.time))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _withdraw_outdated(self) -> None:
        grid = self.dispatcher.grid()
        for proposal in list(self._proposals.values()):
            if proposal.state is not ProposalState.PROPOSED or proposal.outcomes:
                continue
            rows = np.flatnonzero(grid.switch_names == proposal.tripped)
            if rows.size and grid.switches["closed"][rows[0]]:
                withdrawn = replace(
                    proposal,
                    state=ProposalState.WITHDRAWN,
                    error=f"switch {proposal.tripped} closed again before the plan was approved",
                )
                self._store(withdrawn, "flisr.withdrawn")

    async def _respond_later(self, tripped: str, at: datetime) -> None:
        try:
            await asyncio.sleep(self.config.settle_s)
            await self.respond(tripped, at)
        except Exception:  # one failed response must not stop the cycle's subscribers
            log.exception("event=flisr_failed tripped=%s", tripped)
        finally:
            self._busy.discard(tripped)

    async def wait_idle(self) -> None:
        """Wait until every response started so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- response ----------------------------------------------------------------------------------
    async def respond(self, tripped: str, at: datetime) -> FlisrProposal:
        """Plan FLISR for a trip of ``tripped`` at ``at``; in automatic mode also execute it."""
        grid = self.dispatcher.grid()
        indicators = indicators_from_latest(self.latest(), self.fpi_points)
        proposal_id = next(self._ids)
        try:
            plan = await asyncio.to_thread(
                plan_flisr,
                grid,
                tripped=tripped,
                indicators=indicators,
                limits=self.config.limits,
                cold_load_pickup=self.config.cold_load_pickup,
            )
        except OpenDSOError as exc:
            proposal = FlisrProposal(proposal_id, tripped, at, ProposalState.FAILED, error=str(exc))
            self._store(proposal, "flisr.failed")
            return proposal
        outage_id = self.outage_of(tripped) if self.outage_of is not None else None
        if self.flag_faulted is not None and plan.faulted_nodes:
            self.flag_faulted(plan.faulted_nodes, f"located by FLISR after the trip of {tripped}", self.clock())
        proposal = FlisrProposal(proposal_id, tripped, at, ProposalState.PROPOSED, plan=plan, outage_id=outage_id)
        self._store(proposal, "flisr.proposed")
        if self.config.mode is FlisrMode.AUTOMATIC:
            proposal = await self._execute(proposal, actor=self.config.actor, roles=frozenset(), automatic=True)
        return proposal

    async def approve(self, proposal_id: int, *, actor: str, roles: frozenset[str] = frozenset()) -> FlisrProposal:
        """An operator approves a proposal (or the rest of a stopped one): its steps are executed."""
        proposal = self.proposal(proposal_id)
        if proposal.state not in (ProposalState.PROPOSED, ProposalState.STOPPED):
            raise ConflictError(
                f"FLISR proposal {proposal_id} is {proposal.state.value}: only a proposed one is approved"
            )
        proposal = replace(proposal, approved_by=actor)
        return await self._execute(proposal, actor=actor, roles=roles, automatic=False)

    def reject(self, proposal_id: int, *, actor: str, reason: str) -> FlisrProposal:
        """An operator rejects a proposal: nothing is sent."""
        proposal = self.proposal(proposal_id)
        if proposal.state not in (ProposalState.PROPOSED, ProposalState.STOPPED):
            raise ConflictError(
                f"FLISR proposal {proposal_id} is {proposal.state.value}: only a proposed one is rejected"
            )
        proposal = replace(proposal, state=ProposalState.REJECTED, error=f"rejected by {actor}: {reason}")
        self._store(proposal, "flisr.rejected", actor=actor)
        return proposal

    async def _execute(
        self, proposal: FlisrProposal, *, actor: str, roles: frozenset[str], automatic: bool
    ) -> FlisrProposal:
        done = {(o["switch"], o["action"]) for o in proposal.outcomes if o.get("status") == "completed"}
        steps = [s for s in proposal.steps() if (s.switch, s.action.value) not in done]
        proposal = replace(proposal, state=ProposalState.EXECUTING)
        self._proposals[proposal.id] = proposal
        outcomes: list[SwitchingOutcome] = []
        for step in steps:
            ran = await execute_steps(
                self.dispatcher,
                [step],
                actor=actor,
                path=CommandPath.FLISR,
                roles=roles,
                advisory_fallback=automatic,
                settle_s=self.config.step_settle_s,
            )
            outcomes.extend(ran)
            if not ran or not ran[-1].completed:
                break
        complete = len(outcomes) == len(steps) and all(o.completed for o in outcomes)
        state = ProposalState.COMPLETED if complete else ProposalState.STOPPED
        proposal = replace(
            proposal,
            state=state,
            outcomes=(*proposal.outcomes, *(_outcome_json(o) for o in outcomes)),
            restored_at=self.clock() if complete else None,
        )
        if not complete and outcomes and outcomes[-1].status == ADVISORY:
            proposal = replace(proposal, error=f"advisory: {outcomes[-1].decision.reason}")
        self._store(proposal, f"flisr.{state.value}", actor=actor)
        return proposal

    def _store(self, proposal: FlisrProposal, kind: str, *, actor: str | None = None) -> None:
        self._proposals[proposal.id] = proposal
        log.info("event=%s proposal=%d tripped=%s state=%s", kind, proposal.id, proposal.tripped, proposal.state)
        if self.events is not None:
            body = proposal.to_json()
            self.events.append(kind, actor=actor or self.config.actor, element=proposal.tripped, payload=body)


def _outcome_json(outcome: SwitchingOutcome) -> dict[str, Any]:
    return {
        "switch": outcome.request.switch,
        "action": outcome.request.action.value,
        "status": outcome.status,
        "reason": outcome.decision.reason
        if not outcome.decision.allowed
        else (outcome.result.reason if outcome.result else ""),
        "finished_at": outcome.finished_at.isoformat(),
        "event_seq": outcome.event_seq,
    }
