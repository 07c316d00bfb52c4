"""Browser tests of the control-room web UI: Playwright driving Debian's Chromium against a fake API.

Chromium is found at ``$OPENDSO_CHROMIUM``, ``/usr/bin/chromium`` or on ``PATH``; without it (or
without the ``playwright`` package) the tests are skipped, except under ``CI=true`` where they fail.
Screenshots and the measured load times go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import _cached_grid, require_service
from ui_fake_api import FakeBackend, build_backend, serve

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
DEMO_GRID = "simbench:1-MV-urban--0-sw"
BIG_GRID = "simbench:1-MVLV-urban-all-0-sw"


def _missing(reason: str) -> None:
    require_service(reason)


def _chromium() -> str:
    for candidate in (os.environ.get("OPENDSO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    _missing("Chromium not found: apt-get install chromium, or set OPENDSO_CHROMIUM")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's package) driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    executable = _chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[FakeBackend, str]]:
    """The fake API on the demo grid, on an ephemeral port."""
    backend = build_backend(_cached_grid(DEMO_GRID))
    with serve(backend) as url:
        yield backend, url


@pytest.fixture
def page(browser: Any, demo: tuple[FakeBackend, str]) -> Iterator[Any]:
    """A fresh browser page, logged in as operator, with the network drawn."""
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, demo[1])
    yield page
    context.close()
    assert not errors, errors


def _login(page: Any, url: str, user: str = "operator") -> None:
    page.goto(url + "/")
    page.fill("#login-user", user)
    page.fill("#login-password", user)
    page.click("button[type=submit]")
    page.wait_for_function("window.opendso.stats().nodesDrawn > 0", timeout=10_000)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def _alarm_event(backend: FakeBackend, *, transition: str = "raised") -> dict[str, Any]:
    node = backend.grid_json["nodes"][5]
    return {
        "time": datetime(2026, 6, 21, 12, 1, tzinfo=UTC).isoformat(),
        "transition": transition,
        "key": f"voltage:{node['name']}",
        "monitor": "voltage",
        "channel": node["name"],
        "condition": "high",
        "severity": 2,
        "priority": "high",
        "value": 1.072,
        "group": f"feeder {node['feeder']}",
        "shelved": False,
        "suppressed": False,
        "actor": None,
        "reason": None,
    }


def test_login_page_rejects_wrong_password(browser: Any, demo: tuple[FakeBackend, str]) -> None:
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    page.goto(demo[1] + "/")
    page.wait_for_selector("#login-form")
    _shot(page, "login")
    page.fill("#login-user", "operator")
    page.fill("#login-password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    assert page.is_hidden("#app-view")
    context.close()


def test_network_is_drawn_with_status_bar(page: Any, demo: tuple[FakeBackend, str]) -> None:
    backend, _ = demo
    stats = page.evaluate("window.opendso.stats()")
    assert stats["nodes"] == len(backend.grid_json["nodes"])
    assert stats["nodesDrawn"] == stats["nodes"]  # fitted: every node on screen
    assert stats["branchesDrawn"] > 0
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
    page.wait_for_function("document.getElementById('st-cycle').textContent === '42 ms'")
    assert page.inner_text("#st-observable") == "observable"
    assert "25/26 good" in page.inner_text("#st-telemetry")
    assert page.inner_text("#st-clock").startswith("2026-06-21 12:00:00")
    _shot(page, "network")


def test_click_opens_element_panel_with_trend(page: Any, demo: tuple[FakeBackend, str]) -> None:
    backend, _ = demo
    node = backend.grid_json["nodes"][20]
    x, y = page.evaluate(f"window.opendso.screenOf({node['id']})")
    box = page.locator("#network-canvas").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#element-panel:not([hidden])")
    page.wait_for_function("document.querySelector('#el-trend canvas') !== null")
    assert page.inner_text("#el-name") in {n["name"] for n in backend.grid_json["nodes"]}
    assert "p.u." in page.inner_text("#el-estimated")
    page.wait_for_function("!document.querySelector('#el-points .pv').textContent.includes('…')")
    _shot(page, "element-panel")


def test_pushed_alarm_appears_and_acknowledge_sends_csrf(page: Any, demo: tuple[FakeBackend, str]) -> None:
    backend, _ = demo
    page.wait_for_function("document.getElementById('st-link').textContent === 'live'")
    event = _alarm_event(backend)
    backend.broadcast({"type": "alarm", "event": event})
    page.wait_for_selector("#alarm-banner:not([hidden])")
    assert page.evaluate("window.opendso.lastCue().key") == event["key"]
    assert "1 unacknowledged high-priority alarm" in page.inner_text("#alarm-banner")
    _shot(page, "alarm-banner")
    page.keyboard.press("2")
    row = page.locator(f'tr[data-key="{event["key"]}"]')
    row.wait_for()
    assert "unacknowledged" in row.inner_text()
    _shot(page, "alarms")
    before = len(backend.requests)
    row.locator("button.ack").click()
    page.wait_for_function(f"""document.querySelector('tr[data-key="{event["key"]}"]').classList.contains('acked')""")
    sent = backend.requests[before]
    assert sent.method == "POST"
    assert sent.path.endswith("/acknowledge")
    assert sent.csrf in {s[2] for s in backend.sessions.values()}  # the token login returned
    assert backend.alarms[event["key"]]["acknowledged"] is True
    # shelve with a reason
    page.locator(f'tr[data-key="{event["key"]}"] button.shelve').click()
    page.fill("#shelve-reason", "crew on site")
    page.click("#shelve-ok")
    page.wait_for_function(f"""!document.querySelector('tr[data-key="{event["key"]}"]')""")
    shelve = backend.requests[-1]
    assert shelve.path.endswith("/shelve")
    assert shelve.body["reason"] == "crew on site"
    assert datetime.fromisoformat(shelve.body["until"]) > datetime.now(UTC)
    backend.broadcast({"type": "alarm", "event": _alarm_event(backend, transition="cleared")})


def test_state_message_redraws(page: Any, demo: tuple[FakeBackend, str]) -> None:
    backend, _ = demo
    page.wait_for_function("document.getElementById('st-link').textContent === 'live'")
    frames = page.evaluate("window.opendso.stats().frames")
    branch = backend.grid_json["branches"][0]["id"]
    backend.broadcast({"type": "state", "loading": {str(branch): 1.4}})
    page.wait_for_function(f"window.opendso.stats().frames > {frames} && window.opendso.stats().stateUpdates > 1")
    backend.broadcast({"type": "status", **backend.status(), "cycle_ms": 77})
    page.wait_for_function("document.getElementById('st-cycle').textContent === '77 ms'")


def test_shift_log_note(page: Any, demo: tuple[FakeBackend, str]) -> None:
    backend, _ = demo
    page.keyboard.press("3")
    page.wait_for_selector("#event-rows tr")
    page.fill("#note-text", "Handover: line 3 overloaded at noon, PV curtailment requested.")
    page.click("#note-form button[type=submit]")
    page.wait_for_function("document.getElementById('notes').textContent.includes('PV curtailment')")
    sent = backend.requests[-1]
    assert sent.path == "/api/shiftlog"
    assert sent.csrf in {s[2] for s in backend.sessions.values()}
    assert "PV curtailment" in sent.body["text"]
    _shot(page, "shift-log")


def _load_time(browser: Any, url: str) -> float:
    """Seconds from navigation (already signed in) to a drawn network."""
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    _login(page, url)
    start = time.perf_counter()
    page.reload()
    page.wait_for_function("window.opendso.stats().nodesDrawn > 0", timeout=20_000, polling=10)
    seconds = time.perf_counter() - start
    context.close()
    return seconds


def test_page_load_to_drawn_network(browser: Any, demo: tuple[FakeBackend, str]) -> None:
    big = build_backend(_cached_grid(BIG_GRID))
    assert len(big.grid_json["nodes"]) >= 10_000
    demo_s = min(_load_time(browser, demo[1]) for _ in range(2))
    with serve(big) as url:
        big_s = min(_load_time(browser, url) for _ in range(2))
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        page = context.new_page()
        _login(page, url)
        frames = page.evaluate("window.opendso.stats().frames")
        page.click("#zoom-in")  # one full redraw of 10,000 nodes at a new scale
        page.wait_for_function(f"window.opendso.stats().frames > {frames}")
        frame_ms = page.evaluate("window.opendso.stats().lastFrameMs")
        _shot(page, "network-10k")
        context.close()
    ARTIFACTS.mkdir(exist_ok=True)
    figures = {"demo_grid_s": round(demo_s, 3), "big_grid_s": round(big_s, 3), "big_grid_frame_ms": round(frame_ms, 1)}
    (ARTIFACTS / "ui-timings.json").write_text(json.dumps(figures, indent=2))
    assert demo_s < 2.0, figures
    assert big_s < 3.0, figures
