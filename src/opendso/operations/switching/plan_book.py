"""The book of switching plans: every plan transition loaded, checked, stored, logged and audited in one place.

:class:`PlanBook` joins the pure plan records (:mod:`.plans`), their store
(:class:`~opendso.store.plans.PlanStore`) and the dispatcher (:class:`.dispatch.SwitchingDispatcher`):

- ``create``/``edit``/``simulate``/``approve``/``cancel`` are the engineer's (the API checks the
  configure permission); ``approve`` needs a second person and a feasible simulation of the steps
  as they stand;
- ``start``, ``execute_step`` (a remote step: sent through the dispatcher on the ``plan`` command
  path, so the gate decides again on the live state) and ``confirm_manual`` (a field crew's step:
  the gate checks it on the live state, then the switch's state is entered as the crew reports
  it, marked as manually entered, when no telemetry reports it), and ``abort`` are the operator's;
- each change is written with the version the caller read (a concurrent change is a
  :class:`~opendso.errors.ConflictError`), then logged (event ``plan.<what>``) and audited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opendso.errors import ConflictError
from opendso.operations.switching.dispatch import CommandPath, SwitchingDispatcher, SwitchingOutcome
from opendso.operations.switching.documents import AuditSink
from opendso.operations.switching.plans import (
    PlanState,
    PlanStep,
    StepKind,
    SwitchingPlan,
    check_plan_switches,
    simulate_plan,
)
from opendso.store.events import EventLog
from opendso.store.plans import PlanRecord, PlanStore

__all__ = ["PlanBook", "StepResult"]

#: (switch name, closed): enter a switch state by hand; raises ConflictError when telemetry reports the switch.
EnterManual = Callable[[str, bool], None]


@dataclass(frozen=True)
class StepResult:
    """A plan after one step, with the dispatcher's outcome of a remote step (None for a manual one)."""

    plan: SwitchingPlan
    version: int
    outcome: SwitchingOutcome | None


