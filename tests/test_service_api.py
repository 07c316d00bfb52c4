"""The control-room API on a SimBench MV grid: every endpoint x every role, sessions, CSRF, bad requests.

Login throttling, rate limits and refused-access auditing: ``test_login_protection.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import UNLIMITED_LOGINS
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_cycle import field_readings, points_of

from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.cycle import RealTimeCycle
from opendso.quality import Quality
from opendso.service import ControlRoom, Role, Security, ServiceSettings, create_app, ensure_admin, schematic_layout
from opendso.service.security import CSRF_HEADER, SESSION_COOKIE, SecuritySettings
from opendso.store import Historian
from opendso.store.security_schema import users

CODE = "simbench:1-MV-urban--0-sw"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
#: Cheap hashing keeps the tests fast; the hash format (argon2id) is the same as in production.
FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@dataclass
class Service:
    app: FastAPI
    room: ControlRoom
    historian: Historian
    grid: Grid
    bad_point: str
    trend_point: str


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


def _service(grid: Grid, folder: Path) -> Service:
    historian = Historian.open(f"sqlite:///{folder / 'opendso.db'}")
    points = points_of(grid)
    historian.register_points(list(points))
    cycle = RealTimeCycle(grid, points)
    room = ControlRoom(grid, historian, cycle=cycle, points=points, clock=lambda: T0 + timedelta(seconds=1))
    readings = field_readings(grid, T0)
    bad_point = sorted(readings)[0]
    # a telemetry failure alarm
    readings[bad_point] = Measurement(bad_point, T0, readings[bad_point].value, int(Quality.INVALID))
    trend_point = sorted(readings)[1]
    historian.write([Measurement(trend_point, T0 + timedelta(seconds=k), 10.0 + k, 0) for k in range(3)])
    room.run_cycle(readings, T0)
    security = Security(historian.engine, settings=FAST)
    for role in Role:
        security.add_user(role.value, PASSWORD, [role.value])
    return Service(
        create_app(room, ServiceSettings(max_body_bytes=10_000, security=FAST, login=UNLIMITED_LOGINS)),
        room,
        historian,
        grid,
        bad_point,
        trend_point,
    )


@pytest.fixture(scope="module")
def shared(grid: Grid, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _service(grid, tmp_path_factory.mktemp("service"))
    yield service
    service.historian.close()


@pytest.fixture
def fresh(grid: Grid, tmp_path: Path) -> Iterator[Service]:
    service = _service(grid, tmp_path)
    yield service
    service.historian.close()


def login(app: FastAPI, username: str, password: str = PASSWORD) -> tuple[TestClient, str]:
    client = TestClient(app)
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return client, response.json()["csrf_token"]


def alarm_key(service: Service) -> str:
    return f"telemetry:{service.bad_point}"


# -- every endpoint against every role ---------------------------------------------------------------------
VIEW = {r.value for r in Role}
CONTROL = {"operator"}
AUDIT = {"security_auditor"}


def _first_substation(service: Service) -> int:
    from opendso.grid.topology import analyse_topology

    return int(analyse_topology(service.grid).substations.id[0])


def endpoints(service: Service) -> list[tuple[str, str, dict[str, object] | None, set[str]]]:
    key = quote(alarm_key(service), safe="")
    node_id = int(service.grid.component("node")["id"][0])
    until = (T0 + timedelta(hours=2)).isoformat()
    return [
        ("GET", "/api/auth/me", None, VIEW),
        ("GET", "/api/grid", None, VIEW),
        ("GET", f"/api/grid/elements/{node_id}", None, VIEW),
        ("GET", "/api/grid/diagram", None, VIEW),
        ("GET", f"/api/grid/diagram?substation={_first_substation(service)}", None, VIEW),
        ("GET", "/api/state", None, VIEW),
        ("GET", "/api/status", None, VIEW),
        (
            "GET",
            f"/api/measurements/{quote(service.bad_point, safe='')}?from=2026-11-23T07:00:00Z&to=2026-11-23T09:00:00Z",
            None,
            VIEW,
        ),
        ("GET", "/api/alarms", None, VIEW),
        ("GET", "/api/events", None, VIEW),
        ("GET", "/api/shiftlog", None, VIEW),
        ("POST", f"/api/alarms/{key}/acknowledge", None, CONTROL),
        ("POST", f"/api/alarms/{key}/shelve", {"until": until, "reason": "maintenance"}, CONTROL),
        ("POST", "/api/shiftlog", {"text": "handover: feeder 3 on backup"}, CONTROL),
        ("GET", "/api/switching/state", None, VIEW),
        ("POST", "/api/switching/preview", {"switch": "MV3.101 Switch 13", "action": "open"}, CONTROL),
        ("GET", "/api/outages", None, VIEW),
        ("GET", "/api/reliability?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z", None, VIEW),
        ("POST", "/api/outages/calls", {"load": str(service.grid.names_of("sym_load")[0]), "text": "dark"}, CONTROL),
        ("GET", "/api/audit", None, AUDIT),
        ("GET", "/api/congestion?issued=2016-06-21T06:00:00Z&scenarios=2&steps=4", None, VIEW),
        ("GET", "/api/flex/portfolios", None, VIEW),
        ("GET", "/api/flex/envelopes?issued=2016-06-21T06:00:00Z&steps=4", None, VIEW),
        ("GET", "/api/tso/day-ahead?issued=2016-06-21T06:00:00Z&steps=4", None, VIEW),
        ("GET", "/api/dr", None, VIEW),
        ("GET", "/api/dr/events", None, VIEW),
    ]


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_endpoint_against_every_role(shared: Service, role: str) -> None:
    client, csrf = login(shared.app, role)
    for method, path, body, allowed in endpoints(shared):
        response = client.request(method, path, json=body, headers={CSRF_HEADER: csrf})
        if role in allowed:
            assert response.status_code in (200, 201), (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.text)
            assert "may not" in response.json()["detail"]


def test_without_a_session_every_endpoint_is_401(shared: Service) -> None:
    client = TestClient(shared.app)
    for method, path, body, _allowed in endpoints(shared):
        response = client.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
    assert client.post("/api/auth/logout").status_code == 401
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/api/stream") as ws:
        ws.receive_json()


def test_bearer_tokens_for_api_clients_need_no_csrf(shared: Service) -> None:
    client = TestClient(shared.app)
    form = client.post("/api/auth/token", data={"username": "operator", "password": PASSWORD})
    assert form.status_code == 200, form.text
    token = form.json()["access_token"]
    assert form.json()["token_type"] == "bearer"
    as_json = client.post("/api/auth/token", json={"username": "viewer", "password": PASSWORD})
    assert as_json.status_code == 200
    headers = {"Authorization": f"Bearer {token}"}
    note = client.post("/api/shiftlog", json={"text": "from the API"}, headers=headers)
    assert note.status_code == 201, note.text
    assert note.json()["actor"] == "operator"
    assert client.get("/api/auth/me", headers=headers).json()["csrf_token"] is None
    assert client.get("/api/state", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert client.get("/api/state", headers={"Authorization": "Basic abc"}).status_code == 401
    bad = client.post("/api/auth/token", data={"username": "operator", "password": "wrong password"})
    assert bad.status_code == 401


# -- sessions and CSRF -------------------------------------------------------------------------------------
def test_login_sets_a_strict_http_only_cookie_and_logout_ends_the_session(shared: Service) -> None:
    client = TestClient(shared.app)
    response = client.post("/api/auth/login", json={"username": "viewer", "password": PASSWORD})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    body = response.json()
    assert body["user"] == "viewer"
    assert body["roles"] == ["viewer"]
    me = client.get("/api/auth/me").json()
    assert me["csrf_token"] == body["csrf_token"]
    token = client.cookies[SESSION_COOKIE]
    assert client.post("/api/auth/logout").status_code == 403  # CSRF needed for logout too
    assert client.post("/api/auth/logout", headers={CSRF_HEADER: body["csrf_token"]}).status_code == 204
    stale = TestClient(shared.app, cookies={SESSION_COOKIE: token})
    assert stale.get("/api/state").status_code == 401


def test_over_https_the_cookie_is_secure(shared: Service) -> None:
    client = TestClient(shared.app, base_url="https://testserver")
    response = client.post("/api/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert "Secure" in response.headers["set-cookie"]


def test_cookie_posts_need_the_csrf_token(fresh: Service) -> None:
    client, csrf = login(fresh.app, "operator")
    key = quote(alarm_key(fresh), safe="")
    before = fresh.historian.events.last_seq()
    for headers in ({}, {CSRF_HEADER: "forged"}):
        assert client.post("/api/shiftlog", json={"text": "x"}, headers=headers).status_code == 403
        assert client.post(f"/api/alarms/{key}/acknowledge", headers=headers).status_code == 403
    assert fresh.historian.events.last_seq() == before
    assert client.post(f"/api/alarms/{key}/acknowledge", headers={CSRF_HEADER: csrf}).status_code == 200


def test_same_message_for_unknown_user_and_wrong_password(shared: Service) -> None:
    client = TestClient(shared.app)
    unknown = client.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD})
    wrong = client.post("/api/auth/login", json={"username": "engineer", "password": "not the password"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    assert SESSION_COOKIE not in client.cookies


def test_passwords_are_stored_as_argon2_hashes(shared: Service) -> None:
    with shared.historian.engine.connect() as conn:
        hashes = conn.execute(sa.select(users.c.password_hash)).scalars().all()
    assert len(hashes) == len(Role)
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)
    raw = (Path(shared.historian.engine.url.database or "")).read_bytes()
    assert PASSWORD.encode() not in raw


def test_ensure_admin_creates_one_administrator_once(tmp_path: Path) -> None:
    with Historian.open(f"sqlite:///{tmp_path / 'a.db'}") as historian:
        secret = ensure_admin(historian)
        assert secret is not None
        assert len(secret) >= 12
        assert ensure_admin(historian) is None
        admin = Security(historian.engine).authenticate("admin", secret)
        assert set(admin.roles) == {Role.SECURITY_ADMINISTRATOR, Role.OPERATOR, Role.ENGINEER}


def test_generated_admin_password_must_be_changed_chosen_one_need_not(tmp_path: Path) -> None:
    with Historian.open(f"sqlite:///{tmp_path / 'a.db'}") as historian:
        ensure_admin(historian)
        assert Security(historian.engine).get_user("admin").must_change_password is True
    with Historian.open(f"sqlite:///{tmp_path / 'b.db'}") as historian:
        ensure_admin(historian, password="chosen by the installer")
        assert Security(historian.engine).get_user("admin").must_change_password is False


def test_temporary_password_allows_only_changing_it(fresh: Service) -> None:
    security = Security(fresh.historian.engine, settings=FAST)
    security.add_user("nina", PASSWORD, ["operator"], actor="admin", must_change_password=True)
    client, csrf = login(fresh.app, "nina")
    assert client.get("/api/auth/me").json()["password_change_required"] is True
    refused = client.get("/api/state")
    assert refused.status_code == 403
    assert "new password first" in refused.json()["detail"]
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/api/stream") as ws:
        ws.receive_json()
    other, _ = login(fresh.app, "nina")  # a second session of the same user
    change = "/api/auth/password"
    assert client.post(change, json={"current_password": "x", "new_password": "y" * 12}).status_code == 403  # CSRF
    headers = {CSRF_HEADER: csrf}
    wrong = client.post(change, json={"current_password": "wrong one!", "new_password": "y" * 12}, headers=headers)
    assert wrong.status_code == 401
    same = client.post(change, json={"current_password": PASSWORD, "new_password": PASSWORD}, headers=headers)
    assert same.status_code == 400
    assert "differ" in same.json()["detail"]
    short = client.post(change, json={"current_password": PASSWORD, "new_password": "short"}, headers=headers)
    assert short.status_code == 400
    assert security.get_user("nina").must_change_password is True  # nothing changed by the bad requests
    ok = client.post(
        change, json={"current_password": PASSWORD, "new_password": "nina's own password"}, headers=headers
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["password_change_required"] is False
    assert client.get("/api/state").status_code == 200  # the same session goes on
    assert other.get("/api/state").status_code == 401  # other sessions ended
    assert security.authenticate("nina", "nina's own password").must_change_password is False
    record = [r for r in fresh.room.audit.read(0, limit=1000) if r.action == "user.password"][-1]
    assert record.actor == "nina"
    assert record.reason == "own"


# -- the endpoints' content --------------------------------------------------------------------------------
def test_grid_state_and_status_follow_the_contract(shared: Service) -> None:
    client, _ = login(shared.app, "viewer")
    grid = client.get("/api/grid").json()
    assert grid["name"] == shared.grid.name
    nodes = shared.grid.component("node")
    assert len(grid["nodes"]) == nodes.size
    assert all(np.isfinite([n["x"], n["y"]]).all() for n in grid["nodes"])
    assert {n["id"] for n in grid["nodes"]} == set(nodes["id"].tolist())
    assert len(grid["switches"]) == shared.grid.switches.size
    node_ids = set(nodes["id"].tolist())
    assert all(b["from_node"] in node_ids and b["to_node"] in node_ids for b in grid["branches"])
    state = client.get("/api/state").json()
    assert state["converged"] is True
    assert set(state["u_pu"]) == {str(i) for i in nodes["id"].tolist()}
    assert all(0.8 < v < 1.2 for v in state["u_pu"].values())
    assert state["loading"]
    assert all(state["energised"].values())
    status = client.get("/api/status").json()
    assert status["telemetry"]["bad"] == 1
    # one definition of the counts everywhere (issue 8, item 10): other tests acknowledge and shelve
    assert set(status["alarms"]) == {"standing", "unacknowledged", "shelved", "out_of_service", "suppressed"}
    assert status["simulated_time"] is None
    alarms = client.get("/api/alarms").json()
    assert alarm_key(shared) in {a["key"] for a in alarms}
    element = client.get(f"/api/grid/elements/{int(nodes['id'][0])}").json()
    assert element["component"] == "node"
    assert element["name"] == str(shared.grid.names_of("node")[0])
    assert "u_rated" in element["fields"]
    docs = client.get("/api/openapi.json").json()
    assert "/api/state" in docs["paths"]
    assert client.get("/api/docs").status_code == 200


def test_schematic_layout_is_finite_and_layered(grid: Grid) -> None:
    from opendso.grid.topology import analyse_topology

    xy = schematic_layout(grid)
    assert xy.shape == (grid.count("node"), 2)
    assert np.isfinite(xy).all()
    pred = analyse_topology(grid).pred_node
    child = np.flatnonzero(pred >= 0)
    assert np.all(xy[child, 1] == xy[pred[child], 1] - 1)  # one layer below the predecessor


def test_measurements_raw_and_aggregated(shared: Service) -> None:
    client, _ = login(shared.app, "viewer")
    point = quote(shared.trend_point, safe="")
    window = "from=2026-11-23T07:59:00Z&to=2026-11-23T08:10:00Z"
    raw = client.get(f"/api/measurements/{point}?{window}").json()
    assert [m["ts"] for m in raw] == [(T0 + timedelta(seconds=k)).isoformat() for k in range(3)]
    agg = client.get(f"/api/measurements/{point}?{window}&interval=600").json()
    assert len(agg) == 1
    assert agg[0]["count"] == 3
    assert agg[0]["max"] - agg[0]["min"] == pytest.approx(2.0)


def test_acknowledge_and_shelve_reach_the_alarms_event_log_and_audit(fresh: Service) -> None:
    client, csrf = login(fresh.app, "operator")
    key = alarm_key(fresh)
    h = {CSRF_HEADER: csrf}
    ack = client.post(f"/api/alarms/{quote(key, safe='')}/acknowledge", headers=h)
    assert ack.status_code == 200
    assert ack.json()["transition"] == "acknowledged"
    assert next(a for a in client.get("/api/alarms").json() if a["key"] == key)["acknowledged"] is True
    until = T0 + timedelta(hours=1)
    shelve = client.post(
        f"/api/alarms/{quote(key, safe='')}/shelve", json={"until": until.isoformat(), "reason": "RTU work"}, headers=h
    )
    assert shelve.status_code == 200, shelve.text
    alarm = next(a for a in client.get("/api/alarms").json() if a["key"] == key)
    assert alarm["shelved_until"] == until.isoformat()
    kinds = [(e["kind"], e["actor"]) for e in client.get("/api/events").json()]
    assert ("alarm.acknowledged", "operator") in kinds
    assert ("alarm.shelved", "operator") in kinds
    note = client.post("/api/shiftlog", json={"text": "RTU 4 in maintenance until 10:00"}, headers=h).json()
    assert client.get("/api/shiftlog").json()[-1] == note
    after = client.get(f"/api/events?after={note['seq'] - 1}").json()
    assert after[0]["seq"] == note["seq"]
    auditor, _ = login(fresh.app, "security_auditor")
    actions = [(r["action"], r["actor"], r["element"]) for r in auditor.get("/api/audit").json()]
    assert ("alarm.acknowledge", "operator", key) in actions
    assert ("alarm.shelve", "operator", key) in actions
    assert ("shift.note", "operator", f"event:{note['seq']}") in actions
    assert ("login", "operator", "user:operator") in actions


# -- bad requests change nothing -----------------------------------------------------------------------------
def _snapshot(service: Service) -> tuple[int, int, list[dict[str, object]]]:
    return service.historian.events.last_seq(), service.room.audit.last_seq(), service.room.alarms()


def test_bad_requests_get_4xx_and_change_nothing(fresh: Service) -> None:
    client, csrf = login(fresh.app, "operator")
    h = {CSRF_HEADER: csrf, "content-type": "application/json"}
    key = quote(alarm_key(fresh), safe="")
    before = _snapshot(fresh)
    cases: list[tuple[str, str, bytes | None, int, str]] = [
        ("POST", "/api/shiftlog", b"{not json", 422, "not valid JSON"),
        ("POST", "/api/shiftlog", b'{"text": 42}', 422, "text"),
        ("POST", "/api/shiftlog", b'{"text": ""}', 422, "text"),
        ("POST", "/api/shiftlog", b'{"text": "x", "extra": 1}', 422, "extra"),
        ("POST", "/api/shiftlog", json.dumps({"text": "x" * 20_000}).encode(), 413, "limit"),
        ("POST", f"/api/alarms/{key}/shelve", b'{"until": "tomorrow", "reason": "x"}', 422, "until"),
        ("POST", f"/api/alarms/{key}/shelve", b'{"until": "2026-11-23T12:00:00", "reason": "x"}', 422, "until"),
        ("POST", f"/api/alarms/{key}/shelve", b'{"until": "2020-01-01T00:00:00Z", "reason": "x"}', 400, "future"),
        ("POST", f"/api/alarms/{key}/shelve", b'{"until": "2026-11-23T12:00:00Z", "reason": ""}', 422, "reason"),
        ("POST", "/api/alarms/voltage%3Ano-such-node/acknowledge", None, 404, "no alarm"),
        ("POST", "/api/alarms/nonsense/acknowledge", None, 404, "no alarm"),
        ("GET", "/api/grid/elements/999999", None, 404, "no element"),
        ("GET", "/api/grid/elements/abc", None, 422, "element_id"),
        ("GET", "/api/grid/diagram?substation=2147483647", None, 404, "no substation"),
        ("GET", "/api/grid/diagram?feeder=abc", None, 422, "feeder"),
        ("GET", "/api/grid/diagram?substation=1&feeder=1", None, 400, "either"),
        ("GET", "/api/measurements/no-such-point", None, 404, "no-such-point"),
        ("GET", f"/api/measurements/{quote(fresh.bad_point, safe='')}?from=yesterday", None, 400, "ISO 8601"),
        ("GET", f"/api/measurements/{quote(fresh.bad_point, safe='')}?from=2026-11-23T08:00:00", None, 400, "zone"),
        ("GET", f"/api/measurements/{quote(fresh.bad_point, safe='')}?interval=-5", None, 422, "interval"),
        ("GET", "/api/events?after=-1", None, 422, "after"),
        ("GET", "/api/events?limit=abc", None, 422, "limit"),
    ]
    for method, path, content, status, words in cases:
        response = client.request(method, path, content=content, headers=h)
        assert response.status_code == status, (path, content, response.text)
        assert words in response.json()["detail"], (path, response.json())
    assert _snapshot(fresh) == before


def test_chunked_oversized_body_is_refused(fresh: Service) -> None:
    client, csrf = login(fresh.app, "operator")
    before = _snapshot(fresh)

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/api/shiftlog", content=chunks(), headers={CSRF_HEADER: csrf})
    assert response.status_code == 413
    assert _snapshot(fresh) == before


def test_acknowledging_an_alarm_that_is_not_in_the_list_is_a_conflict(fresh: Service) -> None:
    client, csrf = login(fresh.app, "operator")
    node = str(fresh.grid.names_of("node")[0])
    response = client.post(f"/api/alarms/{quote('voltage:' + node, safe='')}/acknowledge", headers={CSRF_HEADER: csrf})
    assert response.status_code == 409


def test_state_etag_answers_304_until_the_next_cycle(fresh: Service) -> None:
    client, _ = login(fresh.app, "viewer")
    first = client.get("/api/state")
    etag = first.headers["etag"]
    unchanged = client.get("/api/state", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert client.get("/api/state", headers={"If-None-Match": '"other"'}).status_code == 200
    readings = field_readings(fresh.grid, T0 + timedelta(seconds=2))
    fresh.room.run_cycle(readings, T0 + timedelta(seconds=2))
    changed = client.get("/api/state", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["time"] == (T0 + timedelta(seconds=2)).isoformat()
    assert first.json()["time"] == T0.isoformat()


# -- the WebSocket stream ----------------------------------------------------------------------------------
def test_stream_delivers_state_after_a_cycle(fresh: Service) -> None:
    client, _ = login(fresh.app, "viewer")
    with client.websocket_connect("/api/stream") as ws:
        first = ws.receive_json()
        assert first["type"] == "state"
        assert ws.receive_json()["type"] == "status"
        readings = field_readings(fresh.grid, T0 + timedelta(seconds=2))
        fresh.room.run_cycle(readings, T0 + timedelta(seconds=2))
        messages = [ws.receive_json() for _ in range(3)]
    types = [m["type"] for m in messages]
    assert types[0] == "state"
    assert messages[0]["time"] == (T0 + timedelta(seconds=2)).isoformat()
    assert abs(messages[0]["published_at"] - time.time()) < 60  # when the service published it (epoch s)
    assert "alarm" in types  # the telemetry failure cleared
    cleared = next(m for m in messages if m["type"] == "alarm")
    assert cleared["event"]["transition"] == "cleared"
    assert cleared["event"]["key"] == alarm_key(fresh)


def test_stream_refuses_other_origins(shared: Service) -> None:
    client, _ = login(shared.app, "viewer")
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/api/stream", headers={"origin": "https://evil.example"}) as ws,
    ):
        ws.receive_json()


@pytest.mark.asyncio
async def test_outbox_conflates_states_and_keeps_alarms_in_order() -> None:
    from opendso.service.controlroom import Outbox

    box = Outbox(limit=3)
    box.offer("state", "s1")
    box.offer("alarm", "a1")
    box.offer("status", "st1")
    box.offer("state", "s2")  # a slow client gets the newest state, not both
    box.offer("status", "st2")
    assert [await box.get() for _ in range(len(box))] == ["a1", "s2", "st2"]
    assert box.conflated == 2
    for k in range(5):
        box.offer("alarm", f"a{k}")
    assert box.dropped == 2  # past the limit the oldest alarm message goes
    assert [await box.get() for _ in range(len(box))] == ["a2", "a3", "a4"]


@pytest.mark.asyncio
async def test_fanout_reaches_subscribers_from_any_thread_and_forgets_closed_loops() -> None:
    import asyncio
    import threading

    from opendso.service.controlroom.fanout import Fanout

    fanout = Fanout()
    box = fanout.subscribe()
    assert len(fanout) == 1
    sender = threading.Thread(target=lambda: fanout.send({"type": "alarm", "n": 1, "text": 'a "quoted" ]'}))
    sender.start()
    sender.join()
    assert json.loads(await asyncio.wait_for(box.get(), 5)) == {"type": "alarm", "n": 1, "text": 'a "quoted" ]'}
    with pytest.raises(ValueError, match="Out of range float values"):
        fanout.send({"type": "state", "u": float("nan")})  # never invalid JSON on the wire
    from opendso.service.controlroom.fanout import Outbox, _Subscriber

    closed = asyncio.new_event_loop()
    closed.close()
    fanout._subscribers.append(_Subscriber(closed, Outbox()))  # a client whose loop has gone
    assert len(fanout) == 2
    fanout.send_text("status", b'{"type":"status"}')
    assert len(fanout) == 1
    assert await asyncio.wait_for(box.get(), 5) == '{"type":"status"}'
    fanout.unsubscribe(box)
    fanout.unsubscribe(box)  # twice is harmless
    assert len(fanout) == 0


#: Routes anyone may call (they authenticate the caller themselves) and routes that read their body
#: themselves and so check the session in their own code (before the body is read).
PUBLIC = {("POST", "/api/auth/login"), ("POST", "/api/auth/token"), ("GET", "/api/docs"), ("GET", "/")}
SESSION_IN_BODY = {
    ("POST", "/api/auth/password"),
    ("POST", "/api/users"),
    ("POST", "/api/users/{username}/password"),
}


def test_every_route_states_its_permission(shared: Service) -> None:
    """A new router cannot forget the permission dependency: every route but the public ones has one."""
    from fastapi.routing import APIRoute

    from opendso.service.routes import ROUTERS
    from opendso.service.routes.deps import current_session

    def calls(dependant: object) -> set[object]:
        found: set[object] = set()
        for dep in getattr(dependant, "dependencies", []):
            found.add(dep.call)
            found |= calls(dep)
        return found

    checked = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods:
            if (method, route.path) in PUBLIC:
                continue
            checked.append((method, route.path))
            deps = calls(route.dependant)
            guarded = current_session in deps or any(
                getattr(c, "__qualname__", "").startswith("require.") for c in deps
            )
            assert guarded or (method, route.path) in SESSION_IN_BODY, f"{method} {route.path} has no permission check"
    assert len(checked) > 30
    anonymous = TestClient(shared.app)
    for method, path in SESSION_IN_BODY:
        response = anonymous.request(method, path.replace("{username}", "viewer"), json={})
        assert response.status_code == 401, (path, response.text)
