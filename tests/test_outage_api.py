"""The outage API on a SimBench MV grid: roles, a call-to-close flow audited, hostile requests, pagination."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serving import PASSWORD, T0, app_of, control_room

from opendso.grid.model import Grid
from opendso.service import ControlRoom, Role
from opendso.service.security import CSRF_HEADER
from opendso.store.outage_schema import outage_calls, outages

CODE = "simbench:1-MV-urban--0-sw"
VIEW = {r.value for r in Role}
CONTROL = {"operator"}


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def served(grid: Grid, tmp_path: Path) -> Iterator[tuple[FastAPI, ControlRoom]]:
    room = control_room(grid, tmp_path)
    yield app_of(room, max_body_bytes=20_000), room
    room.historian.close()


def login(app: FastAPI, username: str) -> tuple[TestClient, dict[str, str]]:
    client = TestClient(app)
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client, {CSRF_HEADER: response.json()["csrf_token"]}


def a_load(grid: Grid, k: int = 0) -> str:
    """A load with customers on an energised feeder node (the k-th such)."""
    names = grid.names_of("sym_load")
    p = np.abs(grid.component("sym_load")["p_specified"])
    return str(names[np.flatnonzero(p > 0)[k]])


def test_every_outage_route_against_every_role(served: tuple[FastAPI, ControlRoom], grid: Grid) -> None:
    app, _ = served
    operator, h = login(app, "operator")
    made = operator.post("/api/outages/calls", json={"load": a_load(grid), "text": "no power"}, headers=h)
    assert made.status_code == 201, made.text
    oid = made.json()["outage"]["id"]
    routes: list[tuple[str, str, dict[str, object] | None, set[str]]] = [
        ("GET", "/api/outages", None, VIEW),
        ("GET", f"/api/outages/{oid}", None, VIEW),
        ("GET", "/api/reliability?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z", None, VIEW),
        ("POST", "/api/outages/calls", {"load": a_load(grid), "text": "dark"}, CONTROL),
        ("POST", f"/api/outages/{oid}/crew", {"crew": "crew 4"}, CONTROL),
        ("POST", f"/api/outages/{oid}/etr", {"etr": (T0 + timedelta(hours=3)).isoformat()}, CONTROL),
    ]
    for role in Role:
        client, headers = login(app, role.value)
        for method, path, body, allowed in routes:
            response = client.request(method, path, json=body, headers=headers)
            if role.value in allowed:
                assert response.status_code in (200, 201), (role, path, response.text)
            else:
                assert response.status_code == 403, (role, path, response.text)
                assert "may not" in response.json()["detail"]
    anonymous = TestClient(app)
    for method, path, body, _ in routes:
        assert anonymous.request(method, path, json=body).status_code == 401


def test_call_to_close_is_logged_and_audited(served: tuple[FastAPI, ControlRoom], grid: Grid) -> None:
    app, room = served
    client, h = login(app, "operator")
    load = a_load(grid)
    t_call = T0 + timedelta(minutes=1)
    made = client.post(
        "/api/outages/calls", json={"load": load, "text": "lights out", "time": t_call.isoformat()}, headers=h
    )
    assert made.status_code == 201, made.text
    outage = made.json()["outage"]
    assert outage["state"] == "predicted"
    assert outage["source"] == "call"
    assert outage["customers"] > 0
    oid = outage["id"]
    assert client.post(f"/api/outages/{oid}/crew", json={"crew": "crew 12"}, headers=h).json()["crew"] == "crew 12"
    etr = (T0 + timedelta(hours=2)).isoformat()
    assert client.post(f"/api/outages/{oid}/etr", json={"etr": etr}, headers=h).status_code == 200
    first = outage["nodes"][0]
    step = client.post(
        f"/api/outages/{oid}/steps",
        json={"nodes": [first], "time": (t_call + timedelta(minutes=20)).isoformat()},
        headers=h,
    )
    assert step.status_code == 200, step.text
    assert step.json()["state"] == "restoring"
    done = client.post(
        f"/api/outages/{oid}/close",
        json={"time": (t_call + timedelta(minutes=60)).isoformat(), "cause": "fuse blown"},
        headers=h,
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "restored"
    assert body["customers_off"] == 0
    assert body["cause"] == "fuse blown"
    restored_first = body["steps"][0]["customers"]
    expected_cmi = restored_first * 20 + (outage["customers"] - restored_first) * 60
    detail = client.get(f"/api/outages/{oid}").json()
    assert detail["calls"][0]["load"] == load
    assert detail["calls"][0]["text"] == "lights out"
    assert sum(ld["customers"] for ld in detail["loads"]) == outage["customers"]
    assert client.post(f"/api/outages/{oid}/close", json={}, headers=h).status_code == 409

    served_n = 1000
    report = client.get(
        f"/api/reliability?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&customers_served={served_n}",
        headers=h,
    ).json()
    assert report["customer_minutes"] == pytest.approx(expected_cmi)
    assert report["saidi_min"] == pytest.approx(expected_cmi / served_n)
    assert report["ctaidi_min"] == pytest.approx(expected_cmi / outage["customers"])
    assert report["caifi"] == pytest.approx(1.0)
    assert report["customers_served"] == served_n
    # the daily SAIDI series: the one day of the outage carries all of its customer minutes
    assert report["daily_saidi"] == [
        {"date": start_day(detail["start"]), "saidi_min": pytest.approx(expected_cmi / served_n)}
    ]
    start = datetime.fromisoformat(detail["start"])
    ens_wh = sum(
        ld["p_w"] * (datetime.fromisoformat(ld["restored"]) - start).total_seconds() / 3600 for ld in detail["loads"]
    )
    assert report["ens_mwh"] == pytest.approx(ens_wh / 1e6)
    assert report["ens_mwh"] > 0

    kinds = [e.kind for e in room.historian.events.find(kind_prefix="outage.")]
    audited = [r for r in room.audit.read() if r.action.startswith("outage.")]
    expected = ["outage.call", "outage.crew", "outage.etr", "outage.step", "outage.close"]
    assert kinds == expected
    assert [r.action for r in audited] == expected
    assert all(r.actor == "operator" and r.element == f"outage:{oid}" for r in audited)


def start_day(iso: str) -> str:
    """The UTC calendar day an ISO 8601 time falls on."""
    return datetime.fromisoformat(iso).astimezone(UTC).date().isoformat()


def test_hostile_requests_change_nothing(served: tuple[FastAPI, ControlRoom], grid: Grid) -> None:
    app, room = served
    client, h = login(app, "operator")
    made = client.post("/api/outages/calls", json={"load": a_load(grid), "text": "x"}, headers=h).json()["outage"]
    oid = made["id"]

    def count() -> tuple[int, int]:
        with room.historian.engine.connect() as conn:
            return (
                int(conn.execute(sa.select(sa.func.count()).select_from(outages)).scalar_one()),
                int(conn.execute(sa.select(sa.func.count()).select_from(outage_calls)).scalar_one()),
            )

    before = count()
    hj = {**h, "content-type": "application/json"}
    cases: list[tuple[str, str, bytes, int, str]] = [
        ("POST", f"/api/outages/{oid}/close", json.dumps({"time": "2020-01-01T00:00:00Z"}).encode(), 400, "before"),
        (
            "POST",
            f"/api/outages/{oid}/steps",
            json.dumps({"time": "2020-01-01T00:00:00Z", "nodes": made["nodes"][:1]}).encode(),
            400,
            "before",
        ),
        ("POST", f"/api/outages/{oid}/steps", json.dumps({"nodes": ["no such node"]}).encode(), 400, "not interrupted"),
        ("POST", f"/api/outages/{oid}/etr", json.dumps({"etr": "2020-01-01T00:00:00Z"}).encode(), 400, "before"),
        ("POST", f"/api/outages/{oid}/etr", json.dumps({"etr": "2030-01-01T00:00:00"}).encode(), 422, "etr"),
        ("POST", "/api/outages/999999/close", b"{}", 404, "no outage"),
        ("POST", "/api/outages/0/close", b"{}", 422, "outage_id"),
        ("GET", "/api/outages/999999", b"", 404, "no outage"),
        ("GET", "/api/outages/abc", b"", 422, "outage_id"),
        ("POST", "/api/outages/calls", json.dumps({"load": "no such load", "text": "x"}).encode(), 404, "no load"),
        ("POST", "/api/outages/calls", json.dumps({"node": "no such node", "text": "x"}).encode(), 404, "no node"),
        (
            "POST",
            "/api/outages/calls",
            json.dumps({"load": a_load(grid), "text": "dark\u0000"}).encode(),
            400,
            "control character",
        ),
        (
            "POST",
            "/api/outages/calls",
            json.dumps({"load": a_load(grid), "text": "dark\u202e"}).encode(),
            400,
            "bidirectional",
        ),
        ("POST", f"/api/outages/{oid}/crew", json.dumps({"crew": "crew\u001b[2J"}).encode(), 400, "control character"),
        ("POST", "/api/outages/calls", json.dumps({"text": "x"}).encode(), 422, "either"),
        (
            "POST",
            "/api/outages/calls",
            json.dumps({"load": a_load(grid), "node": "n", "text": "x"}).encode(),
            422,
            "either",
        ),
        (
            "POST",
            "/api/outages/calls",
            json.dumps({"load": a_load(grid), "text": "x", "extra": 1}).encode(),
            422,
            "extra",
        ),
        ("POST", "/api/outages/calls", json.dumps({"load": a_load(grid), "text": "x" * 2001}).encode(), 422, "text"),
        ("POST", "/api/outages/calls", json.dumps({"load": a_load(grid), "text": "x" * 30_000}).encode(), 413, "limit"),
        ("POST", "/api/outages/calls", b"{not json", 422, "not valid JSON"),
        ("GET", "/api/outages?limit=100000", b"", 422, "limit"),
        ("GET", "/api/outages?state=gone", b"", 422, "state"),
        ("GET", "/api/reliability?from=2026-01-01T00:00:00Z&to=2025-01-01T00:00:00Z", b"", 400, "after"),
        ("GET", "/api/reliability?from=2026-01-01T00:00:00&to=2027-01-01T00:00:00Z", b"", 400, "zone"),
        ("GET", "/api/reliability?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&tz=Mars/Base", b"", 400, "tz"),
        ("GET", "/api/reliability?from=2026-01-01T00:00:00Z", b"", 422, "to"),
    ]
    for method, path, body, status, words in cases:
        response = client.request(method, path, content=body or None, headers=hj)
        assert response.status_code == status, (path, body[:80], response.text)
        assert words.lower() in response.text.lower(), (path, response.text)
    assert count() == before


def test_a_flood_of_calls_groups_and_pages(served: tuple[FastAPI, ControlRoom], grid: Grid) -> None:
    app, _ = served
    client, h = login(app, "operator")
    ids = set()
    for k in range(40):
        response = client.post("/api/outages/calls", json={"load": a_load(grid, k % 3), "text": f"call {k}"}, headers=h)
        assert response.status_code == 201, response.text
        ids.add(response.json()["outage"]["id"])
    assert len(ids) <= 3  # calls from the same loads join their predictions
    listed = client.get("/api/outages?limit=2").json()
    assert len(listed) <= 2
    everything = client.get("/api/outages?state=predicted").json()
    assert {o["id"] for o in everything} == ids
    if len(everything) > 1:
        page = client.get(f"/api/outages?before={everything[0]['id']}").json()
        assert [o["id"] for o in page] == [o["id"] for o in everything[1:]]
    detail = client.get(f"/api/outages/{min(ids)}").json()
    assert len(detail["calls"]) >= 40 // 3


def test_confirm_and_cancel_predictions(served: tuple[FastAPI, ControlRoom], grid: Grid) -> None:
    app, room = served
    client, h = login(app, "operator")
    made = client.post("/api/outages/calls", json={"load": a_load(grid), "text": "x"}, headers=h).json()["outage"]
    oid = made["id"]
    refused = client.post(f"/api/outages/{oid}/cancel", json={"reason": "bad\u0007"}, headers=h)
    assert refused.status_code == 400
    assert "control character" in refused.text
    confirmed = client.post(f"/api/outages/{oid}/confirm", headers=h)
    assert confirmed.status_code == 200
    assert confirmed.json()["state"] == "confirmed"
    assert client.post(f"/api/outages/{oid}/confirm", headers=h).status_code == 409
    cancelled = client.post(f"/api/outages/{oid}/cancel", json={"reason": "customer's own fuse"}, headers=h)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert client.post(f"/api/outages/{oid}/cancel", headers=h).status_code == 409
    # a cancelled prediction no longer takes calls: the next call opens a new one
    again = client.post("/api/outages/calls", json={"load": a_load(grid), "text": "x"}, headers=h).json()["outage"]
    assert again["id"] != oid
    viewer, vh = login(app, "viewer")
    assert viewer.post(f"/api/outages/{again['id']}/cancel", headers=vh).status_code == 403
    audited = [r.action for r in room.audit.read() if r.action.startswith("outage.")]
    assert audited.count("outage.cancel") == 1
    assert audited.count("outage.confirm") == 1
