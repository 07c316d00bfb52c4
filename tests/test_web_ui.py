"""Browser tests of the control room: Playwright driving Debian's Chromium against `opendso run`'s process.

The whole control room runs as `opendso run` starts it (field simulator on the demo grid with
the scripted day, Modbus on loopback, historian, cycle, alarms, web service), on an ephemeral
port in a background thread. The tests log in as the users an administrator would create, and
fast-forward the simulated clock to the scripted breaker trip instead of waiting for it.

Chromium is found at ``$OPENDSO_CHROMIUM``, ``/usr/bin/chromium`` or on ``PATH``; without it (or
without the ``playwright`` package) the tests are skipped, except under ``CI=true`` where they
fail. Screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import UNLIMITED_LOGINS, _cached_grid, require_service

from opendso.runtime import ControlRoomProcess
from opendso.service import Security, ServiceSettings
from opendso.service.security import SecuritySettings

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Cheap hashing keeps the tests fast; the hash format (argon2id) is the same as in production.
FAST = SecuritySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
USERS = {
    "olga": ("operator",),
    "victor": ("viewer",),
    "aude": ("security_auditor",),
}
PASSWORD = "correct horse battery"


def _chromium() -> str:
    for candidate in (os.environ.get("OPENDSO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    require_service("Chromium not found: apt-get install chromium, or set OPENDSO_CHROMIUM")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's package) driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("the playwright package is not installed")
    executable = _chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoomProcess]:
    """`opendso run`'s process on the demo grid, its service on an ephemeral port, with three users."""
    process = ControlRoomProcess(
        _cached_grid("demo"),
        tmp_path_factory.mktemp("control-room"),
        port=0,
        period_s=0.5,
        admin_password="first admin password",
        service_settings=ServiceSettings(security=FAST, login=UNLIMITED_LOGINS),
    )
    security = Security(process.historian.engine, settings=FAST)
    for user, roles in USERS.items():
        security.add_user(user, PASSWORD, list(roles), actor="admin")
    security.add_user("nina", PASSWORD, ["operator"], actor="admin", must_change_password=True)
    with process.in_thread():
        yield process


def _new_page(browser: Any, *, strict_csp: bool = False) -> tuple[Any, list[str]]:
    # Playwright's wait_for_function compiles its predicate with eval, which the control room's
    # Content-Security-Policy forbids: functional tests let Playwright bypass the policy, and
    # test_web_ui_security.py drives the whole UI under the real one (strict_csp=True)
    context = browser.new_context(viewport={"width": 1600, "height": 900}, bypass_csp=not strict_csp)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


@pytest.fixture
def page(browser: Any, room: ControlRoomProcess) -> Iterator[Any]:
    """A fresh browser page, logged in as the operator, with the network drawn."""
    page, errors = _new_page(browser)
    _login(page, room, "olga")
    yield page
    page.context.close()
    assert not errors, errors


def _login(page: Any, room: ControlRoomProcess, user: str) -> None:
    page.goto(f"{room.url}/")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_function("window.opendso.stats().nodesDrawn > 0", timeout=15_000)
    page.wait_for_function("document.getElementById('st-link').textContent === 'live'", timeout=15_000)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def _trip(room: ControlRoomProcess) -> str:
    """Fast-forward the simulated day to its scripted breaker trip; return the breaker's name."""
    trip = next(e for e in room.simulator.scenario.events if e.kind == "breaker_trip")
    assert trip.switch is not None
    room.jump_to(trip.at_s)
    return trip.switch


