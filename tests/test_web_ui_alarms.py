"""Browser tests of the alarm pages (issue 8, items 9-14): Playwright driving Chromium against `opendso run`'s process.

One process per module (fixtures as in test_web_ui.py): the demo grid without scripted events,
so the test opens and closes the feeder breaker itself, as protection and a crew would
(uncommanded changes seen through telemetry). Every assertion compares the screen with the
server: the alarm list, the counts in the status bar and the badge, the shelved and
out-of-service lists, the journal and the performance figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from conftest import UNLIMITED_LOGINS, _cached_grid
from test_web_ui import FAST, PASSWORD, _login, _new_page, _shot, browser

from opendso.demo import feeder_breaker as _feeder_breaker
from opendso.runtime import ControlRoomProcess
from opendso.service import Security, ServiceSettings
from opendso.telemetry.scenario import scenario_of

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_web_ui.py

USERS = {"olga": ("operator",), "victor": ("viewer",), "erik": ("engineer",)}
#: Generous bound for anything that follows a cycle (period 0.5 s) on a busy machine.
WAIT_S = 20.0


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoomProcess]:
    """`opendso run`'s process on the demo grid, no scripted events, operator, viewer and engineer."""
    process = ControlRoomProcess(
        _cached_grid("demo"),
        tmp_path_factory.mktemp("alarm-room"),
        port=0,
        period_s=0.5,
        scenario=scenario_of([], name="quiet day"),
        admin_password="first admin password",
        service_settings=ServiceSettings(security=FAST, login=UNLIMITED_LOGINS),
    )
    security = Security(process.historian.engine, settings=FAST)
    for user, roles in USERS.items():
        security.add_user(user, PASSWORD, list(roles), actor="admin")
    with process.in_thread():
        yield process


@pytest.fixture(scope="module")
def breaker(room: ControlRoomProcess) -> str:
    """The feeder breaker, tripped (opened uncommanded) once the field is seen."""
    name = _feeder_breaker(room.grid)
    assert name is not None
    _until(lambda: room.room.latest is not None and room.room.latest.observable, "the first observable cycle")
    _trip(room, name)
    return name


