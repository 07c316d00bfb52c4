"""Switching plans: prepared by an engineer, simulated through the gate, approved by a second person, executed.

A :class:`SwitchingPlan` is an ordered list of :class:`PlanStep` (open or close one switch), each
either *remote* (sent through the command path by the control room) or *manual* (done by a field
crew, whose confirmation the operator records; the state it sets is then marked as manually
entered). The plan moves through :class:`PlanState`::

    draft --approve--> approved --start--> executing --last step done--> completed
      |                    |                   |
      +------cancel--------+                   +--abort--> aborted

- **draft**: the author (an engineer) edits the steps. Every edit discards the approval and the
  last simulation.
- **simulate** (:func:`simulate_plan`): the steps are applied to the model one after another and
  every step's request goes through :meth:`~opendso.operations.switching.gate.SafetyGate.check` on
  the state the steps before it left, so each post-state passes the gate's rules (earthing,
  device capability, paralleling, limits, ...). The simulation stops at the first refused step
  and says which rule refused and why.
- **approve**: by a second person (not the author and not the last editor), only when the
  simulation of exactly the present steps found every step allowed.
- **execute**: an operator runs the next step only, with an explicit confirmation; a remote step
  goes through the gate again on the live state (the field may have changed since the
  simulation) and then to the field; a step that does not complete stays the next step (retry)
  until the operator aborts the plan.
- **archive**: every action is a :class:`PlanEntry` in :attr:`SwitchingPlan.log` (who, when,
  what, the gate's or the field's answer); the plan and its log are never deleted.

The records are immutable: every transition returns a new plan, so a store can compare and
swap, and the JSON form (:meth:`SwitchingPlan.to_json`, :meth:`SwitchingPlan.from_json`) is what
the database keeps and the API sends. A transition that does not fit the plan's state raises
:class:`~opendso.errors.ConflictError` naming the state and the transition; a step naming a switch
the grid lacks raises :class:`~opendso.errors.UnknownSwitchError` with the step's number.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from opendso.errors import ConflictError, InputError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.operations.switching.gate import SafetyGate
from opendso.operations.switching.model import (
    Confirmation,
    GateDecision,
    GateRule,
    Override,
    SwitchAction,
    SwitchingRequest,
    SwitchingState,
)
from opendso.text import check_text
from opendso.timeutil import parse_time, require_aware

__all__ = [
    "PlanEntry",
    "PlanSimulation",
    "PlanState",
    "PlanStep",
    "StepKind",
    "StepSimulation",
    "SwitchingPlan",
    "check_plan_switches",
    "simulate_plan",
]

#: Most steps a plan may hold (a switching programme of a primary substation rarely needs 100).
MAX_STEPS = 500


class StepKind(enum.StrEnum):
    """Who operates the switch: the control room over telemetry, or a field crew on site."""

    REMOTE = "remote"
    MANUAL = "manual"


class PlanState(enum.StrEnum):
    """The states of a switching plan."""

    DRAFT = "draft"
    APPROVED = "approved"
    EXECUTING = "executing"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PlanStep:
    """One step: open or close ``switch``, remotely or by a crew, with what the engineer accepted."""

    switch: str
    action: SwitchAction
    kind: StepKind = StepKind.REMOTE
    instruction: str = ""
    overrides: tuple[Override, ...] = ()
    confirmations: tuple[Confirmation, ...] = ()

    def request(self, actor: str, roles: Iterable[str] = (), approver: str | None = None) -> SwitchingRequest:
        """Return the gate's request for this step by ``actor``."""
        return SwitchingRequest(
            switch=self.switch,
            action=self.action,
            actor=actor,
            roles=frozenset(roles),
            overrides=self.overrides,
            confirmations=self.confirmations,
            approver=approver,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the step as JSON-ready data."""
        return {
            "switch": self.switch,
            "action": self.action.value,
            "kind": self.kind.value,
            "instruction": self.instruction,
            "overrides": [{"tag": o.tag, "reason": o.reason} for o in self.overrides],
            "confirmations": [{"rule": c.rule.value, "reason": c.reason} for c in self.confirmations],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, number: int = 0) -> PlanStep:
        """Read a step; a malformed one raises :class:`~opendso.errors.InputError` naming its number."""
        where = f"step {number}" if number else "step"
        try:
            switch = str(data["switch"]).strip()
            action = SwitchAction(str(data["action"]))
            kind = StepKind(str(data.get("kind", StepKind.REMOTE.value)))
            overrides = tuple(Override(str(o["tag"]), str(o["reason"])) for o in data.get("overrides", ()))
            confirmations = tuple(
                Confirmation(GateRule(str(c["rule"])), str(c["reason"])) for c in data.get("confirmations", ())
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
        if not switch:
            raise InputError(f"{where}: the switch is empty")
        return cls(switch, action, kind, str(data.get("instruction", "")), overrides, confirmations)


@dataclass(frozen=True)
class StepSimulation:
    """The gate's decision on one step of a simulation, on the state the steps before it left."""

    number: int
    step: PlanStep
    decision: GateDecision

    def to_json(self) -> dict[str, Any]:
        """Return the step's simulation as JSON-ready data."""
        d = self.decision
        return {
            "number": self.number,
            "switch": self.step.switch,
            "action": self.step.action.value,
            "allowed": d.allowed,
            "rule": d.rule.value if d.rule else None,
            "reason": d.reason,
            "confirm": list(d.confirm),
            "passed": [r.value for r in d.passed],
            "overrides": [{"tag": o.tag, "reason": o.reason} for o in d.overrides],
            "confirmations": [{"rule": c.rule.value, "reason": c.reason} for c in d.confirmations],
        }


@dataclass(frozen=True)
class PlanSimulation:
    """A plan's steps simulated on the model: one decision per step up to the first refusal."""

    steps: tuple[StepSimulation, ...]
    total: int

    @property
    def feasible(self) -> bool:
        """True when every step was simulated and allowed."""
        return len(self.steps) == self.total and all(s.decision.allowed for s in self.steps)

    @property
    def refusal(self) -> StepSimulation | None:
        """The step the gate refused, if any."""
        return next((s for s in self.steps if not s.decision.allowed), None)

    def to_json(self) -> dict[str, Any]:
        """Return the simulation as JSON-ready data."""
        return {"feasible": self.feasible, "total": self.total, "steps": [s.to_json() for s in self.steps]}


def simulate_plan(
    grid: Grid,
    steps: Sequence[PlanStep],
    *,
    state: SwitchingState,
    gate: SafetyGate,
    actor: str,
    roles: Iterable[str] = (),
    approver: str | None = None,
) -> PlanSimulation:
    """Apply ``steps`` to ``grid`` one after another, each through ``gate``; stop at the first refusal.

    A step that asks for the state its switch already has at that point is refused (as the
    TRUSTWORTHY_STATE rule: the plan does not fit the state it would run on), so a plan written for
    another switching state is caught before approval. ``state.qualities`` is taken as ``None``
    (a study on the model's states: the live qualities are checked again at execution).
    """
    names = grid.switch_names
    check_plan_switches(grid, steps)
    study_state = replace(state, qualities=None)
    closed = grid.switches["closed"].copy()
    current = grid
    out: list[StepSimulation] = []
    for number, step in enumerate(steps, start=1):
        row = int(np.flatnonzero(names == step.switch)[0])
        request = step.request(actor, roles, approver)
        try:
            decision = gate.check(current, request, state=study_state)
        except ConflictError as exc:
            decision = GateDecision(
                switch=step.switch,
                action=step.action,
                allowed=False,
                rule=GateRule.TRUSTWORTHY_STATE,
                reason=f"step {number}: {exc}",
            )
        out.append(StepSimulation(number, step, decision))
        if not decision.allowed:
            break
        closed[row] = 1 if step.action is SwitchAction.CLOSE else 0
        current = grid.with_switch_states(closed)
    return PlanSimulation(tuple(out), len(steps))


def check_plan_switches(grid: Grid, steps: Sequence[PlanStep]) -> None:
    """Raise :class:`~opendso.errors.UnknownSwitchError` naming the first step whose switch ``grid`` lacks."""
    known = set(grid.switch_names.tolist())
    for number, step in enumerate(steps, start=1):
        if step.switch not in known:
            raise UnknownSwitchError(f"step {number}: {step.switch}")


@dataclass(frozen=True)
class PlanEntry:
    """One line of a plan's archive: who did what, when, and the answer."""

    at: datetime
    actor: str
    what: str
    step: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the entry as JSON-ready data."""
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "what": self.what,
            "step": self.step,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanEntry:
        """Read an entry."""
        step = data.get("step")
        return cls(
            parse_time(str(data["at"]), "a plan entry's time"),
            str(data["actor"]),
            str(data["what"]),
            None if step is None else int(step),
            str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class SwitchingPlan:
    """A switching plan and its archive; transitions return new plans (see the module docstring)."""

    id: str
    title: str
    author: str
    steps: tuple[PlanStep, ...] = ()
    state: PlanState = PlanState.DRAFT
    editor: str = ""
    approver: str | None = None
    simulated: PlanSimulation | None = None
    done: int = 0
    log: tuple[PlanEntry, ...] = field(default=())

    # -- queries ---------------------------------------------------------------------------------
    @property
    def next_step(self) -> PlanStep | None:
        """The step to execute next, None when none is left."""
        return self.steps[self.done] if self.done < len(self.steps) else None

    @property
    def next_number(self) -> int:
        """The next step's number (1-based)."""
        return self.done + 1

    # -- transitions -----------------------------------------------------------------------------
    @classmethod
    def new(cls, plan_id: str, title: str, author: str, steps: Sequence[PlanStep], at: datetime) -> SwitchingPlan:
        """Return a new draft by ``author``."""
        title = check_text("the plan's title", title, max_len=200)
        _check_count(steps)
        return cls(
            id=plan_id,
            title=title,
            author=author,
            steps=tuple(steps),
            editor=author,
            log=(PlanEntry(require_aware(at, "at"), author, "created", detail=f"{len(steps)} step(s)"),),
        )

    def edit(self, steps: Sequence[PlanStep], actor: str, at: datetime) -> SwitchingPlan:
        """Replace the steps of a draft; the simulation and any approval are discarded."""
        self._expect("edit", PlanState.DRAFT)
        _check_count(steps)
        return replace(
            self,
            steps=tuple(steps),
            editor=actor,
            simulated=None,
            log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "edited", detail=f"{len(steps)} step(s)")),
        )

    def with_simulation(self, simulation: PlanSimulation, actor: str, at: datetime) -> SwitchingPlan:
        """Record a simulation of the present steps."""
        self._expect("simulate", PlanState.DRAFT, PlanState.APPROVED)
        refusal = simulation.refusal
        detail = (
            "every step allowed"
            if simulation.feasible
            else f"step {refusal.number} refused by {refusal.decision.rule}: {refusal.decision.reason}"
            if refusal is not None
            else "not every step simulated"
        )
        return replace(
            self,
            simulated=simulation,
            log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "simulated", detail=detail)),
        )

    def approve(self, actor: str, at: datetime) -> SwitchingPlan:
        """Approve a draft: by a second person, on a feasible simulation of exactly these steps."""
        self._expect("approve", PlanState.DRAFT)
        if actor in (self.author, self.editor):
            raise ConflictError(
                f"plan {self.id}: the approver must be a second person, not the author or last editor ({actor})"
            )
        sim = self.simulated
        if (
            sim is None
            or tuple(s.step for s in sim.steps) != self.steps[: len(sim.steps)]
            or sim.total != len(self.steps)
        ):
            raise ConflictError(f"plan {self.id}: simulate the present steps before approving")
        if not sim.feasible:
            refusal = sim.refusal
            where = (
                f"step {refusal.number} is refused: {refusal.decision.reason}"
                if refusal
                else "not every step was simulated"
            )
            raise ConflictError(f"plan {self.id}: cannot approve, {where}")
        if not self.steps:
            raise ConflictError(f"plan {self.id}: a plan without steps is not approved")
        return replace(
            self,
            state=PlanState.APPROVED,
            approver=actor,
            log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "approved")),
        )

    def start(self, actor: str, at: datetime) -> SwitchingPlan:
        """Begin executing an approved plan."""
        self._expect("start", PlanState.APPROVED)
        return replace(
            self, state=PlanState.EXECUTING, log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "started"))
        )

    def step_done(self, number: int, actor: str, at: datetime, detail: str) -> SwitchingPlan:
        """Record that step ``number`` (the next one) completed; the last one completes the plan."""
        self._expect_step(number)
        done = self.done + 1
        what = "manual step confirmed" if self.steps[number - 1].kind is StepKind.MANUAL else "step completed"
        entries = [PlanEntry(require_aware(at, "at"), actor, what, number, detail)]
        state = self.state
        if done == len(self.steps):
            state = PlanState.COMPLETED
            entries.append(PlanEntry(at, actor, "completed"))
        return replace(self, done=done, state=state, log=(*self.log, *entries))

    def step_failed(self, number: int, actor: str, at: datetime, detail: str) -> SwitchingPlan:
        """Record that step ``number`` did not complete (refused, no response, not executed); it stays next."""
        self._expect_step(number)
        return replace(self, log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "step failed", number, detail)))

    def abort(self, actor: str, at: datetime, reason: str) -> SwitchingPlan:
        """Abort an executing plan with a reason (the steps done stay done)."""
        self._expect("abort", PlanState.EXECUTING)
        reason = check_text("the reason", reason, max_len=2000)
        return replace(
            self,
            state=PlanState.ABORTED,
            log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "aborted", detail=reason)),
        )

    def cancel(self, actor: str, at: datetime, reason: str) -> SwitchingPlan:
        """Cancel a draft or approved plan that was not started."""
        self._expect("cancel", PlanState.DRAFT, PlanState.APPROVED)
        reason = check_text("the reason", reason, max_len=2000)
        return replace(
            self,
            state=PlanState.CANCELLED,
            log=(*self.log, PlanEntry(require_aware(at, "at"), actor, "cancelled", detail=reason)),
        )

    def _expect(self, transition: str, *states: PlanState) -> None:
        if self.state not in states:
            allowed = " or ".join(s.value for s in states)
            raise ConflictError(f"plan {self.id} is {self.state.value}: {transition} needs it {allowed}")

    def _expect_step(self, number: int) -> None:
        self._expect("execute a step", PlanState.EXECUTING)
        if number != self.next_number:
            raise ConflictError(f"plan {self.id}: step {number} is not the next step (step {self.next_number} is)")

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Return the plan and its archive as JSON-ready data."""
        return {
            "id": self.id,
            "title": self.title,
            "author": self.author,
            "editor": self.editor,
            "approver": self.approver,
            "state": self.state.value,
            "done": self.done,
            "next_step": self.next_number if self.state is PlanState.EXECUTING else None,
            "steps": [s.to_json() for s in self.steps],
            "simulation": self.simulated.to_json() if self.simulated else None,
            "log": [e.to_json() for e in self.log],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SwitchingPlan:
        """Read a plan written by :meth:`to_json`."""
        steps = tuple(PlanStep.from_json(s, number=i) for i, s in enumerate(data.get("steps", ()), start=1))
        return cls(
            id=str(data["id"]),
            title=str(data["title"]),
            author=str(data["author"]),
            steps=steps,
            state=PlanState(str(data["state"])),
            editor=str(data.get("editor") or data["author"]),
            approver=data.get("approver"),
            simulated=_simulation_from_json(data.get("simulation"), steps),
            done=int(data.get("done", 0)),
            log=tuple(PlanEntry.from_json(e) for e in data.get("log", ())),
        )


def _simulation_from_json(data: Mapping[str, Any] | None, steps: tuple[PlanStep, ...]) -> PlanSimulation | None:
    if not data:
        return None
    out = []
    for item in data.get("steps", ()):
        number = int(item["number"])
        step = (
            steps[number - 1]
            if 0 < number <= len(steps)
            else PlanStep(str(item["switch"]), SwitchAction(str(item["action"])))
        )
        rule = item.get("rule")
        decision = GateDecision(
            switch=step.switch,
            action=step.action,
            allowed=bool(item["allowed"]),
            rule=GateRule(rule) if rule else None,
            reason=str(item.get("reason", "")),
            confirm=tuple(item.get("confirm", ())),
            overrides=tuple(Override(str(o["tag"]), str(o["reason"])) for o in item.get("overrides", ())),
            confirmations=tuple(
                Confirmation(GateRule(str(c["rule"])), str(c["reason"])) for c in item.get("confirmations", ())
            ),
            passed=tuple(GateRule(str(r)) for r in item.get("passed", ())),
        )
        out.append(StepSimulation(number, step, decision))
    return PlanSimulation(tuple(out), int(data["total"]))


def _check_count(steps: Sequence[PlanStep]) -> None:
    if len(steps) > MAX_STEPS:
        raise InputError(f"a plan holds at most {MAX_STEPS} steps, not {len(steps)}")
