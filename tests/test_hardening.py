"""Service hardening (issue items 6-8): streams end with their session, browser headers, TLS, and the small ones.

The stream and TLS tests run the app under uvicorn on loopback (``serving``); the rest use the
TestClient on the same app.
"""

from __future__ import annotations

import argparse
import json
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import _cached_grid
from fastapi.testclient import TestClient
from serving import PASSWORD, app_of, control_room, serving
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from opendso.cli.users import users_command
from opendso.grid.model import Grid
from opendso.runtime import ControlRoomProcess
from opendso.service import ControlRoom
from opendso.service.app import CSP
from opendso.service.security import CSRF_HEADER, SESSION_COOKIE, Security, check_password
from opendso.service.server import plain_http_warning
from opendso.store.integrity import sealer_of

CODE = "simbench:1-MV-urban--0-sw"


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def room(grid: Grid, tmp_path: Path) -> Iterator[ControlRoom]:
    room = control_room(grid, tmp_path)
    yield room
    room.historian.close()


# -- item 6: a stream ends with its session ---------------------------------------------------------------
def _stream(url: str, cookie: str) -> ClientConnection:
    ws = connect(
        url.replace("http", "ws") + "/api/stream",
        additional_headers={"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": url},
        open_timeout=10,
    )
    first = json.loads(ws.recv(timeout=10))
    assert first["type"] == "state"
    return ws


def _closed_within(ws: ClientConnection, limit_s: float) -> tuple[float, int | None]:
    """Seconds until the server closed the stream (reading and dropping messages), and the close code."""
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < limit_s + 5:
            ws.recv(timeout=limit_s + 5)
    except ConnectionClosed as closed:
        return time.perf_counter() - t0, closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the stream stayed open")