def _until(check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``check()`` until it is truthy (bounded by a generous deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _js(page: Any, expression: str, what: str, timeout_s: float = WAIT_S) -> Any:
    """Wait until a JS expression is truthy in the page (page.evaluate, not eval: the page's CSP stays on)."""
    return _until(lambda: page.evaluate(expression), what, timeout_s)


def _trip(room: ControlRoomProcess, name: str) -> None:
    room.set_switch(name, False)
    _until(lambda: any(a["key"] == f"switch:{name}" and a["severity"] for a in room.room.alarms()), "the trip alarm")


def _reclose(room: ControlRoomProcess, name: str) -> None:
    room.set_switch(name, True)
    _until(lambda: all(a["severity"] == 0 for a in room.room.alarms() if a["key"] == f"switch:{name}"), "reclosing")


def _page(
    browser: Any, room: ControlRoomProcess, user: str, *, init_script: str | None = None
) -> tuple[Any, list[str]]:
    page, errors = _new_page(browser)
    if init_script:
        page.add_init_script(init_script)
    _login(page, room, user)
    return page, errors


def _api(room: ControlRoomProcess, user: str) -> httpx.Client:
    """An API client logged in as ``user`` (cookie session with its CSRF header), as a second console would be."""
    client = httpx.Client(base_url=str(room.url), timeout=WAIT_S)
    me = client.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    assert me.status_code == 200, me.text
    client.headers["X-CSRF-Token"] = me.json()["csrf_token"]
    return client


def _server_counts(room: ControlRoomProcess) -> dict[str, int]:
    return room.room.alarm_counts()


def _agrees(page: Any, room: ControlRoomProcess) -> bool:
    """The screen's list, its counts, the status bar and the badge all say what the server says."""
    shown = page.evaluate(
        """() => ({keys: window.opendso.alarms().map(a => a.key + '|' + a.state).sort(),
                   counts: window.opendso.alarmCounts(),
                   bar: document.getElementById('st-alarms').textContent,
                   badge: document.getElementById('alarm-badge').hidden ? '0'
                          : document.getElementById('alarm-badge').textContent})"""
    )
    server = _server_counts(room)
    keys = sorted(f"{a['key']}|{a['state']}" for a in room.room.alarms())
    return bool(
        shown["keys"] == keys
        and shown["counts"]["server"] == server
        and shown["counts"]["list"] == server
        and shown["bar"].startswith(f"{server['standing']} standing, {server['unacknowledged']} unacknowledged")
        and shown["badge"] == str(server["unacknowledged"])
    )


def test_a_trip_is_one_group_headed_by_the_breaker_and_counts_agree(
    browser: Any, room: ControlRoomProcess, breaker: str
) -> None:
    page, errors = _page(browser, room, "olga")
    page.keyboard.press("2")
    head = page.locator(f'#alarm-rows tr.head[data-key="switch:{breaker}"]')
    head.wait_for(timeout=WAIT_S * 1000)
    group = page.locator("#alarm-rows tr.group-row").filter(has_text="caused by")
    assert breaker in group.inner_text()
    supply = [a["key"] for a in room.room.alarms() if a["monitor"] == "supply"]
    assert len(supply) > 10  # the flood
    consequences = page.locator("#alarm-rows tr.consequence")
    assert consequences.count() == len(supply)
    # the row after the group row is the breaker: the cause heads, its consequences follow
    assert group.locator("xpath=following-sibling::tr[1]").get_attribute("data-key") == f"switch:{breaker}"
    _until(lambda: _agrees(page, room), "the screen to agree with the server")
    _shot(page, "alarms-trip-group")
    page.context.close()
    assert not errors, errors


def test_acknowledge_all_visible_asks_first_and_spares_folded_groups(
    browser: Any, room: ControlRoomProcess, breaker: str
) -> None:
    page, errors = _page(browser, room, "olga")
    page.keyboard.press("2")
    page.locator(f'#alarm-rows tr[data-key="switch:{breaker}"]').wait_for(timeout=WAIT_S * 1000)
    group = page.locator("#alarm-rows tr.group-row").filter(has_text="caused by")
    group.click()  # fold the trip's group: its head stays on screen, the consequences go
    assert page.locator("#alarm-rows tr.consequence").count() == 0
    on_screen = page.evaluate(
        "[...document.querySelectorAll('#alarm-rows tr[data-key].unacked')].map(r => r.dataset.key)"
    )
    assert f"switch:{breaker}" in on_screen
    folded = [a["key"] for a in room.room.alarms() if a["monitor"] == "supply" and not a["acknowledged"]]
    assert folded
    page.click("#ack-all")
    dialog = page.locator("#ack-confirm")
    dialog.wait_for(state="visible")
    text = page.inner_text("#ack-confirm-text")
    assert f"Acknowledge the {len(on_screen)} unacknowledged alarm" in text, text
    assert "not be acknowledged" in page.inner_text("#ack-confirm-note")
    _shot(page, "alarms-ack-confirm")
    page.click("#ack-confirm-cancel")  # cancelled: nothing happens
    assert all(not a["acknowledged"] for a in room.room.alarms() if a["key"] in on_screen)
    page.click("#ack-all")
    page.click("#ack-confirm-ok")
    _until(lambda: all(a["acknowledged"] for a in room.room.alarms() if a["key"] in on_screen), "the acknowledgement")
    state = {a["key"]: a["acknowledged"] for a in room.room.alarms()}
    assert not any(state[k] for k in folded)  # the folded consequences were not on screen: untouched
    _until(lambda: _agrees(page, room), "the screen to agree with the server")
    page.context.close()
    assert not errors, errors


def test_shelved_alarms_are_listed_with_reason_user_and_expiry_and_can_be_unshelved(
    browser: Any, room: ControlRoomProcess, breaker: str
) -> None:
    del breaker
    page, errors = _page(browser, room, "olga")
    page.keyboard.press("2")
    key = next(a["key"] for a in room.room.alarms() if a["monitor"] == "supply" and a["state"] != "shelved")
    page.locator(f'#alarm-rows tr[data-key="{key}"] button.shelve').click()
    page.fill("#shelve-reason", "crew on site")
    page.select_option("#shelve-duration", "28800")  # the longest choice: one shift
    page.click("#shelve-ok")
    _until(lambda: next(a for a in room.room.alarms() if a["key"] == key)["state"] == "shelved", "the shelf")
    page.click("#alarm-view-hidden")
    row = page.locator(f'#shelved-rows tr[data-key="{key}"]')
    row.wait_for(timeout=WAIT_S * 1000)
    text = row.inner_text()
    assert "olga" in text
    assert "crew on site" in text
    assert row.locator("td.expiry").inner_text().strip()  # the expiry is shown
    assert "1 shelved" in page.inner_text("#st-alarms")  # counted apart in the status bar
    _shot(page, "alarms-shelved")
    row.locator("button.unshelve").click()
    _until(lambda: next(a for a in room.room.alarms() if a["key"] == key)["state"] != "shelved", "the unshelve")
    page.locator(f'#shelved-rows tr[data-key="{key}"]').wait_for(state="detached", timeout=WAIT_S * 1000)
    back = next(a for a in room.room.alarms() if a["key"] == key)
    assert back["state"] == "unacknowledged"  # still active: announced again
    assert any(r.action == "alarm.unshelve" and r.actor == "olga" for r in room.room.audit.read(0, limit=5000))
    _until(lambda: _agrees(page, room), "the screen to agree with the server")
    page.context.close()
    assert not errors, errors


def test_an_engineer_takes_an_alarm_out_of_service_and_the_status_bar_counts_it(
    browser: Any, room: ControlRoomProcess, breaker: str
) -> None:
    del breaker
    viewer, viewer_errors = _page(browser, room, "victor")
    viewer.keyboard.press("2")
    viewer.click("#alarm-view-hidden")
    assert viewer.is_disabled("#oos-add")
    assert viewer.is_disabled("#area-suppress")
    viewer.context.close()
    assert not viewer_errors, viewer_errors

    page, errors = _page(browser, room, "erik")
    page.keyboard.press("2")
    page.click("#alarm-view-hidden")
    key = next(a["key"] for a in room.room.alarms() if a["monitor"] == "supply" and a["state"] == "unacknowledged")
    page.fill("#oos-key", key)
    page.click("#oos-add")
    page.fill("#reason-text", "meter replaced, WO 4711")
    page.click("#reason-ok")
    row = page.locator(f'#oos-rows tr[data-key="{key}"]')
    row.wait_for(timeout=WAIT_S * 1000)
    assert "meter replaced, WO 4711" in row.inner_text()
    assert "erik" in row.inner_text()
    _js(page, "document.getElementById('st-alarms').textContent.includes('1 out of service')", "the status bar")
    _until(lambda: _agrees(page, room), "the screen to agree with the server")
    _shot(page, "alarms-out-of-service")
    row.locator("button.return").click()
    row.wait_for(state="detached", timeout=WAIT_S * 1000)
    assert next(a for a in room.room.alarms() if a["key"] == key)["state"] == "unacknowledged"
    page.context.close()
    assert not errors, errors


def test_history_and_performance_pages(browser: Any, room: ControlRoomProcess, breaker: str) -> None:
    page, errors = _page(browser, room, "olga")
    page.keyboard.press("2")
    page.click("#alarm-view-history")
    raised = page.locator("#history-rows tr", has_text=f"switch:{breaker}").filter(has_text="raised")
    raised.first.wait_for(timeout=WAIT_S * 1000)
    page.select_option("#history-priority", "high")
    _js(page, "document.querySelector('#history-rows tr') !== null", "the filtered history")
    priorities = page.evaluate(
        "[...document.querySelectorAll('#history-rows tr .prio')].map(e => e.textContent.trim())"
    )
    assert priorities
    assert set(priorities) == {"high"}
    _shot(page, "alarms-history")
    page.click("#alarm-view-summary")
    page.locator("#sum-floods").wait_for(timeout=WAIT_S * 1000)
    summary = room.room.alarm_summary(start=room.room.alarm_time() - timedelta(hours=24), end=room.room.alarm_time())
    assert int(page.inner_text("#sum-floods").split()[0]) == len(summary["floods"]["periods"]) >= 1
    tops = page.evaluate(
        "[...document.querySelectorAll('#summary-top-rows tr td:first-child')].map(e => e.textContent)"
    )
    assert f"switch:{breaker}" in tops or any(k.startswith("supply:") for k in tops)
    _shot(page, "alarms-performance")
    page.context.close()
    assert not errors, errors


#: Keeps every WebSocket the page opens, and drops incoming messages while window.__deaf is set.
DEAF_SOCKETS = """
window.__sockets = [];
window.__deaf = false;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    window.__sockets.push(this);
    // registered before the page's onmessage handler: while deaf, that handler never sees a message
    this.addEventListener("message", (e) => { if (window.__deaf) e.stopImmediatePropagation(); });
  }
};
"""


def test_the_list_resynchronises_on_reconnect_and_drops_what_the_server_dropped(
    browser: Any, room: ControlRoomProcess, breaker: str
) -> None:
    page, errors = _page(browser, room, "olga", init_script=DEAF_SOCKETS)
    page.keyboard.press("2")
    _until(lambda: _agrees(page, room), "the screen to agree with the server")
    resyncs = page.evaluate("window.opendso.alarmResyncs()")
    page.evaluate("window.__deaf = true")  # the screen misses everything from now on
    _reclose(room, breaker)  # supply back: the alarms return to normal, unacknowledged
    second_console = _api(room, "olga")
    try:
        keys = [a["key"] for a in room.room.alarms() if a["state"] == "returned_unacknowledged"]
        assert keys
        done = second_console.post("/api/alarms/acknowledge", json={"keys": keys})
        assert done.status_code == 200, done.text
    finally:
        second_console.close()
    gone = set(keys)
    assert not gone & {a["key"] for a in room.room.alarms()}  # the server dropped them
    drift = set(page.evaluate("window.opendso.alarms().map(a => a.key)")) & gone
    assert drift  # the deaf screen still shows what the server dropped (the bug's 42 vs 6)
    # the connection drops and comes back: the screen reloads the server's list
    page.evaluate("window.__deaf = false; window.__sockets.at(-1).close()")
    _js(page, f"window.opendso.alarmResyncs() > {resyncs}", "the resynchronisation")
    _until(lambda: _agrees(page, room), "the screen to agree with the server after the reconnect")
    assert not set(page.evaluate("window.opendso.alarms().map(a => a.key)")) & gone
    _trip(room, breaker)  # as the other tests found it
    page.context.close()
    assert not errors, errors
