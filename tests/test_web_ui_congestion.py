"""The Congestion page in a real browser: the 48-hour timeline of violation probabilities with its tooltip.

Debian's Chromium through Playwright against `opendso run`'s process on the demo grid (the
fixtures of ``test_web_ui.py``), under the control room's real Content-Security-Policy. A viewer
opens the page (key ``c``) with a tight loading limit and voltage band (the demo's summer day is
within the default limits), waits for the forecast computed by the server, and finds a row per
element at risk drawn on the canvas, a tooltip with the probability, the median-scenario value,
the size and where to relieve it, and the list of elements. Screenshot:
``test-artifacts/ui-congestion.png``.
"""

from __future__ import annotations

from typing import Any

from test_web_ui import ARTIFACTS, PASSWORD, _new_page, browser, room  # noqa: F401  (fixtures)
from test_web_ui_der import _until

from opendso.runtime import ControlRoomProcess


def test_the_congestion_page_draws_the_timeline_and_explains_a_cell(browser: Any, room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{room.url}/")
    page.fill("#login-user", "victor")
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    # choose the limits before the page opens (the selects are hidden until then; a change while the
    # page shows computes the forecast again)
    page.evaluate(
        "document.getElementById('congestion-loading').value = '0.5';"
        "document.getElementById('congestion-band').value = '0.97-1.03';"
        "document.getElementById('congestion-scenarios').value = '50'"
    )
    page.keyboard.press("c")
    assert page.get_attribute("#tab-congestion", "aria-selected") == "true"
    state = _until(
        page,
        "['ready', 'error'].includes(document.getElementById('congestion-canvas').dataset.state)"
        " && document.getElementById('congestion-canvas').dataset.state",
        timeout_s=240.0,
    )
    assert state == "ready", page.inner_text("#congestion-summary")
    summary = page.inner_text("#congestion-summary")
    assert "50 scenarios (gaussian copula)" in summary
    assert "192 intervals" in summary
    rows = int(page.get_attribute("#congestion-canvas", "data-rows") or 0)
    assert rows > 0, summary
    # the list names the same elements, most likely first
    listed = page.locator("#congestion-list tbody tr")
    assert listed.count() == rows
    first = [c.strip() for c in listed.nth(0).locator("td").all_inner_texts()]
    assert first[0] in ("line", "transformer", "node")
    assert first[2].endswith("%")
    # hover the first row at its most likely interval: the tooltip explains the cell
    data = page.evaluate("window.opendso.congestion()")  # what the page drew
    top = data["elements"][0]
    t = max(range(data["steps"]), key=lambda k: top["probability"][k])
    page.evaluate("document.getElementById('page-congestion').scrollTop = 0")  # the first row below the toolbar
    box = page.locator("#congestion-canvas").bounding_box()
    assert box is not None
    label_w, row_h = 220, 18
    x = box["x"] + label_w + (t + 0.5) * (box["width"] - label_w) / data["steps"]
    y = box["y"] + 22 + row_h / 2
    page.mouse.move(x - 40, y)
    page.mouse.move(x, y, steps=4)
    try:
        _until(page, "!document.getElementById('congestion-tip').hidden")
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-congestion.png"), full_page=False)
    assert errors == [], errors
    tip = page.inner_text("#congestion-tip")
    assert top["element"] in tip
    assert "probability of a violation" in tip
    assert "median scenario" in tip
    assert "mean size when violated" in tip
    assert "relieve at" in tip
    page.screenshot(path=str(ARTIFACTS / "ui-congestion.png"), full_page=False)
    assert violations == []
    page.context.close()
