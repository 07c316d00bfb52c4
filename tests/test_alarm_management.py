"""Alarm management over the API (issue 8, items 9-14): ISA-18.2 states, one count definition, persistence,
acknowledging what is on screen, cause-headed groups, the alarm journal and its performance figures.

The control room runs a real-time cycle on a SimBench MV grid with field readings computed by a
power flow; alarms come from that cycle, actions go through the real FastAPI app, the event
log and the audit trail, and the alarm state is persisted in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import UNLIMITED_LOGINS, feeder_breaker
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_cycle import field_readings, points_of
from test_service_api import CODE, FAST, PASSWORD, T0

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import Measurement
from opendso.operations.alarms import count_states
from opendso.operations.cycle import RealTimeCycle
from opendso.quality import Quality
from opendso.service import ControlRoom, Role, Security, ServiceSettings, create_app
from opendso.service.security import CSRF_HEADER
from opendso.store import Historian

VIEW = {r.value for r in Role}
CONTROL = {"operator"}
CONFIGURE = {"engineer", "installer", "security_administrator"}


@dataclass
class Room:
    app: FastAPI
    room: ControlRoom
    historian: Historian
    grid: Grid
    breaker: str
    bad_point: str
    readings: dict[str, Measurement]
    tripped: dict[str, Measurement]
    clock: list[datetime]


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


def _labels(grid: Grid) -> Any:
    import numpy as np

    topo = analyse_topology(grid)
    names = dict(zip(topo.feeders.id.tolist(), topo.feeders.name.tolist(), strict=True))
    return np.array([names.get(int(f)) for f in topo.node_feeder], dtype=object)


def _open(grid: Grid, url: str, folder: Path, *, users: bool = True) -> Room:
    """A control room on ``url`` (a new one on the same database is a restart), the field healthy at T0."""
    folder.mkdir(exist_ok=True)
    # one integrity key per database: a restart opens the same database with the same key
    historian = Historian.open(url, buffer_path=folder / "buffer", key_path=folder.parent / "integrity.key")
    points = points_of(grid)
    historian.register_points(list(points))
    clock = [T0 + timedelta(seconds=1)]
    cycle = RealTimeCycle(grid, points, feeder_of_node=_labels(grid))
    room = ControlRoom(grid, historian, cycle=cycle, points=points, clock=lambda: clock[0])
    readings = field_readings(grid, T0)
    bad_point = sorted(p for p in readings if p.endswith("/u"))[0]
    # a telemetry failure
    readings[bad_point] = Measurement(bad_point, T0, readings[bad_point].value, int(Quality.INVALID))
    breaker = str(grid.switch_names[feeder_breaker(grid)])
    tripped = dict(readings)
    tripped[f"{breaker}/switch"] = Measurement(f"{breaker}/switch", T0, 0.0, 0)
    if users:
        security = Security(historian.engine, settings=FAST)
        for role in Role:
            security.add_user(role.value, PASSWORD, [role.value])
    app = create_app(room, ServiceSettings(max_body_bytes=10_000, security=FAST, login=UNLIMITED_LOGINS))
    return Room(app, room, historian, grid, breaker, bad_point, readings, tripped, clock)


@pytest.fixture
def site(grid: Grid, tmp_path: Path) -> Iterator[Room]:
    """A control room on SQLite whose first cycle saw a telemetry failure and a breaker trip."""
    room = _open(grid, f"sqlite:///{tmp_path / 'opendso.db'}", tmp_path / "run")
    room.room.run_cycle(room.readings, T0)
    room.room.run_cycle(room.tripped, T0 + timedelta(seconds=2))
    yield room
    room.historian.close()


def login(app: FastAPI, username: str) -> tuple[TestClient, dict[str, str]]:
    client = TestClient(app)
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client, {CSRF_HEADER: response.json()["csrf_token"]}


def q(key: str) -> str:
    return quote(key, safe="")


def _alarms(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/alarms", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def _counts(client: TestClient) -> dict[str, int]:
    return dict(client.get("/api/status").json()["alarms"])


def _snapshot(site: Room) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    return site.historian.events.last_seq(), site.room.alarms(), site.room.alarm_areas()


# -- every new endpoint x every role ---------------------------------------------------------------------------
def _calls(site: Room) -> list[tuple[str, str, dict[str, Any] | None, set[str]]]:
    """(method, path, body, roles allowed), in an order where each allowed call fits the state the last left."""
    tele = q(f"telemetry:{site.bad_point}")
    supply = next(a["key"] for a in site.room.alarms() if a["monitor"] == "supply")
    area = next(a["area"] for a in site.room.alarm_areas())
    return [
        ("GET", "/api/alarms?state=unacknowledged&priority=high", None, VIEW),
        ("GET", "/api/alarms/areas", None, VIEW),
        ("GET", "/api/alarms/history", None, VIEW),
        ("GET", "/api/alarms/summary", None, VIEW),
        ("POST", "/api/alarms/acknowledge", {"keys": [supply]}, CONTROL),
        ("POST", f"/api/alarms/{tele}/shelve", {"duration_s": 600, "reason": "RTU work"}, CONTROL),
        ("POST", f"/api/alarms/{tele}/unshelve", None, CONTROL),
        ("POST", f"/api/alarms/{tele}/out-of-service", {"reason": "VT replaced"}, CONFIGURE),
        ("POST", f"/api/alarms/{tele}/return-to-service", {"reason": "VT back"}, CONFIGURE),
        ("POST", f"/api/alarms/areas/{q(area)}/suppress", {"reason": "permit 12"}, CONFIGURE),
        ("POST", f"/api/alarms/areas/{q(area)}/release", None, CONFIGURE),
    ]


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_new_alarm_endpoint_against_every_role(site: Room, role: str) -> None:
    client, csrf = login(site.app, role)
    for method, path, body, allowed in _calls(site):
        before = _snapshot(site)
        response = client.request(method, path, json=body, headers=csrf)
        if role in allowed:
            assert response.status_code == 200, (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.text)
            assert "may not" in response.json()["detail"]
            assert _snapshot(site) == before  # refused: nothing changed


def test_without_a_session_the_new_endpoints_are_401(site: Room) -> None:
    client = TestClient(site.app)
    for method, path, body, _allowed in _calls(site):
        assert client.request(method, path, json=body).status_code == 401, path


# -- item 9: shelving rules, unshelve, out of service, designed suppression ----------------------------------------
def test_shelving_is_for_active_or_unacknowledged_alarms_for_at_most_a_shift(site: Room) -> None:
    client, h = login(site.app, "operator")
    node = str(site.grid.names_of("node")[0])
    normal = q(f"voltage:{node}")
    tele = q(f"telemetry:{site.bad_point}")
    before = _snapshot(site)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        # a breaker (or anything) shelved in advance would raise unseen: refused
        (normal, {"duration_s": 600, "reason": "in advance"}, 409, "only an alarm that is active or unacknowledged"),
        (tele, {"until": "9999-12-31T00:00:00Z", "reason": "for ever"}, 400, "at most 8 h"),
        (tele, {"duration_s": 8 * 3600 + 60, "reason": "a shift and a minute"}, 400, "at most 8 h"),
        (tele, {"duration_s": 600, "until": "2026-11-23T09:00:00Z", "reason": "both"}, 422, "either"),
        (tele, {"reason": "neither"}, 422, "either"),
        (tele, {"duration_s": -5, "reason": "negative"}, 422, "duration_s"),
        (tele, {"duration_s": 600, "reason": "RTU\x00work"}, 400, "U+0000"),
        (tele, {"duration_s": 600, "reason": "RTU \u202eetats"}, 400, "U+202E"),
        (tele, {"duration_s": 600, "reason": "   "}, 422, "reason"),
    ]
    for key, body, status, words in cases:
        response = client.post(f"/api/alarms/{key}/shelve", json=body, headers=h)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], (body, response.json())
    assert client.post(f"/api/alarms/{tele}/unshelve", headers=h).status_code == 409  # not shelved
    assert _snapshot(site) == before  # nothing changed by any of them
    # a shelf of one shift at most, listed with reason, user and expiry
    ok = client.post(f"/api/alarms/{tele}/shelve", json={"duration_s": 8 * 3600, "reason": "RTU work"}, headers=h)
    assert ok.status_code == 200, ok.text
    (shelved,) = _alarms(client, state="shelved")
    assert shelved["shelved_by"] == "operator"
    assert shelved["shelve_reason"] == "RTU work"
    assert datetime.fromisoformat(shelved["shelved_until"]) == site.clock[0] + timedelta(hours=8)
    assert _counts(client)["shelved"] == 1
    # unshelve: operator role, audited, in the event log; still active, so announced again unacknowledged
    client.post(f"/api/alarms/{tele}/acknowledge", headers=h)
    events_before = site.historian.events.last_seq()
    back = client.post(f"/api/alarms/{tele}/unshelve", json={"reason": "RTU back"}, headers=h)
    assert back.status_code == 200, back.text
    assert back.json()["transition"] == "unshelved"
    kinds = [(e.kind, e.actor) for e in site.historian.events.read(events_before + 1)]
    assert kinds == [("alarm.unshelved", "operator"), ("alarm.raised", "opendso")]
    alarm = next(a for a in _alarms(client) if a["key"] == f"telemetry:{site.bad_point}")
    assert (alarm["state"], alarm["acknowledged"], alarm["shelved_until"]) == ("unacknowledged", False, None)
    record = [r for r in site.room.audit.read(0, limit=1000) if r.action == "alarm.unshelve"][-1]
    assert (record.actor, record.element, record.reason) == ("operator", f"telemetry:{site.bad_point}", "RTU back")


def test_an_expired_shelf_announces_a_still_active_alarm_again_on_the_stream(site: Room) -> None:
    client, h = login(site.app, "operator")
    key = f"telemetry:{site.bad_point}"
    client.post(f"/api/alarms/{q(key)}/acknowledge", headers=h)
    client.post(f"/api/alarms/{q(key)}/shelve", json={"duration_s": 60, "reason": "RTU work"}, headers=h)
    with client.websocket_connect("/api/stream") as ws:
        ws.receive_json()  # state
        ws.receive_json()  # status
        result = site.room.run_cycle(site.tripped, site.clock[0] + timedelta(seconds=61))
        messages = [ws.receive_json() for _ in range(len(result.alarm_events) + 2)]  # state, alarms, status
    alarm_messages = [m for m in messages if m["type"] == "alarm" and m["event"]["key"] == key]
    assert [m["event"]["transition"] for m in alarm_messages] == ["unshelved", "raised"]
    raised = alarm_messages[1]
    assert not raised["event"]["shelved"]  # announced, with the cue
    assert not raised["event"]["suppressed"]
    assert raised["alarm"]["state"] == "unacknowledged"
    assert _counts(client)["shelved"] == 0


def test_out_of_service_by_an_engineer_with_a_reason(site: Room) -> None:
    engineer, he = login(site.app, "engineer")
    operator, ho = login(site.app, "operator")
    key = f"telemetry:{site.bad_point}"
    counts = _counts(operator)
    missing = engineer.post(f"/api/alarms/{q(key)}/out-of-service", json={}, headers=he)
    assert missing.status_code == 422
    assert "reason" in missing.json()["detail"]
    done = engineer.post(f"/api/alarms/{q(key)}/out-of-service", json={"reason": "VT replaced, WO 4711"}, headers=he)
    assert done.status_code == 200, done.text
    again = engineer.post(f"/api/alarms/{q(key)}/out-of-service", json={"reason": "twice"}, headers=he)
    assert again.status_code == 409
    assert "already out of service" in again.json()["detail"]
    after = _counts(operator)
    assert after["out_of_service"] == counts["out_of_service"] + 1
    assert after["standing"] == counts["standing"] - 1  # counted apart, never lost
    (oos,) = _alarms(operator, state="out_of_service")
    assert (oos["out_of_service_by"], oos["out_of_service_reason"]) == ("engineer", "VT replaced, WO 4711")
    shelve = operator.post(f"/api/alarms/{q(key)}/shelve", json={"duration_s": 60, "reason": "x"}, headers=ho)
    assert shelve.status_code == 409
    back = engineer.post(f"/api/alarms/{q(key)}/return-to-service", headers=he)
    assert back.status_code == 200, back.text
    assert _counts(operator) == {**counts, "unacknowledged": counts["unacknowledged"]}
    actions = [(r.action, r.actor, r.reason) for r in site.room.audit.read(0, limit=1000)]
    assert ("alarm.out_of_service", "engineer", "VT replaced, WO 4711") in actions
    assert ("alarm.return_to_service", "engineer", None) in actions
    kinds = [e.kind for e in site.historian.events.read()]
    assert "alarm.out_of_service" in kinds
    assert "alarm.returned_to_service" in kinds


def test_an_area_is_suppressed_by_design_through_the_permit_hook(site: Room) -> None:
    engineer, he = login(site.app, "engineer")
    viewer, _ = login(site.app, "viewer")
    area = next(a["group"] for a in site.room.alarms() if a["key"] == f"switch:{site.breaker}")
    assert area in {a["area"] for a in viewer.get("/api/alarms/areas").json()}
    before = _snapshot(site)
    unknown = engineer.post(f"/api/alarms/areas/{q('no such feeder')}/suppress", json={"reason": "x"}, headers=he)
    assert unknown.status_code == 404
    bidi = engineer.post(f"/api/alarms/areas/{q(area)}/suppress", json={"reason": "a\u2066b"}, headers=he)
    assert bidi.status_code == 400
    assert engineer.post(f"/api/alarms/areas/{q(area)}/release", headers=he).status_code == 409
    assert _snapshot(site) == before
    counts = _counts(viewer)
    done = engineer.post(f"/api/alarms/areas/{q(area)}/suppress", json={"reason": "permit 12"}, headers=he)
    assert done.status_code == 200, done.text
    assert done.json()["suppressed"] is True
    assert engineer.post(f"/api/alarms/areas/{q(area)}/suppress", json={"reason": "x"}, headers=he).status_code == 409
    suppressed = _counts(viewer)
    assert suppressed["suppressed"] > 5
    assert suppressed["standing"] < counts["standing"]
    assert all(a["suppressed_reason"] == "area under suppression: permit 12" for a in _alarms(viewer, area=area))
    release = engineer.post(f"/api/alarms/areas/{q(area)}/release", headers=he)
    assert release.status_code == 200, release.text
    assert _counts(viewer)["suppressed"] == 0
    actions = [(r.action, r.element) for r in site.room.audit.read(0, limit=1000)]
    assert ("alarm.suppress", f"area:{area}") in actions
    assert ("alarm.release", f"area:{area}") in actions


# -- item 10: one definition of the counts, and a list a screen can keep in step --------------------------------------
def test_status_list_and_console_agree_on_the_counts(site: Room) -> None:
    from opendso.operations.alarms import count_alarms

    operator, h = login(site.app, "operator")
    engineer, he = login(site.app, "engineer")
    listed = _alarms(operator)
    supply = [a["key"] for a in listed if a["monitor"] == "supply"]
    operator.post("/api/alarms/acknowledge", json={"keys": supply[:3]}, headers=h)
    operator.post(f"/api/alarms/{q(supply[3])}/shelve", json={"duration_s": 600, "reason": "crew"}, headers=h)
    engineer.post(f"/api/alarms/{q(supply[4])}/out-of-service", json={"reason": "meter swap"}, headers=he)
    site.room.run_cycle(site.readings, T0 + timedelta(seconds=4))  # the breaker recloses: returned unacknowledged
    counts = _counts(operator)
    assert counts == count_states(a["state"] for a in _alarms(operator)).to_dict()  # the list carries what it counts
    assert counts == count_alarms(site.room.monitors).to_dict()  # the console's function
    assert counts["shelved"] == 1
    assert counts["out_of_service"] == 1
    assert counts["unacknowledged"] == sum(1 for a in _alarms(operator) if not a["acknowledged"]) - 2


def test_stream_messages_carry_the_entry_and_a_version_newer_than_the_list(site: Room) -> None:
    client, h = login(site.app, "operator")
    response = client.get("/api/alarms")
    version = int(response.headers["x-alarm-version"])
    key = f"switch:{site.breaker}"
    with client.websocket_connect("/api/stream") as ws:
        ws.receive_json()
        ws.receive_json()
        client.post(f"/api/alarms/{q(key)}/acknowledge", headers=h)
        message = ws.receive_json()
        assert message["type"] == "alarm"
        assert message["v"] > version
        assert message["alarm"]["key"] == key
        assert message["alarm"]["state"] == "acknowledged"
        assert ws.receive_json()["type"] == "status"
        result = site.room.run_cycle(site.readings, T0 + timedelta(seconds=4))  # cleared while acknowledged
        messages = [ws.receive_json() for _ in range(len(result.alarm_events) + 2)]  # state, alarms, status
    assert [m["type"] for m in messages] == ["state"] + ["alarm"] * len(result.alarm_events) + ["status"]
    dropped = [m for m in messages if m["type"] == "alarm" and m["event"]["key"] == key]
    assert [(m["event"]["transition"], m["alarm"]) for m in dropped] == [("cleared", None)]
    assert key not in {a["key"] for a in _alarms(client)}


# -- item 11: the alarm state survives a restart, on SQLite and PostgreSQL ----------------------------------------
def test_alarm_state_survives_a_restart(grid: Grid, db_url: str, tmp_path: Path) -> None:
    first = _open(grid, db_url, tmp_path / "first")
    first.room.run_cycle(first.readings, T0)
    first.room.run_cycle(first.tripped, T0 + timedelta(seconds=2))
    operator, h = login(first.app, "operator")
    engineer, he = login(first.app, "engineer")
    keys = [a["key"] for a in _alarms(operator) if a["monitor"] == "supply"]
    operator.post(f"/api/alarms/{q(f'switch:{first.breaker}')}/acknowledge", headers=h)
    operator.post("/api/alarms/acknowledge", json={"keys": keys[:4]}, headers=h)
    operator.post(f"/api/alarms/{q(keys[4])}/shelve", json={"duration_s": 3600, "reason": "crew on site"}, headers=h)
    engineer.post(f"/api/alarms/{q(keys[5])}/out-of-service", json={"reason": "meter swap"}, headers=he)
    quiet = {a["group"] for a in _alarms(operator)}
    other = next(a["area"] for a in first.room.alarm_areas() if a["area"] not in quiet)  # an area without alarms
    engineer.post(f"/api/alarms/areas/{q(other)}/suppress", json={"reason": "permit 7"}, headers=he)
    # one returned to normal unacknowledged: the breaker recloses for a cycle, then trips again
    first.room.run_cycle(first.readings, T0 + timedelta(seconds=4))
    before = sorted((a["key"], a["state"], a["acknowledged"], a["shelved_until"], a["shelve_reason"],
                     a["out_of_service_reason"]) for a in first.room.alarms())  # fmt: skip
    assert any(state == "returned_unacknowledged" for _k, state, *_ in before)
    first.historian.close()

    second = _open(grid, db_url, tmp_path / "second", users=False)  # a restart on the same database
    try:
        after = sorted((a["key"], a["state"], a["acknowledged"], a["shelved_until"], a["shelve_reason"],
                        a["out_of_service_reason"]) for a in second.room.alarms())  # fmt: skip
        assert after == before
        assert next(a for a in second.room.alarm_areas() if a["suppressed"])["reason"] == "permit 7"
        # the field is as before the restart: no acknowledged alarm comes back, none is announced again
        result = second.room.run_cycle(second.readings, T0 + timedelta(seconds=60))
        assert [e for e in result.alarm_events if e.announced] == []
        assert sorted((a["key"], a["state"], a["acknowledged"]) for a in second.room.alarms()) == sorted(
            (k, s, a) for k, s, a, *_ in before
        )
    finally:
        second.historian.close()


def test_the_monitor_restores_the_alarm_state_when_it_starts(grid: Grid, tmp_path: Path) -> None:
    import asyncio

    from opendso.operations.monitor import Monitor
    from opendso.telemetry import InProcessAdapter, point_map_for_grid

    url = f"sqlite:///{tmp_path / 'm.db'}"
    point_map = point_map_for_grid(grid, protocol="mqtt")
    historian = Historian.open(url)
    monitor = Monitor(grid, point_map, historian, [InProcessAdapter(name="field")])
    readings = field_readings(grid, T0)
    known = {p.name for p in point_map.points}
    breaker = str(grid.switch_names[feeder_breaker(grid)])
    readings[f"{breaker}/switch"] = Measurement(f"{breaker}/switch", T0, 0.0, 0)
    monitor.latest = {p: r for p, r in readings.items() if p in known}
    monitor.run_cycle(T0)
    monitor.cycle.switching.acknowledge(T0, breaker, actor="op")
    monitor.save_alarms()
    historian.close()

    historian = Historian.open(url)
    restarted = Monitor(grid, point_map, historian, [InProcessAdapter(name="field")])
    assert restarted.cycle.switching.active() == []  # nothing before it starts

    async def start_and_stop() -> None:
        task = asyncio.create_task(restarted.run(duration_s=30))
        await asyncio.sleep(0)
        restarted.stop()
        await task

    asyncio.run(start_and_stop())
    (alarm,) = restarted.cycle.switching.active()
    assert (alarm.channel, alarm.acknowledged, alarm.state) == (breaker, True, "acknowledged")
    historian.close()


# -- item 12: acknowledge what is on screen ------------------------------------------------------------------------
def test_acknowledging_several_alarms_takes_exactly_the_keys_given(site: Room) -> None:
    client, h = login(site.app, "operator")
    supply = [a["key"] for a in _alarms(client) if a["monitor"] == "supply"]
    before = _snapshot(site)
    for body, status in (
        ({"keys": []}, 422),
        ({"keys": [supply[0], supply[0]]}, 400),
        ({"keys": [supply[0], "supply:no such load"]}, 404),
        ({"keys": supply[:1], "all": True}, 422),
    ):
        assert client.post("/api/alarms/acknowledge", json=body, headers=h).status_code == status, body
    assert _snapshot(site) == before
    client.post(f"/api/alarms/{q(supply[1])}/acknowledge", headers=h)  # someone else was quicker
    done = client.post("/api/alarms/acknowledge", json={"keys": supply[:3]}, headers=h).json()
    assert [e["key"] for e in done["acknowledged"]] == [supply[0], supply[2]]
    assert done["skipped"] == [supply[1]]
    state = {a["key"]: a["acknowledged"] for a in _alarms(client)}
    assert all(state[k] for k in supply[:3])
    assert not any(state[k] for k in supply[3:])  # nothing beyond what was named
    audited = [r.element for r in site.room.audit.read(0, limit=1000) if r.action == "alarm.acknowledge"]
    assert sorted(audited) == sorted(supply[:3])


# -- item 13: the cause heads its group ---------------------------------------------------------------------------
def test_the_trip_group_is_headed_by_the_breaker(site: Room) -> None:
    client, _ = login(site.app, "viewer")
    listed = _alarms(client)
    breaker = next(a for a in listed if a["key"] == f"switch:{site.breaker}")
    supply = [a for a in listed if a["monitor"] == "supply"]
    assert supply
    assert {a["group"] for a in supply} == {breaker["group"]}  # before: the breaker stood outside the group
    assert {a["cause"] for a in supply} == {breaker["key"]}
    assert breaker["cause"] is None


# -- item 14: filters, journal, performance figures ---------------------------------------------------------------
def test_the_alarm_list_filters_by_priority_area_state_and_time(site: Room) -> None:
    client, h = login(site.app, "operator")
    everything = _alarms(client)
    area = next(a["group"] for a in everything if a["monitor"] == "supply")
    assert {a["priority"] for a in _alarms(client, priority="medium")} == {"medium"}
    assert {a["group"] for a in _alarms(client, area=area)} == {area}
    client.post(f"/api/alarms/{q(f'switch:{site.breaker}')}/acknowledge", headers=h)
    assert [a["key"] for a in _alarms(client, state="acknowledged")] == [f"switch:{site.breaker}"]
    raised_at = min(a["since"] for a in everything)
    later = (datetime.fromisoformat(raised_at) + timedelta(seconds=1)).isoformat()
    assert {a["key"] for a in _alarms(client, to=later)} == {a["key"] for a in everything if a["since"] < later}
    for params, words in (({"priority": "urgent"}, "unknown priority"), ({"state": "hidden"}, "unknown state")):
        response = client.get("/api/alarms", params=params)
        assert response.status_code == 400
        assert words in response.json()["detail"]


def test_the_journal_reads_the_event_log_with_filters_and_paging(site: Room) -> None:
    client, h = login(site.app, "operator")
    client.post(f"/api/alarms/{q(f'switch:{site.breaker}')}/acknowledge", headers=h)
    window = {"from": (T0 - timedelta(hours=1)).isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    journal = client.get("/api/alarms/history", params=window).json()
    assert [e["seq"] for e in journal] == sorted((e["seq"] for e in journal), reverse=True)  # newest first
    raised = [e for e in journal if e["transition"] == "raised"]
    assert {e["key"] for e in raised} >= {f"switch:{site.breaker}", f"telemetry:{site.bad_point}"}
    acked = client.get("/api/alarms/history", params={**window, "transition": "acknowledged"}).json()
    assert [(e["key"], e["actor"]) for e in acked] == [(f"switch:{site.breaker}", "operator")]
    high = client.get("/api/alarms/history", params={**window, "priority": "high"}).json()
    assert high
    assert {e["priority"] for e in high} == {"high"}
    page = client.get("/api/alarms/history", params={**window, "limit": 5}).json()
    older = client.get("/api/alarms/history", params={**window, "limit": 5, "before": page[-1]["seq"]}).json()
    assert [e["seq"] for e in page + older] == [e["seq"] for e in journal[:10]]
    for params, status in (
        ({**window, "transition": "exploded"}, 400),
        ({"from": window["to"], "to": window["from"]}, 400),
        ({"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400),  # more than a year
        ({**window, "limit": 0}, 422),
        ({**window, "before": 2**63}, 422),
    ):
        assert client.get("/api/alarms/history", params=params).status_code == status, params


def test_the_summary_gives_the_isa_18_2_performance_figures(site: Room) -> None:
    client, _ = login(site.app, "viewer")
    # the telemetry point flaps good/bad every cycle for a minute: it chatters
    flapping = dict(site.tripped)
    for k in range(10):
        quality = 0 if k % 2 == 0 else int(Quality.INVALID)
        flapping[site.bad_point] = Measurement(site.bad_point, T0, 1.0, quality)
        site.room.run_cycle(flapping, T0 + timedelta(seconds=4 + 2 * k))
    window = {"from": (T0 - timedelta(minutes=30)).isoformat(), "to": (T0 + timedelta(hours=25)).isoformat()}
    response = client.get("/api/alarms/summary", params=window)
    assert response.status_code == 200, response.text
    s = response.json()
    supply = sum(1 for a in site.room.alarms() if a["monitor"] == "supply")
    assert s["annunciated"] >= supply + 2  # the trip's flood: the breaker, every load, the telemetry failure
    (flood,) = s["floods"]["periods"]  # more than 10 alarms in 10 minutes
    assert flood["alarms"] > 10
    assert datetime.fromisoformat(flood["start"]) <= T0 < datetime.fromisoformat(flood["end"])
    assert s["floods"]["total_10_min_periods"] == 153
    assert s["per_10_min"]["max_per_position"] == flood["peak_per_10_min"]
    assert s["top_ten"][0]["key"] == f"telemetry:{site.bad_point}"  # the chattering point is the top bad actor
    assert len(s["top_ten"]) == min(10, len({a["key"] for a in site.room.alarms()}))
    assert [c["key"] for c in s["chattering"]] == [f"telemetry:{site.bad_point}"]
    assert f"switch:{site.breaker}" in {x["key"] for x in s["stale"]}  # standing for more than 24 h at 'to'
    assert s["counts"] == _counts(client)
    two = client.get("/api/alarms/summary", params={**window, "positions": 2}).json()
    assert two["per_10_min"]["average_per_position"] == pytest.approx(
        s["per_10_min"]["average_per_position"] / 2, abs=1e-3
    )
    assert client.get("/api/alarms/summary", params={**window, "positions": 0}).status_code == 422
