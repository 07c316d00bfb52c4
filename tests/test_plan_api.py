"""Switching plans over the API: an engineer prepares, a second engineer approves, an operator executes.

The dispatcher is routed to an in-process adapter that completes every command and moves the
control room's grid with it (the field follows), so the gate decides each step on the state the
steps before it left. Roles are IEC 62351-8's, as the API has them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_switching_api import PASSWORD, Api, breaker, make_api

from opendso.grid.model import Grid
from opendso.service import Role, Security
from opendso.service.audit import AuditTrail
from opendso.service.routes.switching import switching_for_room
from opendso.telemetry import CommandOutcome, CommandRequest, InProcessAdapter


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    Security(service.historian.engine).add_user("engineer2", PASSWORD, [Role.ENGINEER.value])
    room = service.room

    def field(request: CommandRequest) -> CommandOutcome:
        service.sent.append(request)
        switch = request.point.removesuffix("/switch")
        closed = room.grid.switches["closed"].copy()
        closed[room.grid.switch_names == switch] = int(request.value)
        room.grid = room.grid.with_switch_states(closed)  # the field follows the command
        return CommandOutcome.COMPLETED

    adapter = InProcessAdapter(name="field", on_command=field)
    service.app.state.switching = switching_for_room(room, route=lambda switch: (adapter, f"{switch}/switch"))
    yield service
    service.historian.close()


def test_a_plan_from_draft_to_completed_with_every_role_in_its_place(api: Api) -> None:
    cb = breaker(api.grid)
    steps = [
        {"switch": cb, "action": "open"},
        {"switch": cb, "action": "close", "kind": "manual", "instruction": "crew closes on site"},
    ]
    engineer, eh = api.client("engineer")
    operator, oh = api.client("operator")
    # operators and viewers do not write plans
    for name in ("operator", "viewer"):
        client, headers = api.client(name)
        assert client.post("/api/plans", json={"title": "x", "steps": steps}, headers=headers).status_code == 403
    created = engineer.post("/api/plans", json={"title": "Feeder maintenance", "steps": steps}, headers=eh)
    assert created.status_code == 201, created.text
    plan = created.json()
    pid, version = plan["id"], plan["version"]
    assert plan["state"] == "draft"
    # approval needs a simulation, and a second person
    assert engineer.post(f"/api/plans/{pid}/approve", json={"version": version}, headers=eh).status_code == 409
    simulated = engineer.post(f"/api/plans/{pid}/simulate", json={"version": version}, headers=eh)
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()["simulation"]["feasible"] is True
    version = simulated.json()["version"]
    own = engineer.post(f"/api/plans/{pid}/approve", json={"version": version}, headers=eh)
    assert own.status_code == 409
    assert "second person" in own.json()["detail"]
    second, sh = api.client("engineer2")
    approved = second.post(f"/api/plans/{pid}/approve", json={"version": version}, headers=sh)
    assert approved.status_code == 200, approved.text
    version = approved.json()["version"]
    # engineers do not operate; operators start and execute
    assert engineer.post(f"/api/plans/{pid}/start", json={"version": version}, headers=eh).status_code == 403
    started = operator.post(f"/api/plans/{pid}/start", json={"version": version}, headers=oh)
    assert started.status_code == 200, started.text
    version = started.json()["version"]
    # a manual step is confirmed, not executed; steps run in order
    wrong = operator.post(f"/api/plans/{pid}/steps/2/execute", json={"version": version}, headers=oh)
    assert wrong.status_code == 409
    assert "not the next step" in wrong.json()["detail"]
    step1 = operator.post(f"/api/plans/{pid}/steps/1/execute", json={"version": version}, headers=oh)
    assert step1.status_code == 200, step1.text
    assert step1.json()["outcome"]["status"] == "completed"
    assert step1.json()["outcome"]["path"] == "plan"
    assert [(r.point, r.value) for r in api.sent] == [(f"{cb}/switch", 0.0)]
    version = step1.json()["plan"]["version"]
    # a stale version is refused: someone changed the plan since
    stale = operator.post(f"/api/plans/{pid}/steps/2/confirm", json={"version": version - 1}, headers=oh)
    assert stale.status_code == 409
    step2 = operator.post(
        f"/api/plans/{pid}/steps/2/confirm", json={"version": version, "note": "closed by J. Smith"}, headers=oh
    )
    assert step2.status_code == 200, step2.text
    done = step2.json()["plan"]
    assert done["state"] == "completed"
    assert len(api.sent) == 1  # the crew's step sent nothing
    # the archive: who did what, when
    whats = [(e["actor"], e["what"], e["step"]) for e in done["log"]]
    assert whats == [
        ("engineer", "created", None),
        ("engineer", "simulated", None),
        ("engineer2", "approved", None),
        ("operator", "started", None),
        ("operator", "step completed", 1),
        ("operator", "manual step confirmed", 2),
        ("operator", "completed", None),
    ]
    actions = [r.action for r in AuditTrail(api.historian.engine).read() if r.action.startswith("plan.")]
    assert actions == [
        "plan.created",
        "plan.simulated",
        "plan.approved",
        "plan.started",
        "plan.step_completed",
        "plan.step_confirmed",
    ]
    listed = engineer.get("/api/plans?state=completed", headers=eh)
    assert [p["id"] for p in listed.json()] == [pid]


def test_the_gate_decides_each_step_again_when_it_runs(api: Api) -> None:
    cb = breaker(api.grid)
    engineer, eh = api.client("engineer")
    second, sh = api.client("engineer2")
    operator, oh = api.client("operator")
    plan = engineer.post("/api/plans", json={"title": "t", "steps": [{"switch": cb, "action": "open"}]}, headers=eh)
    pid = plan.json()["id"]
    version = engineer.post(f"/api/plans/{pid}/simulate", json={"version": 1}, headers=eh).json()["version"]
    version = second.post(f"/api/plans/{pid}/approve", json={"version": version}, headers=sh).json()["version"]
    version = operator.post(f"/api/plans/{pid}/start", json={"version": version}, headers=oh).json()["version"]
    # after approval someone tags the breaker do-not-operate: the step is refused at execution
    tag = operator.post(
        "/api/switching/tags", json={"switch": cb, "kind": "do_not_operate", "text": "relay test"}, headers=oh
    )
    assert tag.status_code == 201, tag.text
    refused = operator.post(f"/api/plans/{pid}/steps/1/execute", json={"version": version}, headers=oh)
    assert refused.status_code == 200, refused.text
    assert refused.json()["outcome"]["status"] == "refused"
    assert refused.json()["outcome"]["decision"]["rule"] == "tags"
    assert refused.json()["plan"]["next_step"] == 1  # it stays the next step
    assert api.sent == []
    version = refused.json()["plan"]["version"]
    aborted = operator.post(f"/api/plans/{pid}/abort", json={"version": version, "reason": "relay test"}, headers=oh)
    assert aborted.json()["state"] == "aborted"


def test_hostile_plan_requests(api: Api) -> None:
    engineer, eh = api.client("engineer")
    cb = breaker(api.grid)
    unknown = engineer.post(
        "/api/plans",
        json={"title": "t", "steps": [{"switch": cb, "action": "open"}, {"switch": "ghost", "action": "close"}]},
        headers=eh,
    )
    assert unknown.status_code == 404
    assert "step 2: ghost" in unknown.json()["detail"]
    bidi = engineer.post("/api/plans", json={"title": "ok\u202egnp.exe", "steps": []}, headers=eh)
    assert bidi.status_code == 400
    assert "bidirectional" in bidi.json()["detail"]
    too_many = engineer.post(
        "/api/plans", json={"title": "t", "steps": [{"switch": "x", "action": "open"}] * 501}, headers=eh
    )
    assert too_many.status_code == 422  # at most 500 steps (a short name keeps the body under the size limit)
    bad_action = engineer.post(
        "/api/plans", json={"title": "t", "steps": [{"switch": cb, "action": "toggle"}]}, headers=eh
    )
    assert bad_action.status_code == 422
    extra = engineer.post("/api/plans", json={"title": "t", "steps": [], "approved": True}, headers=eh)
    assert extra.status_code == 422  # unknown fields are refused, not ignored
    assert engineer.get("/api/plans/SP-NOPE", headers=eh).status_code == 404
    assert engineer.get("/api/plans?state=weird", headers=eh).status_code == 422
    assert engineer.get("/api/plans?limit=100000", headers=eh).status_code == 422
