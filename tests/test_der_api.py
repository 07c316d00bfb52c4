"""The DER registry over the API: everyone with a session reads it, engineers keep it, every change is audited.

Roles are IEC 62351-8's, as the API has them; hostile requests (wrong roles, no CSRF token, unknown
fields, control characters, path tricks, stale versions, moves the state machine does not allow,
oversized bodies, a flood of creates) are refused and leave the registry as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_switching_api import Api, make_api

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.service.audit import AuditTrail


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    yield service
    service.historian.close()


def mv_nodes(grid: Grid) -> list[str]:
    return sorted(str(n) for n in grid.names_of("node").tolist() if str(n).startswith("MV2.101 Bus"))


def asset(asset_id: str, node: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": asset_id,
        "name": f"Solar {asset_id}",
        "kind": "pv",
        "node": node,
        "owner": "Sunny Fields Ltd",
        "export_kw": 800.0,
        "control": {"protocol": "modbus", "address": "10.0.0.7:502/1/40100"},
        "agreement": {"kind": "flexible", "principle": "lifo", "curtailment_cap_pct": 5, "export_limit_kw": 200},
    }
    body.update(extra)
    return body


def test_engineers_keep_the_registry_and_everyone_reads_it(api: Api) -> None:
    nodes = mv_nodes(api.grid)
    engineer, eh = api.client("engineer")
    for name in ("viewer", "operator", "security_auditor"):
        client, headers = api.client(name)
        assert client.post("/api/der/assets", json=asset("A1", nodes[0]), headers=headers).status_code == 403
        assert client.post("/api/der/requests", json={"id": "R1", "asset_id": "A1"}, headers=headers).status_code == 403
    created = engineer.post("/api/der/assets", json=asset("A1", nodes[0]), headers=eh)
    assert created.status_code == 201, created.text
    body = created.json()
    topology = analyse_topology(api.grid)
    row = api.grid.names_of("node").tolist().index(nodes[0])
    feeder = dict(zip(topology.feeders.id.tolist(), topology.feeders.name.tolist(), strict=True))
    assert body["feeder"] == feeder[int(topology.node_feeder[row])]
    assert (body["version"], body["agreement"]["principle"]) == (1, "lifo")
    engineer.post("/api/der/assets", json=asset("A2", nodes[1], kind="wind"), headers=eh)
    # requests: the queue is in received order, whatever the order they were entered in
    for rid, aid, at in (("R2", "A2", "2026-03-02T08:00Z"), ("R1", "A1", "2026-03-01T08:00+01:00")):
        made = engineer.post("/api/der/requests", json={"id": rid, "asset_id": aid, "received_at": at}, headers=eh)
        assert made.status_code == 201, made.text
    viewer, vh = api.client("viewer")
    queue = viewer.get("/api/der/queue", headers=vh).json()
    assert [(e["position"], e["id"], e["asset"]["id"]) for e in queue] == [(1, "R1", "A1"), (2, "R2", "A2")]
    assert [e["id"] for e in viewer.get("/api/der/requests/R2/ahead", headers=vh).json()] == ["R1"]
    assert [a["id"] for a in viewer.get("/api/der/assets?kind=wind", headers=vh).json()] == ["A2"]
    assert [a["id"] for a in viewer.get(f"/api/der/assets?node={nodes[0]}", headers=vh).json()] == ["A1"]
    assert len(viewer.get("/api/der/assets", params={"feeder": body["feeder"]}, headers=vh).json()) >= 1
    one = viewer.get("/api/der/assets/A1", headers=vh).json()
    assert [(r["id"], r["position"]) for r in one["requests"]] == [("R1", 1)]
    # moves along the state machine, compare-and-set on the version
    moved = engineer.post("/api/der/requests/R1/move", json={"version": 1, "to": "studied", "note": "ok"}, headers=eh)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["status"], moved.json()["version"]) == ("studied", 2)
    stale = engineer.post("/api/der/requests/R1/move", json={"version": 1, "to": "offered"}, headers=eh)
    assert stale.status_code == 409
    skip = engineer.post("/api/der/requests/R1/move", json={"version": 2, "to": "connected"}, headers=eh)
    assert skip.status_code == 409
    assert "cannot become connected" in skip.json()["detail"]
    operator, oh = api.client("operator")
    assert (
        operator.post("/api/der/requests/R1/move", json={"version": 2, "to": "offered"}, headers=oh).status_code == 403
    )
    # an update names the version read
    update = {"version": 1, "asset": asset("A1", nodes[2], export_kw=900.0)}
    assert engineer.put("/api/der/assets/A1", json=update, headers=eh).json()["version"] == 2
    assert engineer.put("/api/der/assets/A1", json=update, headers=eh).status_code == 409
    # every change is audited with the actor and the address
    records = [r for r in AuditTrail(api.historian.engine).read() if r.action.startswith("der.")]
    assert [r.action for r in records] == [
        "der.asset_added",
        "der.asset_added",
        "der.request_received",
        "der.request_received",
        "der.request_studied",
        "der.asset_updated",
    ]
    assert {r.actor for r in records} == {"engineer"}
    assert all(r.source_ip for r in records)
    assert records[4].reason == "ok"


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"node": "Nowhere 7"}, 400, "not a node of the grid"),
        ({"id": "../../etc/passwd"}, 422, None),
        ({"name": "Solar\u202e1"}, 400, "name"),
        ({"owner": "x\u0000y"}, 400, "owner"),
        ({"colour": "red"}, 422, None),
        ({"kind": "fusion"}, 422, None),
        ({"export_kw": -5}, 422, None),
        ({"export_kw": "1e400"}, 422, None),
        ({"agreement": {"kind": "firm", "principle": "lifo"}}, 400, "firm agreement"),
        ({"agreement": {"kind": "flexible", "principle": "lifo"}}, 400, "curtailment cap"),
        (
            {"agreement": {"kind": "flexible", "principle": "lifo", "curtailment_cap_pct": 5, "export_limit_kw": 1e6}},
            400,
            "above",
        ),
        ({"name": "x" * 201}, 422, None),
    ],
)
def test_hostile_assets_are_refused_and_nothing_is_stored(
    api: Api, change: dict[str, Any], status: int, detail: str | None
) -> None:
    engineer, eh = api.client("engineer")
    body = {**asset("A1", mv_nodes(api.grid)[0]), **change}
    refused = engineer.post("/api/der/assets", json=body, headers=eh)
    assert refused.status_code == status, refused.text
    if detail is not None:
        assert detail in refused.json()["detail"]
    assert engineer.get("/api/der/assets", headers=eh).json() == []


def test_hostile_requests_and_paths(api: Api) -> None:
    engineer, eh = api.client("engineer")
    engineer.post("/api/der/assets", json=asset("A1", mv_nodes(api.grid)[0]), headers=eh)
    # a browser session needs its CSRF token to change anything
    browser, csrf = api.browser("engineer")
    assert browser.post("/api/der/assets", json=asset("A2", mv_nodes(api.grid)[1])).status_code == 403
    assert browser.post("/api/der/assets", json=asset("A2", mv_nodes(api.grid)[1]), headers=csrf).status_code == 201
    for body, status in (
        ({"id": "R1", "asset_id": "nope"}, 404),
        ({"id": "R1", "asset_id": "A1", "received_at": "2026-03-01T08:00"}, 422),  # no zone
        ({"id": "R 1", "asset_id": "A1"}, 422),
        ({"id": "R1", "asset_id": "A1", "status": "connected"}, 422),  # a request starts as received
    ):
        assert engineer.post("/api/der/requests", json=body, headers=eh).status_code == status, body
    assert engineer.post("/api/der/requests", json={"id": "R1", "asset_id": "A1"}, headers=eh).status_code == 201
    assert engineer.post("/api/der/requests", json={"id": "R1", "asset_id": "A2"}, headers=eh).status_code == 409
    assert engineer.post("/api/der/requests", json={"id": "R2", "asset_id": "A1"}, headers=eh).status_code == 409
    assert engineer.get("/api/der/assets/..%2F..%2Fetc", headers=eh).status_code == 404
    assert engineer.get("/api/der/requests/nope/ahead", headers=eh).status_code == 404
    assert engineer.get("/api/der/requests?status=lost", headers=eh).status_code == 422
    bad_move = {"version": 1, "to": "received"}
    assert engineer.post("/api/der/requests/R1/move", json=bad_move, headers=eh).status_code == 422
    long_note = {"version": 1, "to": "studied", "note": "\u0007bell"}
    assert engineer.post("/api/der/requests/R1/move", json=long_note, headers=eh).status_code == 400
    huge = asset("A3", mv_nodes(api.grid)[0], name="x" * 200, aggregator="y" * 30_000)
    assert engineer.post("/api/der/assets", json=huge, headers=eh).status_code == 413
    anonymous = api.client("viewer")[0]
    assert anonymous.get("/api/der/assets").status_code == 401
    assert [r["id"] for r in engineer.get("/api/der/requests", headers=eh).json()] == ["R1"]


def test_a_flood_of_creates_keeps_the_queue_whole(api: Api) -> None:
    engineer, eh = api.client("engineer")
    nodes = mv_nodes(api.grid)
    for k in range(60):
        engineer.post("/api/der/assets", json=asset(f"A{k:02d}", nodes[k % len(nodes)]), headers=eh)
        at = f"2026-01-01T00:{59 - k:02d}:00Z"  # entered newest first
        made = engineer.post(
            "/api/der/requests", json={"id": f"R{k:02d}", "asset_id": f"A{k:02d}", "received_at": at}, headers=eh
        )
        assert made.status_code == 201
    queue = engineer.get("/api/der/queue", headers=eh).json()
    assert [e["id"] for e in queue] == [f"R{k:02d}" for k in reversed(range(60))]
    assert [e["position"] for e in queue] == list(range(1, 61))
