"""User management over the API (issue item 22): the same rules as `opendso users`, for security administrators only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving import PASSWORD, app_of, control_room

from opendso.grid.model import Grid
from opendso.service import ControlRoom, Role, Security
from opendso.service.security import CSRF_HEADER

CODE = "simbench:1-MV-urban--0-sw"
MANAGERS = {"security_administrator", "rbac_maintainer"}


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def room(grid: Grid, tmp_path: Path) -> Iterator[ControlRoom]:
    room = control_room(grid, tmp_path)
    yield room
    room.historian.close()


def as_user(room: ControlRoom, user: str, address: str = "192.0.2.20") -> tuple[TestClient, dict[str, str]]:
    client = TestClient(app_of(room), client=(address, 40000))
    r = client.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client, {CSRF_HEADER: r.json()["csrf_token"]}


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_user_endpoint_against_every_role(room: ControlRoom, role: str) -> None:
    client, csrf = as_user(room, role)
    calls = [
        ("GET", "/api/users", None),
        (
            "POST",
            "/api/users",
            {"username": f"new-{role}", "password": "a perfectly good password", "roles": ["viewer"]},
        ),
        ("POST", "/api/users/viewer/roles", {"roles": ["viewer", "operator"]}),
        ("POST", "/api/users/viewer/password", {"password": "another good password"}),
        ("POST", "/api/users/viewer/disable", None),
        ("POST", "/api/users/viewer/enable", None),
        ("POST", "/api/users/viewer/unlock", None),
    ]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=csrf)
        if role in MANAGERS:
            assert r.status_code in (200, 201), (role, path, r.text)
        else:
            assert r.status_code == 403, (role, path, r.text)
    if role not in MANAGERS:
        assert "new-" + role not in {u.user.username for u in _security(room).list_users()}


def _security(room: ControlRoom) -> Security:
    return Security(room.historian.engine)


def test_changes_are_audited_with_who_and_where_and_end_sessions(room: ControlRoom) -> None:
    admin, csrf = as_user(room, "security_administrator", "10.20.30.40")
    victim, _ = as_user(room, "viewer")
    r = admin.post("/api/users/viewer/roles", json={"roles": ["operator"]}, headers=csrf)
    assert r.status_code == 200
    assert r.json()["roles"] == ["operator"]
    assert victim.get("/api/state").status_code == 401  # the old session ended with the old roles
    records = [x for x in room.audit.read() if x.element == "user:viewer"]
    assert records[-1].action == "user.roles"
    assert records[-1].actor == "security_administrator"
    assert records[-1].source_ip == "10.20.30.40"
    assert records[-1].details == {"before": ["viewer"], "after": ["operator"]}


def test_bad_requests_change_nothing(room: ControlRoom) -> None:
    admin, csrf = as_user(room, "security_administrator")
    before = [u.to_dict() for u in _security(room).list_users()]
    bad = [
        ("/api/users", {"username": "weak", "password": "aaaaaaaaaa", "roles": ["viewer"]}, 400),
        ("/api/users", {"username": "bad role", "password": "a perfectly good password", "roles": ["viewer"]}, 400),
        ("/api/users", {"username": "nora", "password": "a perfectly good password", "roles": ["superuser"]}, 400),
        ("/api/users", {"username": "nora", "password": "a perfectly good password", "roles": []}, 422),
        ("/api/users", {"username": "operator", "password": "a perfectly good password", "roles": ["viewer"]}, 400),
        ("/api/users/nobody/roles", {"roles": ["viewer"]}, 404),
        ("/api/users/viewer/password", {"password": "short"}, 400),
        ("/api/users/security_administrator/disable", None, 409),  # not oneself
        ("/api/users/security_administrator/roles", {"roles": ["viewer"]}, 409),  # not one's own admin right
    ]
    for path, body, status in bad:
        r = admin.post(path, json=body, headers=csrf)
        assert r.status_code == status, (path, body, r.text)
    assert [u.to_dict() for u in _security(room).list_users()] == before


def test_a_new_user_has_a_temporary_password_by_default(room: ControlRoom) -> None:
    admin, csrf = as_user(room, "rbac_maintainer")
    r = admin.post(
        "/api/users",
        json={"username": "nora", "password": "nora's first password", "roles": ["operator"]},
        headers=csrf,
    )
    assert r.status_code == 201, r.text
    assert r.json()["password_change_required"] is True
    nora = TestClient(app_of(room))
    assert (
        nora.post("/api/auth/login", json={"username": "nora", "password": "nora's first password"}).status_code == 200
    )
    assert nora.get("/api/state").status_code == 403  # a new password first


def test_the_page_shows_and_lifts_login_throttles(room: ControlRoom) -> None:
    attacker = TestClient(app_of(room), client=("203.0.113.5", 1))
    for _ in range(5):
        attacker.post("/api/auth/login", json={"username": "operator", "password": "guess guess guess"})
    admin, csrf = as_user(room, "security_administrator")
    users = {u["username"]: u for u in admin.get("/api/users").json()}
    throttle = users["operator"]["throttles"][0]
    assert throttle["source_ip"] == "203.0.113.5"
    assert throttle["failures"] == 5
    assert throttle["blocked_until"] is not None
    r = admin.post("/api/users/operator/unlock", headers=csrf)
    assert r.status_code == 200
    assert r.json()["throttles"] == []
    assert attacker.post("/api/auth/login", json={"username": "operator", "password": PASSWORD}).status_code == 200
