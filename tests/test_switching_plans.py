"""Switching plans (issue 10, item 2): simulated step by step, approved by a second person, run in order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from opendso.errors import ConflictError, InputError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.switching import (
    Earth,
    GateRule,
    PlanState,
    PlanStep,
    SafetyGate,
    StepKind,
    SwitchAction,
    SwitchingPlan,
    SwitchingState,
    simulate_plan,
)
from opendso.operations.switching.plans import MAX_STEPS

SOURCE = "simbench:1-MV-urban--0-sw"
LBS = "MV3.101 Switch 13"  # a load-break switch inside the feeder of Line 1
TIE = "MV3.101 loop_line_switch 1.2"  # open tie between the feeders of Line 1 and Line 16
OPEN, CLOSE = SwitchAction.OPEN, SwitchAction.CLOSE
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
GATE = SafetyGate()


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(SOURCE)


def dead_after_opening(grid: Grid, switch: str) -> str:
    closed = grid.switches["closed"].copy()
    closed[np.flatnonzero(grid.switch_names == switch)[0]] = 0
    before = analyse_topology(grid).node_energised
    after = analyse_topology(grid.with_switch_states(closed)).node_energised
    return str(grid.names_of("node")[np.flatnonzero(before & ~after)[-1]])


def draft(*steps: PlanStep) -> SwitchingPlan:
    return SwitchingPlan.new("P-1", "Outage of cable section 13", "erin", steps, T0)


NO_STATE = SwitchingState()


def simulated(plan: SwitchingPlan, grid: Grid, state: SwitchingState = NO_STATE) -> SwitchingPlan:
    sim = simulate_plan(grid, plan.steps, state=state, gate=GATE, actor="erin")
    return plan.with_simulation(sim, "erin", T0 + timedelta(minutes=1))


def test_each_post_state_goes_through_the_gate(grid: Grid) -> None:
    # opening then closing the same switch: the second step is checked on the state the first left
    steps = (PlanStep(LBS, OPEN), PlanStep(LBS, CLOSE, StepKind.MANUAL, "crew closes on site"))
    sim = simulate_plan(grid, steps, state=NO_STATE, gate=GATE, actor="erin")
    assert sim.feasible
    assert [s.decision.allowed for s in sim.steps] == [True, True]
    # an earth on a node the first step de-energises: the close of step 2 would energise it
    node = dead_after_opening(grid, LBS)
    earthed = SwitchingState(earths=(Earth(node, reference="PE-9"),))
    sim = simulate_plan(grid, steps, state=earthed, gate=GATE, actor="erin")
    assert not sim.feasible
    refusal = sim.refusal
    assert refusal is not None
    assert refusal.number == 2
    assert refusal.decision.rule is GateRule.EARTHING
    assert node in refusal.decision.reason


def test_the_simulation_stops_at_the_first_refusal(grid: Grid) -> None:
    # closing the open tie parallels two feeders (not configured as allowed): refused at step 1
    steps = (PlanStep(TIE, CLOSE), PlanStep(LBS, OPEN))
    sim = simulate_plan(grid, steps, state=NO_STATE, gate=GATE, actor="erin")
    assert not sim.feasible
    assert len(sim.steps) == 1
    assert sim.steps[0].decision.rule is GateRule.PARALLELING
    # a step asking for the state its switch already has is refused, naming the step
    sim = simulate_plan(grid, (PlanStep(LBS, OPEN), PlanStep(LBS, OPEN)), state=NO_STATE, gate=GATE, actor="erin")
    assert sim.refusal is not None
    assert sim.refusal.number == 2
    assert "step 2" in sim.refusal.decision.reason
    assert "already open" in sim.refusal.decision.reason


def test_a_step_naming_an_unknown_switch_is_named(grid: Grid) -> None:
    with pytest.raises(UnknownSwitchError, match="step 2: no such switch"):
        simulate_plan(
            grid, (PlanStep(LBS, OPEN), PlanStep("no such switch", CLOSE)), state=NO_STATE, gate=GATE, actor="erin"
        )


def test_approval_needs_a_second_person_and_a_feasible_simulation_of_these_steps(grid: Grid) -> None:
    plan = draft(PlanStep(LBS, OPEN), PlanStep(LBS, CLOSE))
    with pytest.raises(ConflictError, match="simulate the present steps"):
        plan.approve("frank", T0)
    plan = simulated(plan, grid)
    with pytest.raises(ConflictError, match="second person"):
        plan.approve("erin", T0)  # the author
    # an edit discards the simulation: approval needs a new one
    edited = plan.edit((PlanStep(LBS, OPEN),), "erin", T0)
    with pytest.raises(ConflictError, match="simulate the present steps"):
        edited.approve("frank", T0)
    # a plan whose simulation found a refusal is not approved
    bad = simulated(draft(PlanStep(TIE, CLOSE)), grid)
    with pytest.raises(ConflictError, match="step 1 is refused"):
        bad.approve("frank", T0)
    approved = plan.approve("frank", T0 + timedelta(minutes=2))
    assert approved.state is PlanState.APPROVED
    assert approved.approver == "frank"
    # an approved plan is not edited
    with pytest.raises(ConflictError, match="approved: edit needs it draft"):
        approved.edit((), "erin", T0)


def test_execution_is_step_by_step_and_archived(grid: Grid) -> None:
    plan = simulated(draft(PlanStep(LBS, OPEN), PlanStep(LBS, CLOSE, StepKind.MANUAL)), grid).approve("frank", T0)
    with pytest.raises(ConflictError, match="approved: execute a step needs it executing"):
        plan.step_done(1, "olga", T0, "completed")
    plan = plan.start("olga", T0 + timedelta(minutes=3))
    with pytest.raises(ConflictError, match="step 2 is not the next step"):
        plan.step_done(2, "olga", T0, "completed")
    plan = plan.step_failed(1, "olga", T0 + timedelta(minutes=4), "no_response: no confirmation within 5 s")
    assert plan.next_number == 1  # a failed step stays next
    plan = plan.step_done(1, "olga", T0 + timedelta(minutes=5), "completed")
    plan = plan.step_done(2, "olga", T0 + timedelta(minutes=9), "crew confirmed by radio")
    assert plan.state is PlanState.COMPLETED
    assert plan.next_step is None
    assert [(e.actor, e.what, e.step) for e in plan.log] == [
        ("erin", "created", None),
        ("erin", "simulated", None),
        ("frank", "approved", None),
        ("olga", "started", None),
        ("olga", "step failed", 1),
        ("olga", "step completed", 1),
        ("olga", "manual step confirmed", 2),
        ("olga", "completed", None),
    ]
    # the archive survives the JSON round trip the store and the API use
    again = SwitchingPlan.from_json(plan.to_json())
    assert again == plan
    with pytest.raises(ConflictError, match="completed: abort needs it executing"):
        plan.abort("olga", T0, "storm")


def test_abort_and_cancel_need_a_clean_reason(grid: Grid) -> None:
    plan = simulated(draft(PlanStep(LBS, OPEN)), grid).approve("frank", T0).start("olga", T0)
    with pytest.raises(InputError, match="bidirectional control"):
        plan.abort("olga", T0, "ok\u202eevil")
    aborted = plan.abort("olga", T0, "crew called off")
    assert aborted.state is PlanState.ABORTED
    assert aborted.log[-1].detail == "crew called off"
    with pytest.raises(ConflictError, match="aborted: cancel needs it draft or approved"):
        aborted.cancel("erin", T0, "x")
    assert draft().cancel("erin", T0, "not needed").state is PlanState.CANCELLED


def test_hostile_plans_are_refused() -> None:
    with pytest.raises(InputError, match="control character U\\+0000"):
        SwitchingPlan.new("P-2", "a\x00b", "erin", (), T0)
    with pytest.raises(InputError, match=f"at most {MAX_STEPS} steps"):
        SwitchingPlan.new("P-2", "long", "erin", [PlanStep(LBS, OPEN)] * (MAX_STEPS + 1), T0)
    with pytest.raises(InputError, match="step 3: malformed"):
        PlanStep.from_json({"switch": LBS, "action": "toggle"}, number=3)
    with pytest.raises(InputError, match="step 1: the switch is empty"):
        PlanStep.from_json({"switch": " ", "action": "open"}, number=1)
    with pytest.raises(InputError, match="naive time"):
        SwitchingPlan.new("P-2", "naive", "erin", (), datetime(2026, 1, 1))
