"""FLISR over the API: proposals after a trip, an operator's approval through the gate, rejection, studies.

On the demo grid, whose MV part has ties between feeders. The trip is given to the responder as
the real-time cycle would (the tripped breaker open in the room's grid, the indicators on the path
to the fault picked up in the latest values); the dispatcher is routed to an in-process field
that follows every command, so the result is checked on the grid's topology.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_switching_api import Api, make_api

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import Measurement
from opendso.operations.fault_response import FaultResponder, FlisrConfig, FlisrMode
from opendso.operations.flisr import FlisrPlan, fault_indicators, simulate_fault_and_plan
from opendso.service.routes.switching import switching_for_room
from opendso.telemetry import CommandOutcome, CommandRequest, InProcessAdapter

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture(scope="module")
def case(grid: Grid) -> tuple[str, FlisrPlan]:
    """A fault on the demo grid whose plan restores customers through a tie."""
    for node in grid.names_of("node")[::3]:
        try:
            plan = simulate_fault_and_plan(grid, str(node))
        except Exception:  # nodes outside feeders have no plan
            continue
        if plan.customers_restored and any("loop" in s for s, a in plan.restore if a == "close"):
            return str(node), plan
    raise AssertionError("no fault on the demo grid restores customers through a tie")


@pytest.fixture
def api(grid: Grid, case: tuple[str, FlisrPlan], tmp_path: Path) -> Iterator[tuple[Api, FaultResponder]]:
    node, plan = case
    service = make_api(grid, tmp_path)
    room = service.room

    def field(request: CommandRequest) -> CommandOutcome:
        service.sent.append(request)
        closed = room.grid.switches["closed"].copy()
        closed[room.grid.switch_names == request.point.removesuffix("/switch")] = int(request.value)
        room.grid = room.grid.with_switch_states(closed)
        return CommandOutcome.COMPLETED

    adapter = InProcessAdapter(name="field", on_command=field)
    switching = switching_for_room(room, route=lambda switch: (adapter, f"{switch}/switch"))
    service.app.state.switching = switching
    # the trip: the breaker open in the field, the indicators on the fault's path picked up
    closed = grid.switches["closed"].copy()
    closed[grid.switch_names == plan.tripped] = 0
    room.grid = grid.with_switch_states(closed)
    latest = {
        f"{name}/fpi": Measurement(f"{name}/fpi", T0, 1.0 if hit else 0.0)
        for name, hit in fault_indicators(grid, node).items()
    }
    responder = FaultResponder(
        switching.dispatcher,
        latest=lambda: latest,
        fpi_points=list(latest),
        config=FlisrConfig(mode=FlisrMode.ADVISORY, step_settle_s=2.0),
        events=room.historian.events,
    )
    service.app.state.flisr = responder
    yield service, responder
    service.historian.close()


def test_an_operator_approves_a_proposal_and_the_gate_sends_it(
    api: tuple[Api, FaultResponder], case: tuple[str, FlisrPlan]
) -> None:
    service, responder = api
    node, expected = case
    proposal = asyncio.run(responder.respond(expected.tripped, T0))
    viewer, vh = service.client("viewer")
    listed = viewer.get("/api/flisr", headers=vh).json()
    assert listed["mode"] == "advisory"
    (shown,) = listed["proposals"]
    assert shown["state"] == "proposed"
    assert shown["steps"] == [{"switch": s, "action": "open"} for s in expected.isolate] + [
        {"switch": s, "action": a} for s, a in expected.restore
    ]
    assert node in shown["faulted_nodes"]
    assert service.sent == []  # advisory: nothing sent before an operator approves
    assert viewer.post(f"/api/flisr/{proposal.id}/approve", headers=vh).status_code == 403
    operator, oh = service.client("operator")
    approved = operator.post(f"/api/flisr/{proposal.id}/approve", headers=oh)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["state"] == "completed"
    assert body["approved_by"] == "operator"
    assert [(r.point.removesuffix("/switch"), r.value) for r in service.sent] == [
        *((s, 0.0) for s in expected.isolate),
        *((s, 1.0 if a == "close" else 0.0) for s, a in expected.restore),
    ]
    live = analyse_topology(service.room.grid).node_energised
    names = service.room.grid.names_of("node")
    on = dict(zip(names.tolist(), live.tolist(), strict=True))
    assert all(on[n] for n in expected.restored_nodes)
    assert not any(on[n] for n in expected.faulted_nodes)
    again = operator.post(f"/api/flisr/{proposal.id}/approve", headers=oh)
    assert again.status_code == 409
    flisr_events = [e.kind for e in service.room.historian.events.find(kind_prefix="flisr.")]
    assert flisr_events == ["flisr.proposed", "flisr.completed"]


def test_rejection_studies_and_hostile_requests(
    api: tuple[Api, FaultResponder], case: tuple[str, FlisrPlan], grid: Grid
) -> None:
    service, responder = api
    node, expected = case
    proposal = asyncio.run(responder.respond(expected.tripped, T0))
    operator, oh = service.client("operator")
    assert operator.post(f"/api/flisr/{proposal.id}/reject", json={"reason": ""}, headers=oh).status_code == 422
    bidi = operator.post(f"/api/flisr/{proposal.id}/reject", json={"reason": "a\u202eb"}, headers=oh)
    assert bidi.status_code == 400
    rejected = operator.post(f"/api/flisr/{proposal.id}/reject", json={"reason": "crew on site first"}, headers=oh)
    assert rejected.json()["state"] == "rejected"
    assert operator.post(f"/api/flisr/{proposal.id}/approve", headers=oh).status_code == 409
    assert operator.get("/api/flisr/999", headers=oh).status_code == 404
    assert operator.post("/api/flisr/999/approve", headers=oh).status_code == 404
    assert service.sent == []
    viewer, vh = service.client("viewer")
    service.room.grid = grid  # the fault repaired, the breaker closed again: a study on that state
    study = viewer.post("/api/flisr/study", json={"fault": node}, headers=vh)
    assert study.status_code == 200, study.text
    assert study.json()["fault"] == node
    unknown = viewer.post("/api/flisr/study", json={"fault": "Atlantis"}, headers=vh)
    assert unknown.status_code in (400, 404)
    assert "Atlantis" in unknown.json()["detail"]
    # without a responder FLISR is off
    del service.app.state.flisr
    assert viewer.get("/api/flisr", headers=vh).json() == {"mode": "off", "proposals": []}
