"""The switching API: roles (IEC 62351-8), hostile bodies, every change audited with actor and address.

On the demo grid served by a control room without a cycle (the grid's own switch states); the
dispatcher is routed to an in-process adapter that completes every command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import UNLIMITED_LOGINS, feeder_breaker
from fastapi import FastAPI
from fastapi.testclient import TestClient

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.service import ControlRoom, Role, Security, ServiceSettings, create_app
from opendso.service.audit import AuditTrail
from opendso.service.routes.switching import switching_for_room
from opendso.service.security import CSRF_HEADER, SecuritySettings
from opendso.store import Historian
from opendso.telemetry import CommandOutcome, CommandRequest, InProcessAdapter

PASSWORD = "correct horse battery"
FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
TIE = "MV2.101 loop_line_switch 1.2"  # an open tie of the demo grid's MV part


@dataclass
class Api:
    app: FastAPI
    room: ControlRoom
    historian: Historian
    grid: Grid
    sent: list[CommandRequest]

    def client(self, username: str) -> tuple[TestClient, dict[str, str]]:
        """A bearer-token client of ``username`` (the API path)."""
        client = TestClient(self.app)
        token = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
        assert token.status_code == 200, token.text
        return client, {"Authorization": f"Bearer {token.json()['access_token']}"}

    def browser(self, username: str) -> tuple[TestClient, dict[str, str]]:
        """A cookie-session client of ``username`` with its CSRF header (the web UI's path)."""
        client = TestClient(self.app)
        login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return client, {CSRF_HEADER: login.json()["csrf_token"]}


def make_api(grid: Grid, folder: Path, outcome: CommandOutcome = CommandOutcome.COMPLETED) -> Api:
    historian = Historian.open(f"sqlite:///{folder / 'opendso.db'}")
    room = ControlRoom(grid, historian)
    security = Security(historian.engine, settings=FAST)
    for role in Role:
        security.add_user(role.value, PASSWORD, [role.value])
    security.add_user("operator2", PASSWORD, [Role.OPERATOR.value])
    app = create_app(room, ServiceSettings(max_body_bytes=20_000, security=FAST, login=UNLIMITED_LOGINS))
    sent: list[CommandRequest] = []

    def field(request: CommandRequest) -> CommandOutcome:
        sent.append(request)
        return outcome

    adapter = InProcessAdapter(name="field", on_command=field)
    app.state.switching = switching_for_room(room, route=lambda switch: (adapter, f"{switch}/switch"))
    return Api(app, room, historian, grid, sent)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    yield service
    service.historian.close()


def breaker(grid: Grid) -> str:
    return str(grid.switch_names[feeder_breaker(grid)])


def live_node(grid: Grid) -> str:
    return str(grid.names_of("node")[int(np.flatnonzero(analyse_topology(grid).node_energised)[0])])


def test_viewer_reads_operator_operates(api: Api) -> None:
    viewer, vh = api.client("viewer")
    state = viewer.get("/api/switching/state", headers=vh)
    assert state.status_code == 200
    assert state.json() == {"tags": [], "documents": [], "earths": [], "faults": []}
    body = {"switch": breaker(api.grid), "action": "open"}
    for path in ("/api/switching/preview", "/api/switching/operate"):
        refused = viewer.post(path, json=body, headers=vh)
        assert refused.status_code == 403, refused.text
    assert api.sent == []
    operator, oh = api.client("operator")
    preview = operator.post("/api/switching/preview", json=body, headers=oh)
    assert preview.status_code == 200, preview.text
    assert preview.json()["allowed"] is True
    assert api.sent == []  # a preview sends nothing
    done = operator.post("/api/switching/operate", json=body, headers=oh)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["path"] == "api"
    assert [r.point for r in api.sent] == [f"{breaker(api.grid)}/switch"]
    record = AuditTrail(api.historian.engine).read()[-1]
    assert (record.action, record.actor, record.source_ip) == ("switching.completed", "operator", "testclient")


def test_engineer_cannot_operate_and_operator_cannot_clear_a_fault_flag(api: Api) -> None:
    engineer, eh = api.client("engineer")
    body = {"switch": breaker(api.grid), "action": "open"}
    assert engineer.post("/api/switching/operate", json=body, headers=eh).status_code == 403
    operator, oh = api.client("operator")
    node = live_node(api.grid)
    flagged = operator.post("/api/switching/faults", json={"node": node, "reason": "FPI 7 picked up"}, headers=oh)
    assert flagged.status_code == 201, flagged.text
    cleared = operator.request("DELETE", f"/api/switching/faults/{node}", json={"reason": "fixed"}, headers=oh)
    assert cleared.status_code == 403
    no_reason = engineer.request("DELETE", f"/api/switching/faults/{node}", json={}, headers=eh)
    assert no_reason.status_code == 422
    blank = engineer.request("DELETE", f"/api/switching/faults/{node}", json={"reason": "  "}, headers=eh)
    assert blank.status_code in (400, 422)
    ok = engineer.request(
        "DELETE", f"/api/switching/faults/{node}", json={"reason": "cable tested 10 kV 15 min"}, headers=eh
    )
    assert ok.status_code == 200, ok.text
    actions = [(r.action, r.actor, r.reason) for r in AuditTrail(api.historian.engine).read()]
    assert ("switching.fault_flagged", "operator", "FPI 7 picked up") in actions
    assert ("switching.fault_cleared", "engineer", "cable tested 10 kV 15 min") in actions


def test_hostile_bodies(api: Api) -> None:
    operator, oh = api.client("operator")
    sw = breaker(api.grid)
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"switch": "no such switch", "action": "open"}, 404, "no such switch"),
        ({"switch": sw, "action": "toggle"}, 422, "action"),
        ({"switch": sw}, 422, "action"),
        ({"switch": sw, "action": "open", "extra": 1}, 422, "extra"),
        ({"switch": sw, "action": "close"}, 409, "already closed"),
        ({"switch": sw, "action": "open", "overrides": [{"tag": "tag-1"}]}, 422, "reason"),
        ({"switch": sw, "action": "open", "overrides": [{"tag": "tag-1", "reason": ""}]}, 422, "reason"),
        ({"switch": sw, "action": "open", "overrides": [{"tag": "t", "reason": "ok \u202e"}]}, 400, "bidirectional"),
        ({"switch": sw, "action": "open", "confirmations": [{"rule": "magic", "reason": "x"}]}, 400, "rule"),
        ({"switch": sw, "action": "open", "approver": "operator"}, 400, "second person"),
        ({"switch": sw, "action": "open", "approver": "ghost"}, 400, "not a user"),
        ({"switch": sw, "action": "open", "approver": "viewer"}, 400, "may not approve"),
        ({"switch": sw, "action": "open", "approver": "operator2"}, 400, "has not approved"),
    ]
    for body, status, words in cases:
        for path in ("/api/switching/preview", "/api/switching/operate"):
            response = operator.post(path, json=body, headers=oh)
            assert response.status_code == status, (body, response.text)
            assert words in response.text, (body, response.text)
    malformed = operator.post(
        "/api/switching/operate", content=b"{not json", headers={**oh, "content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert api.sent == []
    assert api.historian.events.find(kind_prefix="switching.") == []


def test_tags_documents_and_earths_through_the_api(api: Api) -> None:
    operator, oh = api.client("operator")
    engineer, eh = api.client("engineer")
    sw = breaker(api.grid)
    tag = operator.post(
        "/api/switching/tags", json={"switch": sw, "kind": "do_not_operate", "text": "crew"}, headers=oh
    )
    assert tag.status_code == 201, tag.text
    assert (
        engineer.post(
            "/api/switching/tags", json={"switch": sw, "kind": "caution", "text": "x"}, headers=eh
        ).status_code
        == 403
    )
    refused = operator.post("/api/switching/operate", json={"switch": sw, "action": "open"}, headers=oh)
    assert refused.json()["status"] == "refused"
    assert refused.json()["decision"]["rule"] == "tags"
    removed = operator.request(
        "DELETE", f"/api/switching/tags/{tag.json()['id']}", json={"reason": "crew gone"}, headers=oh
    )
    assert removed.status_code == 200
    assert (
        operator.request("DELETE", "/api/switching/tags/tag-none", json={"reason": "x"}, headers=oh).status_code == 404
    )
    # documents: engineers create and issue, operators start and clear
    body = {"kind": "permit_to_work", "devices": [TIE], "earths": [], "description": "tie maintenance"}
    assert operator.post("/api/switching/documents", json=body, headers=oh).status_code == 403
    doc = engineer.post("/api/switching/documents", json=body, headers=eh)
    assert doc.status_code == 201, doc.text
    doc_id = doc.json()["id"]
    assert operator.post(f"/api/switching/documents/{doc_id}/issue", headers=oh).status_code == 403
    assert engineer.post(f"/api/switching/documents/{doc_id}/issue", headers=eh).status_code == 200
    wrong = operator.post(f"/api/switching/documents/{doc_id}/clear", headers=oh)
    assert wrong.status_code == 409
    assert "from issued to cleared" in wrong.json()["detail"]
    closing = operator.post("/api/switching/operate", json={"switch": TIE, "action": "close"}, headers=oh)
    assert closing.json()["decision"]["rule"] == "safety_documents"
    assert operator.post(f"/api/switching/documents/{doc_id}/start", headers=oh).status_code == 200
    assert (
        operator.post(f"/api/switching/documents/{doc_id}/clear", json={"reason": "done"}, headers=oh).status_code
        == 200
    )
    assert engineer.post("/api/switching/documents/nope/issue", headers=eh).status_code == 404
    # earths: refused on a live node, 404 on an unknown one
    live = operator.post("/api/switching/earths", json={"node": live_node(api.grid)}, headers=oh)
    assert live.status_code == 409
    assert "is live" in live.json()["detail"]
    assert operator.post("/api/switching/earths", json={"node": "nowhere"}, headers=oh).status_code == 404
    state = operator.get("/api/switching/state", headers=oh).json()
    assert state["documents"][0]["state"] == "cleared"
    assert state["tags"] == []
    audited = AuditTrail(api.historian.engine).read()
    assert all(r.source_ip == "testclient" for r in audited if r.action.startswith("switching."))


def test_two_person_approval_comes_from_the_second_persons_own_session(grid: Grid, tmp_path: Path) -> None:
    from opendso.operations.switching import GateConfig

    service = make_api(grid, tmp_path)
    try:
        sw = breaker(grid)
        adapter = service.app.state.switching.dispatcher.route(sw)
        service.app.state.switching = switching_for_room(
            service.room, route=lambda switch: adapter, config=GateConfig(critical_switches=frozenset({sw}))
        )
        operator, oh = service.client("operator")
        body = {"switch": sw, "action": "open"}
        # a critical switch: the gate asks for a second person
        alone = operator.post("/api/switching/operate", json=body, headers=oh)
        assert alone.json()["decision"]["rule"] == "two_person_approval"
        # naming someone who did not approve is refused: nobody approves in another's name
        named = operator.post("/api/switching/operate", json={**body, "approver": "operator2"}, headers=oh)
        assert named.status_code == 400
        assert "has not approved" in named.json()["detail"]
        # a viewer cannot approve; the second operator approves from their own session
        viewer, vh = service.client("viewer")
        assert viewer.post("/api/switching/approvals", json=body, headers=vh).status_code == 403
        second, sh = service.client("operator2")
        assert second.post("/api/switching/approvals", json={**body, "switch": "ghost"}, headers=sh).status_code == 404
        approval = second.post("/api/switching/approvals", json=body, headers=sh)
        assert approval.status_code == 201, approval.text
        # the approval is for this operation only
        other = operator.post(
            "/api/switching/preview", json={"switch": sw, "action": "close", "approver": "operator2"}, headers=oh
        )
        assert other.status_code == 400
        done = operator.post("/api/switching/operate", json={**body, "approver": "operator2"}, headers=oh)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "completed"
        assert done.json()["approver"] == "operator2"
        # used once: it does not approve a second request
        again = operator.post("/api/switching/preview", json={**body, "approver": "operator2"}, headers=oh)
        assert again.status_code == 400
        actions = [(r.action, r.actor) for r in AuditTrail(service.historian.engine).read()]
        assert ("switching.approved", "operator2") in actions
    finally:
        service.historian.close()
