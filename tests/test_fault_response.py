"""Trip detection and the lifecycle of FLISR proposals, without a field (the end-to-end test has one).

A trip is an opening with the switch's own indicator (protection pick-up) picked up; an opening
without fault current (an operator's) is not one. A proposal nothing of which was sent is
withdrawn when the tripped breaker closes again otherwise; a plan that cannot be made is a
failed proposal that says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.fault_response import (
    FaultResponder,
    FlisrConfig,
    FlisrMode,
    ProposalState,
    indicators_from_latest,
)
from opendso.operations.flisr import fault_indicators, simulate_fault_and_plan
from opendso.operations.switching import (
    CommandPath,
    SafetyGate,
    SwitchAction,
    SwitchingDispatcher,
    SwitchingRequest,
    SwitchingState,
)
from opendso.quality import Quality
from opendso.telemetry import CommandOutcome, InProcessAdapter

SOURCE = "simbench:1-MV-urban--0-sw"
FAULT = "MV3.101 Bus 28"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Cycle:
    """What the responder reads of a cycle result."""

    switch_changes: list[str]
    time: datetime = T0


@dataclass
class Field:
    grid: Grid
    latest: dict[str, Measurement] = field(default_factory=dict)

    def set(self, switch: str, closed: bool) -> None:
        states = self.grid.switches["closed"].copy()
        states[self.grid.switch_names == switch] = int(closed)
        self.grid = self.grid.with_switch_states(states)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(SOURCE)


def indicator_values(grid: Grid) -> dict[str, Measurement]:
    """The indicators as the field simulator sets them for a fault at FAULT, as latest values."""
    return {
        f"{n}/fpi": Measurement(f"{n}/fpi", T0, 1.0 if hit else 0.0) for n, hit in fault_indicators(grid, FAULT).items()
    }


def responder_for(f: Field, mode: FlisrMode = FlisrMode.ADVISORY) -> FaultResponder:
    dispatcher = SwitchingDispatcher(SafetyGate(), lambda: f.grid, SwitchingState, lambda switch: None)
    return FaultResponder(
        dispatcher,
        latest=lambda: f.latest,
        fpi_points=[f"{n}/fpi" for n in f.grid.switch_names],
        config=FlisrConfig(mode=mode, settle_s=0.0),
    )


def test_only_an_opening_with_fault_current_is_a_trip(grid: Grid) -> None:
    plan = simulate_fault_and_plan(grid, FAULT)
    f = Field(grid)
    responder = responder_for(f)
    f.latest = {
        f"{name}/fpi": Measurement(f"{name}/fpi", T0, 1.0 if hit else 0.0)
        for name, hit in fault_indicators(grid, FAULT).items()
        if name in set(grid.switch_names.tolist())
    }
    f.set(plan.tripped, False)
    assert responder.trips(Cycle([plan.tripped])) == [plan.tripped]  # type: ignore[arg-type]
    # an operator opens another switch: no indicator there, no trip
    other = next(str(n) for n, c in zip(grid.switch_names, f.grid.switches["closed"], strict=True) if c)
    f.set(other, False)
    assert responder.trips(Cycle([other])) == []  # type: ignore[arg-type]
    # an indicator whose value is not good counts as unknown, not as picked up
    f.latest[f"{plan.tripped}/fpi"] = Measurement(f"{plan.tripped}/fpi", T0, 1.0, Quality.INVALID)
    assert responder.trips(Cycle([plan.tripped])) == []  # type: ignore[arg-type]
    assert indicators_from_latest(f.latest, [f"{plan.tripped}/fpi"]) == {}


def test_an_opening_the_control_room_commanded_is_not_a_trip(grid: Grid) -> None:
    plan = simulate_fault_and_plan(grid, FAULT)
    f = Field(grid)
    f.latest = {
        f"{n}/fpi": Measurement(f"{n}/fpi", T0, 1.0 if hit else 0.0) for n, hit in fault_indicators(grid, FAULT).items()
    }
    adapter = InProcessAdapter(name="field", on_command=lambda request: CommandOutcome.COMPLETED)
    dispatcher = SwitchingDispatcher(SafetyGate(), lambda: f.grid, SwitchingState, lambda s: (adapter, f"{s}/switch"))
    responder = FaultResponder(dispatcher, latest=lambda: f.latest, fpi_points=list(f.latest))
    # FLISR opens an isolating switch whose indicator is still picked up: its own command, not a trip
    isolating = plan.isolate[0]
    request = SwitchingRequest(isolating, SwitchAction.OPEN, "flisr")
    outcome = asyncio.run(dispatcher.execute(request, path=CommandPath.FLISR))
    assert outcome.status == "completed"
    f.set(isolating, False)
    assert f.latest[f"{isolating}/fpi"].value == 1.0
    assert responder.trips(Cycle([isolating])) == []  # type: ignore[arg-type]


def test_a_proposal_is_withdrawn_when_the_breaker_closes_again_before_approval(grid: Grid) -> None:
    plan = simulate_fault_and_plan(grid, FAULT)
    f = Field(grid)
    f.latest = {
        f"{n}/fpi": Measurement(f"{n}/fpi", T0, 1.0 if hit else 0.0) for n, hit in fault_indicators(grid, FAULT).items()
    }
    f.set(plan.tripped, False)
    responder = responder_for(f)

    async def scenario() -> None:
        responder.on_cycle(Cycle([plan.tripped]))  # type: ignore[arg-type]
        await responder.wait_idle()
        (proposal,) = responder.proposals
        assert proposal.state is ProposalState.PROPOSED
        assert proposal.plan is not None
        assert proposal.plan.isolate == plan.isolate
        # the same trip seen again while its response runs starts nothing new
        f.set(plan.tripped, True)  # a transient fault: the operator recloses, supply is back
        responder.on_cycle(Cycle([plan.tripped]))  # type: ignore[arg-type]
        await responder.wait_idle()
        (withdrawn,) = responder.proposals
        assert withdrawn.state is ProposalState.WITHDRAWN
        assert plan.tripped in (withdrawn.error or "")
        with pytest.raises(Exception, match="only a proposed one"):
            await responder.approve(withdrawn.id, actor="olga")

    asyncio.run(scenario())


def test_a_plan_that_cannot_be_made_fails_and_says_why(grid: Grid) -> None:
    f = Field(grid)
    responder = responder_for(f, FlisrMode.AUTOMATIC)
    failed = asyncio.run(responder.respond("no such breaker", T0))
    assert failed.state is ProposalState.FAILED
    assert "no such breaker" in (failed.error or "")
    assert responder.proposal(failed.id) == failed
