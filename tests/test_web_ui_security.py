"""The control room in a real browser under its real security policy (issue items 5, 6, 7 and 22).

Debian's Chromium through Playwright against `opendso run`'s process (the fixtures of
``test_web_ui.py``), without bypassing the Content-Security-Policy: the whole UI works under it,
another page cannot frame it, the API documentation renders offline from this service, the
audit page shows an edit made in the database, a session ended elsewhere takes the screen back
to the login, and the security administrator manages users on their page.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from test_web_ui import PASSWORD, _new_page, browser, room  # noqa: F401  (fixtures)

from opendso.runtime import ControlRoomProcess
from opendso.store.security_schema import audit


def _until(page: Any, expression: str, timeout_s: float = 15.0) -> Any:
    """Poll a JavaScript expression until it is truthy (page.evaluate works under the CSP; wait_for_function not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {expression}")
        time.sleep(0.05)


def _strict_page(browser: Any) -> tuple[Any, list[str], list[str]]:
    """A page under the real CSP, with page errors and CSP violations collected."""
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    return page, errors, violations


def _sign_in(page: Any, room: ControlRoomProcess, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{room.url}/")
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    _until(page, "document.getElementById('st-link').textContent === 'live'")


def test_the_whole_ui_runs_under_the_content_security_policy(browser: Any, room: ControlRoomProcess) -> None:
    page, errors, violations = _strict_page(browser)
    try:
        _sign_in(page, room, "olga")
        for key in ("2", "3", "1"):
            page.keyboard.press(key)
            time.sleep(0.2)
        node = room.grid.component("node")["id"][0]
        page.evaluate(f"window.opendso.selectElement({int(node)})")
        _until(page, "!document.getElementById('element-panel').hidden")
        time.sleep(0.5)
        assert not errors, errors
        assert not violations, violations
    finally:
        page.context.close()


def test_another_page_cannot_frame_the_control_room(browser: Any, room: ControlRoomProcess) -> None:
    page, _errors, violations = _strict_page(browser)
    try:
        # a page of another origin (the browser's blank page) frames the logged-in screen
        page.set_content(f'<iframe id="f" src="{room.url}/" width="800" height="600"></iframe>')
        time.sleep(1.5)
        framed = [f for f in page.frames if f != page.main_frame]
        assert framed
        # Chromium replaces a refused frame with an error page: nothing of the control room loads
        assert all("opendso" not in (f.evaluate("document.title") if f.url.startswith("http") else "") for f in framed)
        assert any("frame-ancestors" in v for v in violations), violations
    finally:
        page.context.close()


def test_the_api_documentation_renders_offline_from_this_service(browser: Any, room: ControlRoomProcess) -> None:
    page, errors, violations = _strict_page(browser)
    own = urlsplit(room.url or "").netloc
    foreign: list[str] = []

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).netloc
        if host and host != own:
            foreign.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    page.route("**/*", route)
    try:
        page.goto(f"{room.url}/api/docs")
        title = _until(page, "document.querySelector('.swagger-ui .info .title')?.textContent")
        assert "OpenDSO control room" in title
        _until(page, "document.querySelectorAll('.opblock').length > 10")
        assert not foreign, foreign
        assert not errors, errors
        assert not [v for v in violations if "script" in v], violations
    finally:
        page.context.close()


def test_the_audit_page_shows_a_record_edited_in_the_database(browser: Any, room: ControlRoomProcess) -> None:
    page, errors, violations = _strict_page(browser)
    try:
        _sign_in(page, room, "aude")
        page.keyboard.press("4")
        text = _until(
            page,
            "document.getElementById('audit-chain').textContent.includes('verified') && "
            "document.getElementById('audit-chain').textContent",
        )
        assert "intact" in text
        engine = room.historian.engine
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER audit_no_update")
            seq = conn.execute(sa.select(sa.func.min(audit.c.seq)).where(audit.c.action == "login")).scalar_one()
            conn.execute(sa.update(audit).where(audit.c.seq == seq).values(source_ip="10.66.66.66"))
        page.click("#audit-refresh")
        text = _until(
            page,
            "document.getElementById('audit-chain').textContent.includes('TAMPERING') && "
            "document.getElementById('audit-chain').textContent",
        )
        assert "1 record(s) do not match their hash" in text
        row = page.locator(f"#audit-rows tr[data-seq='{seq}']")
        assert "✗ edited" in row.inner_text()
        assert "tampered" in (row.get_attribute("class") or "")
        assert not errors, errors
        assert not violations, violations
    finally:
        # put the record back as it was and restore the guard, for the tests after this one
        with room.historian.engine.begin() as conn:
            conn.execute(sa.update(audit).where(audit.c.seq == seq).values(source_ip="127.0.0.1"))
            conn.exec_driver_sql(
                "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
            )
        page.context.close()


def test_signing_out_in_one_tab_ends_the_other(browser: Any, room: ControlRoomProcess) -> None:
    page, errors, violations = _strict_page(browser)
    try:
        _sign_in(page, room, "victor")
        other = page.context.new_page()  # the same browser session in a second tab
        other.goto(f"{room.url}/")
        _until(other, "document.getElementById('st-link').textContent === 'live'")
        page.click("#logout")
        t0 = time.monotonic()
        _until(
            other,
            "!document.getElementById('login-view').hidden && "
            "document.getElementById('login-error').textContent.includes('session has ended')",
            timeout_s=10,
        )
        assert time.monotonic() - t0 < 3.0
        assert not errors, errors
        assert not violations, violations
    finally:
        page.context.close()


def test_the_security_administrator_manages_users_on_their_page(browser: Any, room: ControlRoomProcess) -> None:
    page, errors, violations = _strict_page(browser)
    try:
        _sign_in(page, room, "admin", "first admin password")
        assert page.is_visible("#tab-users")
        page.keyboard.press("5")
        _until(page, "document.querySelectorAll('#users-rows tr').length >= 4")
        # a weak password is refused with the reason, nothing added
        page.click("#users-add")
        page.fill("#user-form-name", "paula")
        page.fill("#user-form-password", "aaaaaaaaaa")
        page.check("#user-form-roles input[value=operator]")
        page.click("#user-form button[value=ok]")
        _until(page, "document.getElementById('user-form-error').textContent.includes('guess')")
        page.fill("#user-form-password", "paula's winter shift password")
        page.click("#user-form button[value=ok]")
        row = "#users-rows tr[data-user='paula']"
        _until(page, f'!!document.querySelector("{row}")')
        assert "operator" in page.inner_text(row)
        assert "temporary password" in page.inner_text(row)
        page.once("dialog", lambda d: d.accept())
        page.click(f"{row} button[data-act=disable]")
        _until(page, f"document.querySelector(\"{row}\").textContent.includes('disabled')")
        page.click(f"{row} button[data-act=enable]")
        _until(page, f"!document.querySelector(\"{row}\").textContent.includes('disabled')")
        # the administrator cannot disable themselves
        assert page.is_disabled("#users-rows tr[data-user='admin'] button[data-act=disable]")
        records = [r.action for r in room.room.audit.read() if r.element == "user:paula"]
        assert records == ["user.add", "user.disable", "user.enable"]
        assert not errors, errors
        assert not violations, violations
    finally:
        page.context.close()


def test_other_roles_do_not_see_the_users_page(browser: Any, room: ControlRoomProcess) -> None:
    page, _errors, _ = _strict_page(browser)
    try:
        _sign_in(page, room, "olga")
        assert not page.is_visible("#tab-users")
        page.keyboard.press("5")
        assert page.is_hidden("#page-users")
    finally:
        page.context.close()