class PlanBook:
    """Switching plans of one control room (see the module docstring)."""

    def __init__(
        self,
        store: PlanStore,
        dispatcher: SwitchingDispatcher,
        *,
        events: EventLog | None = None,
        audit: AuditSink | None = None,
        enter_manual: EnterManual | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.audit = audit
        self.enter_manual = enter_manual
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    # -- reading ---------------------------------------------------------------------------------
    def get(self, plan_id: str) -> tuple[SwitchingPlan, int]:
        """A plan and its version; 404 when unknown."""
        record = self.store.get(plan_id)
        return SwitchingPlan.from_json(record.body), record.version

    def list(self, *, state: str | None = None, limit: int = 100) -> list[tuple[SwitchingPlan, int]]:
        """Plans, the most recently changed first."""
        if state is not None:
            state = PlanState(state).value
        return [(SwitchingPlan.from_json(r.body), r.version) for r in self.store.list(state=state, limit=limit)]

    # -- engineering -------------------------------------------------------------------------------
    def create(
        self, title: str, steps: Sequence[PlanStep], *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """A new draft by ``actor``; the steps' switches must exist (404 naming the step)."""
        self._check_switches(steps)
        plan = SwitchingPlan.new(self.store.new_id(), title, actor, steps, self.clock())
        record = self.store.add(plan.to_json(), self.clock())
        self._log("created", plan, actor, source_ip)
        return plan, record.version

    def edit(
        self, plan_id: str, version: int, steps: Sequence[PlanStep], *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Replace a draft's steps (its simulation is discarded)."""
        self._check_switches(steps)
        return self._change(plan_id, version, lambda p: p.edit(steps, actor, self.clock()), "edited", actor, source_ip)

    def simulate(
        self, plan_id: str, version: int, *, actor: str, roles: Iterable[str] = (), source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Simulate the steps on the grid as it is now, each through the gate; the result is kept on the plan."""

        def run(plan: SwitchingPlan) -> SwitchingPlan:
            sim = simulate_plan(
                self.dispatcher.grid(),
                plan.steps,
                state=self.dispatcher.state(),
                gate=self.dispatcher.gate,
                actor=actor,
                roles=roles,
                approver=plan.approver,
            )
            return plan.with_simulation(sim, actor, self.clock())

        return self._change(plan_id, version, run, "simulated", actor, source_ip)

    def approve(
        self, plan_id: str, version: int, *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Approve a draft: a second person, on a feasible simulation of exactly these steps."""
        return self._change(plan_id, version, lambda p: p.approve(actor, self.clock()), "approved", actor, source_ip)

    def cancel(
        self, plan_id: str, version: int, reason: str, *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Cancel a plan not started, with a reason."""
        return self._change(
            plan_id, version, lambda p: p.cancel(actor, self.clock(), reason), "cancelled", actor, source_ip
        )

    # -- operating ----------------------------------------------------------------------------------
    def start(
        self, plan_id: str, version: int, *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Begin executing an approved plan."""
        return self._change(plan_id, version, lambda p: p.start(actor, self.clock()), "started", actor, source_ip)

    def abort(
        self, plan_id: str, version: int, reason: str, *, actor: str, source_ip: str | None = None
    ) -> tuple[SwitchingPlan, int]:
        """Abort an executing plan, with a reason."""
        return self._change(
            plan_id, version, lambda p: p.abort(actor, self.clock(), reason), "aborted", actor, source_ip
        )

    async def execute_step(
        self,
        plan_id: str,
        version: int,
        number: int,
        *,
        actor: str,
        roles: Iterable[str] = (),
        source_ip: str | None = None,
    ) -> StepResult:
        """Send remote step ``number`` (the next one) through the dispatcher; record whether it completed."""
        plan, current = self.get(plan_id)
        self._expect_version(plan_id, version, current)
        step = self._next(plan, number, StepKind.REMOTE)
        outcome = await self.dispatcher.execute(
            step.request(actor, roles, approver=plan.approver), path=CommandPath.PLAN, source_ip=source_ip
        )
        detail = outcome.status if outcome.completed else f"{outcome.status}: {_reason(outcome)}"
        if outcome.completed:
            changed = plan.step_done(number, actor, self.clock(), detail)
        else:
            changed = plan.step_failed(number, actor, self.clock(), detail)
        record = self.store.replace(plan_id, current, changed.to_json(), self.clock())
        self._log(
            "step_completed" if outcome.completed else "step_failed",
            changed,
            actor,
            source_ip,
            step=number,
            detail=detail,
        )
        return StepResult(changed, record.version, outcome)

    def confirm_manual(
        self,
        plan_id: str,
        version: int,
        number: int,
        note: str,
        *,
        actor: str,
        roles: Iterable[str] = (),
        source_ip: str | None = None,
    ) -> StepResult:
        """Record a field crew's manual step ``number`` (the next one) as done, after the gate allows it.

        The gate decides on the live state as for a remote step; a refusal is recorded as a failed
        step and raised as :class:`~opendso.errors.ConflictError` with the rule's reason. The
        switch's state is then entered by hand when no telemetry reports it.
        """
        plan, current = self.get(plan_id)
        self._expect_version(plan_id, version, current)
        step = self._next(plan, number, StepKind.MANUAL)
        request = step.request(actor, roles, approver=plan.approver)
        decision = self.dispatcher.gate.check(self.dispatcher.grid(), request, state=self.dispatcher.current_state())
        if not decision.allowed:
            failed = plan.step_failed(number, actor, self.clock(), f"refused by {decision.rule}: {decision.reason}")
            self.store.replace(plan_id, current, failed.to_json(), self.clock())
            self._log("step_failed", failed, actor, source_ip, step=number, detail=decision.reason)
            raise ConflictError(
                f"step {number} of plan {plan_id} refused by the gate ({decision.rule}): {decision.reason}"
            )
        if self.enter_manual is not None:
            # a switch whose telemetry reports the crew's operation itself is not entered by hand
            with contextlib.suppress(ConflictError):
                self.enter_manual(step.switch, step.action.value == "close")
        done = plan.step_done(number, actor, self.clock(), f"crew confirmed: {note}".rstrip(": "))
        record = self.store.replace(plan_id, current, done.to_json(), self.clock())
        self._log("step_confirmed", done, actor, source_ip, step=number, detail=note)
        return StepResult(done, record.version, None)

    # -- internals ---------------------------------------------------------------------------------
    def _check_switches(self, steps: Sequence[PlanStep]) -> None:
        check_plan_switches(self.dispatcher.grid(), steps)

    @staticmethod
    def _expect_version(plan_id: str, version: int, current: int) -> None:
        if version != current:
            raise ConflictError(
                f"plan {plan_id} was changed by someone else (version {current}, not {version}): reload it"
            )

    @staticmethod
    def _next(plan: SwitchingPlan, number: int, kind: StepKind) -> PlanStep:
        if plan.state is not PlanState.EXECUTING:
            raise ConflictError(f"plan {plan.id} is {plan.state.value}: execute a step needs it executing")
        if number != plan.next_number:
            raise ConflictError(f"plan {plan.id}: step {number} is not the next step (step {plan.next_number} is)")
        step = plan.steps[number - 1]
        if step.kind is not kind:
            raise ConflictError(f"plan {plan.id}: step {number} is a {step.kind.value} step")
        return step

    def _change(
        self,
        plan_id: str,
        version: int,
        transition: Callable[[SwitchingPlan], SwitchingPlan],
        what: str,
        actor: str,
        source_ip: str | None,
    ) -> tuple[SwitchingPlan, int]:
        plan, current = self.get(plan_id)
        self._expect_version(plan_id, version, current)
        changed = transition(plan)
        record: PlanRecord = self.store.replace(plan_id, current, changed.to_json(), self.clock())
        self._log(what, changed, actor, source_ip)
        return changed, record.version

    def _log(
        self,
        what: str,
        plan: SwitchingPlan,
        actor: str,
        source_ip: str | None,
        *,
        step: int | None = None,
        detail: str | None = None,
    ) -> None:
        payload: dict[str, Any] = {"plan": plan.id, "title": plan.title, "state": plan.state.value, "step": step}
        if detail:
            payload["detail"] = detail
        if self.events is not None:
            self.events.append(f"plan.{what}", actor=actor, element=plan.id, payload=payload)
        if self.audit is not None:
            self.audit(
                f"plan.{what}", actor=actor, element=plan.id, source_ip=source_ip, reason=detail, details=payload
            )


def _reason(outcome: SwitchingOutcome) -> str:
    if not outcome.decision.allowed:
        return outcome.decision.reason
    return outcome.result.reason if outcome.result is not None else ""