def test_login_page_rejects_wrong_password(browser: Any, room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser)
    page.goto(f"{room.url}/")
    page.wait_for_selector("#login-form")
    _shot(page, "login")
    page.fill("#login-user", "olga")
    page.fill("#login-password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    assert page.is_hidden("#app-view")
    page.context.close()
    assert not errors, errors
    failed = [r for r in room.room.audit.read(0, limit=1000) if r.action == "login.failed"]
    assert any(r.actor == "olga" for r in failed)


def test_temporary_password_is_replaced_at_first_sign_in(browser: Any, room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser)
    page.goto(f"{room.url}/")
    page.fill("#login-user", "nina")
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#password-form:not([hidden])")
    assert "temporary" in page.inner_text("#password-why")
    assert page.is_hidden("#app-view")
    page.fill("#password-current", PASSWORD)
    page.fill("#password-new", "nina chose this one")
    page.fill("#password-repeat", "nina chose this two")
    page.click("#password-form button[type=submit]")
    assert "differ" in page.inner_text("#password-error")
    page.fill("#password-repeat", "nina chose this one")
    _shot(page, "password-change")
    page.click("#password-form button[type=submit]")
    page.wait_for_function("window.opendso.stats().nodesDrawn > 0", timeout=15_000)
    page.context.close()
    assert not errors, errors
    security = Security(room.historian.engine, settings=FAST)
    assert security.authenticate("nina", "nina chose this one").must_change_password is False


def test_network_is_drawn_with_live_status_bar(page: Any, room: ControlRoomProcess) -> None:
    stats = page.evaluate("window.opendso.stats()")
    view = room.room.grid_view()
    assert stats["nodes"] == len(view["nodes"])
    assert stats["nodesDrawn"] == stats["nodes"]  # fitted: every node on screen
    assert stats["branchesDrawn"] > 0
    assert stats["switches"] == len(view["switches"])
    painted = page.evaluate(
        """() => {
        const c = document.getElementById('network-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== 0x10 || d[i+1] !== 0x14 || d[i+2] !== 0x18) n++;
        return n;
    }"""
    )
    assert painted > 2000
    # the status bar follows the real cycle: a cycle time, observability, telemetry, the simulated day
    page.wait_for_function("/^\\d+ ms$/.test(document.getElementById('st-cycle').textContent)")
    page.wait_for_function("document.getElementById('st-observable').textContent === 'observable'")
    points = len(room.point_map)
    page.wait_for_function(f"document.getElementById('st-telemetry').textContent.startsWith('{points}/{points} good')")
    assert page.inner_text("#st-clock").startswith("2016-06-21")
    frames = page.evaluate("window.opendso.stats().stateUpdates")
    page.wait_for_function(f"window.opendso.stats().stateUpdates > {frames}")  # pushed by the next cycle
    assert "olga" in page.inner_text("#user-label")
    assert page.is_hidden("#tab-audit")  # the audit trail is for security auditors only
    _shot(page, "network")


def test_click_opens_element_panel_with_measured_values_and_trend(page: Any, room: ControlRoomProcess) -> None:
    view = room.room.grid_view()
    # a node with a voltage measurement (the points sit on the measurement placed at the node)
    # (on the MV feeder, where nodes are apart: the HV substation's busbars and switches overlap when fitted)
    node = next(
        n
        for n in view["nodes"]
        if n["name"].startswith("MV")
        and " Bus " in n["name"]
        and any(p.endswith("/u") for p in room.room.element(n["id"])["points"])
    )
    x, y = page.evaluate(f"window.opendso.screenOf({node['id']})")
    box = page.locator("#network-canvas").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#element-panel:not([hidden])")
    assert page.inner_text("#el-name") == node["name"]
    page.wait_for_function("document.getElementById('el-estimated').textContent.includes('p.u.')")
    # the measured value is the historian's latest: a number, not a placeholder
    page.wait_for_function("!document.querySelector('#el-points .pv').textContent.includes('…')")
    value = page.inner_text("#el-points .pv")
    assert float(value) > 0, value
    assert page.inner_text("#el-points .pq") == "good"
    page.wait_for_function("document.querySelector('#el-trend canvas') !== null")
    _shot(page, "element-panel")


def test_scripted_trip_raises_alarm_operator_acknowledges_auditor_sees_it(
    browser: Any, page: Any, room: ControlRoomProcess
) -> None:
    assert page.evaluate("window.opendso.lastCue()") is None
    breaker = _trip(room)
    key = f"switch:{breaker}"
    # the alarm arrives over the WebSocket: the banner and the cue for a new high-priority alarm
    page.wait_for_selector("#alarm-banner:not([hidden])", timeout=15_000)
    page.wait_for_function(f"window.opendso.alarms().some(a => a.key === {key!r})", timeout=15_000)
    assert page.evaluate("window.opendso.lastCue()") is not None
    _shot(page, "alarm-banner")
    # the de-energised feeder is greyed and the open breaker marked
    page.wait_for_function("window.opendso.stats().deadNodes > 3", timeout=15_000)
    assert page.evaluate("window.opendso.stats().openSwitches") >= 1
    _shot(page, "network-tripped")

    page.keyboard.press("2")
    row = page.locator(f'tr[data-key="{key}"]')
    row.wait_for()
    assert "unacknowledged" in row.inner_text()
    assert "uncommanded" in row.inner_text()
    _shot(page, "alarms")
    row.locator("button.ack").click()
    page.wait_for_function(f"""document.querySelector('tr[data-key="{key}"]').classList.contains('acked')""")
    assert next(a for a in room.room.alarms() if a["key"] == key)["acknowledged"] is True

    # shelve a supply alarm of the tripped feeder with a reason
    supply = next(a["key"] for a in room.room.alarms() if a["monitor"] == "supply")
    page.locator(f'tr[data-key="{supply}"] button.shelve').click()
    page.fill("#shelve-reason", "crew on site")
    page.click("#shelve-ok")
    page.wait_for_function(f"""!document.querySelector('tr[data-key="{supply}"]')""")
    shelved = next(a for a in room.room.alarms() if a["key"] == supply)
    assert datetime.fromisoformat(shelved["shelved_until"]) > datetime.now(UTC)

    # the security auditor sees both actions, by whom and why, in the audit trail page
    auditor, errors = _new_page(browser)
    _login(auditor, room, "aude")
    assert auditor.is_visible("#tab-audit")
    auditor.keyboard.press("4")
    ack_row = auditor.locator("#audit-rows tr", has_text="alarm.acknowledge").filter(has_text=key)
    ack_row.wait_for()
    text = ack_row.inner_text()
    assert "olga" in text
    assert "127.0.0.1" in text
    shelve_row = auditor.locator("#audit-rows tr", has_text="alarm.shelve").filter(has_text=supply)
    assert "crew on site" in shelve_row.inner_text()
    assert "verified: audit trail, event log" in auditor.inner_text("#audit-chain")  # checked by the server
    assert "intact" in auditor.inner_text("#audit-chain")
    _shot(auditor, "audit")
    auditor.context.close()
    assert not errors, errors


def test_viewer_sees_alarms_but_cannot_acknowledge(browser: Any, room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser)
    _login(page, room, "victor")
    page.keyboard.press("2")
    page.wait_for_selector("#alarm-rows tr[data-key]")
    assert page.locator("#alarm-rows button.ack:enabled").count() == 0
    assert page.is_disabled("#ack-all")
    assert page.is_disabled("#note-form button[type=submit]")
    page.keyboard.press("4")  # no audit page for a viewer: the key does nothing
    assert page.is_hidden("#page-audit")
    page.context.close()
    assert not errors, errors


def test_shift_log_note_reaches_the_event_log(page: Any, room: ControlRoomProcess) -> None:
    page.keyboard.press("3")
    page.wait_for_selector("#event-rows tr")
    page.fill("#note-text", "Handover: feeder breaker tripped at 15:00, crew on site, supply alarms shelved.")
    page.click("#note-form button[type=submit]")
    page.wait_for_function("document.getElementById('notes').textContent.includes('crew on site')")
    notes = room.room.shift_notes()
    assert notes[-1]["actor"] == "olga"
    assert "crew on site" in notes[-1]["payload"]["text"]
    assert any(r.action == "shift.note" and r.actor == "olga" for r in room.room.audit.read(0, limit=5000))
    _shot(page, "shift-log")
