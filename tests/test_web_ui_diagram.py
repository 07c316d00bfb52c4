"""The single-line diagram page in a real browser, under the control room's real security policy.

Debian's Chromium through Playwright against `opendso run`'s process on the demo grid (the
fixtures of ``test_web_ui.py``), without bypassing the Content-Security-Policy: the operator
opens the diagram (key 6), zooms in until the names show, finds an element of another feeder by
name (the diagram opens that feeder and centres on it), clicks a switch to open its panel, sees
the switch open when the scripted breaker trip opens it in the field, and goes from a node of
the diagram to its panel on the network page. Screenshots go to
``test-artifacts/ui-diagram-*.png``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from test_web_ui import ARTIFACTS, PASSWORD, _new_page, _trip, browser, room  # noqa: F401  (fixtures)

from opendso.grid.diagram import build_diagram
from opendso.runtime import ControlRoomProcess
from opendso.service.security import CSRF_HEADER


def _until(page: Any, expression: str, timeout_s: float = 15.0) -> Any:
    """Poll a JavaScript expression until it is truthy (page.evaluate works under the CSP)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {expression}")
        time.sleep(0.05)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-diagram-{name}.png"))


def _place_caution_tag(room: ControlRoomProcess, switch: str, text: str) -> bool:
    """Place a caution tag through the API as an operator; False when the service has no switching."""
    with httpx.Client(base_url=room.url, headers={"Origin": room.url}) as client:
        me = client.post("/api/auth/login", json={"username": "olga", "password": PASSWORD})
        assert me.status_code == 200, me.text
        placed = client.post(
            "/api/switching/tags",
            json={"switch": switch, "kind": "caution", "text": text},
            headers={CSRF_HEADER: me.json()["csrf_token"]},
        )
        return placed.status_code in (200, 201)


def _stats(page: Any) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate("window.opendso.diagram()")
    return stats


def test_the_operator_finds_zooms_and_reads_a_switch_on_the_diagram(browser: Any, room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        page.goto(f"{room.url}/")
        page.fill("#login-user", "olga")
        page.fill("#login-password", PASSWORD)
        page.click("#login-form button[type=submit]")
        _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
        _until(page, "document.getElementById('st-link').textContent === 'live'")

        page.keyboard.press("6")
        _until(page, "window.opendso.diagram() && window.opendso.diagram().nodes > 0")
        first = _stats(page)
        assert first["view"].startswith("substation:")
        _shot(page, "substation")

        # names appear as one zooms in (the wheel, over the first feeder's breaker)
        box = page.locator("#diagram-svg g.d-switch").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(9):
            page.mouse.wheel(0, -100)
            time.sleep(0.02)
        _until(page, f"window.opendso.diagram().labelsShown > {first['labelsShown']}")
        zoomed = _stats(page)
        assert zoomed["zoom"] > first["zoom"]
        _shot(page, "zoomed")

        # search: an element of a feeder the substation view does not show by itself opens that feeder
        catalogue = build_diagram(room.grid).catalogue()
        row = next(r for r in catalogue["index"] if r[1] == "sym_load" and r[4].startswith("feeder:"))
        page.fill("#diagram-search", str(row[0])[:-1])
        _until(page, "!document.getElementById('diagram-results').hidden")
        page.fill("#diagram-search", str(row[0]))
        page.press("#diagram-search", "Enter")
        _until(page, f"window.opendso.diagram().view === {row[4]!r} && window.opendso.diagram().highlighted")
        _shot(page, "search")

        # the feeder breaker of the scripted trip: a caution tag on it (where the service has
        # switching), then find it, click it and read its panel
        trip = next(e for e in room.simulator.scenario.events if e.kind == "breaker_trip")
        breaker = str(trip.switch)
        tagged = _place_caution_tag(room, breaker, "crew on site")
        page.fill("#diagram-search", breaker)
        page.press("#diagram-search", "Enter")
        _until(page, f"window.opendso.diagram().selected === {breaker!r}")
        page.click("#diagram-panel-close")
        _until(page, "document.getElementById('diagram-panel').hidden")
        x, y = page.evaluate(f"window.opendso.diagramScreenOfSwitch({breaker!r})")
        page.mouse.click(x, y)
        _until(page, "!document.getElementById('diagram-panel').hidden")
        assert page.text_content("#diagram-panel-name") == breaker
        fields = page.text_content("#diagram-panel-fields") or ""
        assert "closed" in fields, fields
        assert "circuit breaker" in fields, fields
        assert "Tags" in fields
        if tagged:
            _until(page, "document.getElementById('diagram-panel-fields').textContent.includes('crew on site')")
            assert page.locator("#diagram-svg .d-tag").count() >= 1
        else:
            _until(page, "/Tags(none|not available)/.test(document.getElementById('diagram-panel-fields').textContent)")
        _shot(page, "switch")

        # the field opens the breaker: the diagram follows the live state
        open_before = _stats(page)["openSwitches"]
        _trip(room)
        _until(page, f"window.opendso.diagram().openSwitches > {open_before}", timeout_s=30)
        _until(page, "document.getElementById('diagram-panel-fields').textContent.includes('OPEN')")
        _shot(page, "trip")

        # a node's panel leads to its full panel on the network page
        page.focus("#diagram-svg")
        page.keyboard.press("0")
        page.locator("#diagram-svg circle.d-node").first.click(force=True)
        _until(page, "document.getElementById('diagram-panel-kind').textContent.startsWith('node')")
        page.get_by_role("button", name="Show on the network").click()
        _until(page, "!document.getElementById('page-network').hidden")
        _until(page, "!document.getElementById('element-panel').hidden")
        assert not errors, errors
        assert not violations, violations
    finally:
        page.context.close()