def _login(url: str, user: str) -> tuple[str, str]:
    r = httpx.post(f"{url}/api/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.cookies[SESSION_COOKIE], r.json()["csrf_token"]


def test_the_stream_closes_within_a_second_of_logout(room: ControlRoom) -> None:
    with serving(app_of(room)) as url:
        cookie, csrf = _login(url, "viewer")
        ws = _stream(url, cookie)
        out = httpx.post(
            f"{url}/api/auth/logout", cookies={SESSION_COOKIE: cookie}, headers={CSRF_HEADER: csrf, "Origin": url}
        )
        assert out.status_code == 204
        took, code = _closed_within(ws, 1.0)
    assert code == 1008
    assert took < 1.0


@pytest.mark.parametrize("action", ["disable", "set-roles"])
def test_the_stream_closes_when_another_process_ends_the_session(
    room: ControlRoom, tmp_path: Path, action: str
) -> None:
    """`opendso users disable` runs in another process: the service finds out by polling (every 0.25 s)."""
    with serving(app_of(room)) as url:
        cookie, _ = _login(url, "viewer")
        ws = _stream(url, cookie)
        other = _stream(url, _login(url, "operator")[0])
        args = argparse.Namespace(data_dir=str(tmp_path), database_url=None, users_action=action, username="viewer")
        args.roles = "engineer"
        # a fresh Security in this test stands for the other process: it does not wake the service's watch
        assert users_command(args) == 0
        took, code = _closed_within(ws, 1.0)
        assert json.loads(other.recv(timeout=10))["type"] in ("state", "status", "alarm")  # others stay
        other.close()
    assert code == 1008
    assert took < 1.0


def test_a_stream_from_another_origin_is_refused_and_audited(room: ControlRoom) -> None:
    with serving(app_of(room)) as url:
        cookie, _ = _login(url, "viewer")
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": "http://evil.example"}
        with pytest.raises(InvalidStatus) as refused:
            connect(url.replace("http", "ws") + "/api/stream", additional_headers=headers)
        assert refused.value.response.status_code == 403
    room.audit.flush()
    assert any(r.action == "access.refused" and "evil.example" in (r.reason or "") for r in room.audit.read())


# -- item 7: browser hardening, local API documentation, TLS -----------------------------------------------
def test_every_response_carries_the_browser_hardening_headers(room: ControlRoom) -> None:
    client = TestClient(app_of(room))
    for path in ("/", "/static/js/app.js", "/api/status", "/api/openapi.json"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in r.headers  # only over https
    policy = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert "unsafe" not in CSP


def test_the_api_documentation_is_served_from_here(room: ControlRoom) -> None:
    client = TestClient(app_of(room))
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert "<script>" not in page.text  # no inline script
    scripts = [s.split('"')[0] for s in page.text.split('src="')[1:]]
    assert scripts == ["/api/docs/assets/swagger-ui-bundle.js", "/static/js/docs.js"]
    for asset in (*scripts, "/api/docs/assets/swagger-ui.css"):
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert len(r.content) > 100
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_tls_serves_https_with_secure_cookies_and_hsts(room: ControlRoom, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with serving(app_of(room), tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem") as url:
        assert url.startswith("https://")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        r = httpx.post(f"{url}/api/auth/login", json={"username": "viewer", "password": PASSWORD}, verify=context)
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http") + "/api/status", timeout=5)


def test_bad_tls_files_are_one_clear_error(tmp_path: Path) -> None:
    from opendso.errors import InputError
    from opendso.service.server import WebServer, bind_socket

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    sock = bind_socket("127.0.0.1", 0)
    try:
        from fastapi import FastAPI

        with pytest.raises(InputError, match="TLS certificate"):
            WebServer(FastAPI(), sock, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem")
        with pytest.raises(InputError, match="both"):
            WebServer(FastAPI(), sock, tls_cert=tmp_path / "cert.pem")
        with pytest.raises(InputError, match="not a readable file"):
            WebServer(FastAPI(), sock, tls_cert=tmp_path / "none.pem", tls_key=tmp_path / "key.pem")
    finally:
        sock.close()


def test_plain_http_on_the_network_is_warned_about_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plain_http_warning("127.0.0.1", tls=False) is None
    assert plain_http_warning("::1", tls=False) is None
    assert plain_http_warning("0.0.0.0", tls=True) is None
    assert "plain HTTP" in (plain_http_warning("0.0.0.0", tls=False) or "")
    process = ControlRoomProcess(
        _cached_grid("demo"), tmp_path / "run", host="0.0.0.0", port=0, admin_password="first admin password"
    )
    try:
        err = capsys.readouterr().err
        assert "WARNING: the control room is served over plain HTTP on 0.0.0.0" in err
    finally:
        process._socket.close() if process._socket is not None else None
        process.historian.close()


# -- item 8: the smaller ones ---------------------------------------------------------------------------------
def test_a_sequence_number_out_of_range_is_422_not_500(room: ControlRoom) -> None:
    client = TestClient(app_of(room))
    client.post("/api/auth/login", json={"username": "security_auditor", "password": PASSWORD})
    for path in ("/api/events", "/api/audit"):
        for after in ("9223372036854775807", "99999999999999999999999", "-1"):
            r = client.get(f"{path}?after={after}")
            assert r.status_code == 422, (path, after, r.text)
        assert client.get(f"{path}?after=9223372036854775806").status_code == 200


@pytest.mark.parametrize("password", ["aaaaaaaaaa", "password123", "1234567890", "qwertyuiop", "operator01"])
def test_weak_passwords_are_refused_with_a_reason(password: str) -> None:
    with pytest.raises(Exception, match=r"too easy to guess|user name") as caught:
        check_password(password, username="operator01")
    assert len(str(caught.value)) > 30


def test_a_weak_password_is_refused_everywhere_and_changes_nothing(room: ControlRoom) -> None:
    client = TestClient(app_of(room))
    csrf = client.post("/api/auth/login", json={"username": "operator", "password": PASSWORD}).json()["csrf_token"]
    r = client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "aaaaaaaaaa"},
        headers={CSRF_HEADER: csrf},
    )
    assert r.status_code == 400
    assert "guess" in r.json()["detail"]
    security = Security(room.historian.engine)
    assert security.authenticate("operator", PASSWORD).username == "operator"  # unchanged
    with pytest.raises(Exception, match="guess"):
        security.add_user("newbie", "aaaaaaaaaa", ["viewer"])
    assert "newbie" not in {u.user.username for u in security.list_users()}


@pytest.mark.parametrize("text", ["evil\u202eemoc.elpmaxe", "null\x00byte", "isolate \u2066x\u2069", "bell\x07"])
def test_control_and_bidi_characters_are_refused_in_notes(room: ControlRoom, text: str) -> None:
    client = TestClient(app_of(room))
    csrf = client.post("/api/auth/login", json={"username": "operator", "password": PASSWORD}).json()["csrf_token"]
    before = room.historian.events.last_seq()
    r = client.post("/api/shiftlog", json={"text": text}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 400
    assert "U+" in r.json()["detail"]
    assert room.historian.events.last_seq() == before
    ok = client.post("/api/shiftlog", json={"text": "line one\n\tline two, ünïcode ✓"}, headers={CSRF_HEADER: csrf})
    assert ok.status_code == 201


def test_the_data_folder_and_its_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    process = ControlRoomProcess(_cached_grid("demo"), folder, port=None, admin_password="first admin password")
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in folder.iterdir():
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
        assert sealer_of(process.historian.engine).key.path == folder / "integrity.key"
    finally:
        process.historian.close()


def test_users_commands_take_a_data_folder_and_name_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENDSO_PASSWORD", "a perfectly good password")
    empty = tmp_path / "elsewhere"
    listing = argparse.Namespace(data_dir=str(empty), database_url=None, users_action="list")
    with pytest.raises(Exception, match="no database at"):
        users_command(listing)
    assert not empty.exists()  # nothing created by looking
    add = argparse.Namespace(
        data_dir=str(tmp_path), database_url=None, users_action="add", username="tina", roles="viewer", temporary=True
    )
    assert users_command(add) == 0
    listing.data_dir = str(tmp_path)
    assert users_command(listing) == 0
    out = capsys.readouterr()
    assert "tina\tviewer (temporary password)" in out.out
    assert out.err.count(f"database: sqlite:///{tmp_path / 'opendso.db'}") == 2
    # a server database with the key in the data folder, as `opendso run --data-dir --database-url` keeps them
    elsewhere = f"sqlite:///{tmp_path / 'server' / 'opendso.db'}"
    keys = tmp_path / "keys"
    add = argparse.Namespace(
        data_dir=str(keys), database_url=elsewhere, users_action="add", username="ute", roles="viewer", temporary=False
    )
    assert users_command(add) == 0
    assert (keys / "integrity.key").is_file()
    assert not (tmp_path / "server" / "integrity.key").exists()
    with pytest.raises(Exception, match="--data-dir"):  # without the folder the key is not found: say where
        users_command(argparse.Namespace(data_dir=None, database_url=elsewhere, users_action="list"))
