"""The Flexibility page in a real browser: portfolios, envelope charts, the envelope map layer, the TSO-DSO interface.

Debian's Chromium through Playwright against `opendso run`'s process on the demo grid (the
fixtures of ``test_web_ui.py``), under the control room's real Content-Security-Policy. The DER
registry is filled through the REST API as an engineer with two aggregators, one of them named
with markup. The page (key ``f``) shows both aggregators' portfolios with the registry's
capacities; one envelope chart per connection point; the bounds of an interval chosen with the
keyboard, under both allocation rules, equal to those of ``/api/flex/envelopes`` (the allocation
itself is checked against pandapower in ``test_envelopes.py``); on the map, exactly the connection
points with capacity in the chosen direction coloured, a legend in kW/MW, and the layer giving way
to the hosting-capacity layer and back; the exchange and offer charts per grid-supply point; and
an operator's TSO request whose answer (status, accepted MW and reason per interval) is the one
the API gives for the same request. A viewer sees the page without the request form. Markup in
data stays text, and no CSP violation is reported. Screenshots: ``test-artifacts/ui-flex.png``
(portfolios and envelopes), ``ui-flex-tso.png`` (TSO-DSO and an answer), ``ui-flex-map.png``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from test_web_ui import ARTIFACTS, FAST, PASSWORD, _new_page, browser, room  # noqa: F401  (fixtures)

from opendso.runtime import ControlRoomProcess
from opendso.service import Security
from opendso.service.security import CSRF_HEADER

#: An aggregator name that would run script if the page built HTML from data.
HOSTILE = 'Volt<img src=x onerror="document.title=1">wise'
#: The interval (15-minute step from the issue time) whose bounds are compared and put on the map.
INTERVAL = 40


def _until(page: Any, expression: str, timeout_s: float = 30.0) -> Any:
    """Poll a JavaScript expression until it is truthy (page.evaluate works under the CSP)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {expression}")
        time.sleep(0.05)


def _login(browser: Any, room: ControlRoomProcess, user: str) -> tuple[Any, list[str], list[str]]:
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
    page.goto(f"{room.url}/")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    return page, errors, violations


def _bounds_are_the_apis(page: Any, http: httpx.Client, rule: str) -> None:
    """The interval table of the page holds the bounds ``/api/flex/envelopes`` gives for the same rule and times."""
    issued = page.evaluate("window.opendso.flex().issued")
    envelopes = http.get("/api/flex/envelopes", params={"rule": rule, "steps": 96, "issued": issued}).json()
    table = page.evaluate(
        "[...document.querySelectorAll('.flex-interval-rows tbody tr')].map(r => [r.dataset.aggregator,"
        " r.dataset.node, Number(r.cells[2].textContent.replace(/,/g, '')),"
        " Number(r.cells[4].textContent.replace(/,/g, ''))])"
    )
    expected = [
        [p["aggregator"], p["node"], p["intervals"][INTERVAL]["import_max_w"], p["intervals"][INTERVAL]["export_max_w"]]
        for e in envelopes["envelopes"]
        for p in e["points"]
    ]
    assert len(table) == len(expected) == 4
    for got, want in zip(table, expected, strict=True):
        assert got[:2] == want[:2]
        assert got[2] == pytest.approx(want[2] / 1e3, abs=0.05)  # kW to one decimal in the table
        assert got[3] == pytest.approx(want[3] / 1e3, abs=0.05)


def _http(room: ControlRoomProcess, user: str) -> tuple[httpx.Client, dict[str, str]]:
    assert room.url is not None
    http = httpx.Client(base_url=room.url, headers={"Origin": room.url}, timeout=60.0)
    me = http.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    assert me.status_code == 200, me.text
    return http, {CSRF_HEADER: me.json()["csrf_token"]}


@pytest.fixture(scope="module")
def flex_room(room: ControlRoomProcess) -> ControlRoomProcess:
    """The control room with two aggregators' DER at four connection points (MV and LV)."""
    Security(room.historian.engine, settings=FAST).add_user("erik", PASSWORD, ["engineer"], actor="admin")
    http, headers = _http(room, "erik")
    names = [str(n) for n in room.grid.names_of("node").tolist()]
    mv = sorted(n for n in names if n.startswith("MV2.101 Bus"))
    lv = sorted(n for n in names if n.startswith("LV5.220 Bus"))
    assets = [
        {"id": "FX-PV", "kind": "pv", "node": mv[3], "export_kw": 1500, "aggregator": "Flexa"},
        {"id": "FX-BAT", "kind": "battery", "node": mv[20], "export_kw": 1000, "import_kw": 1000, "storage_kwh": 2000,
         "aggregator": "Flexa"},
        {"id": "VW-EV", "kind": "ev_hub", "node": lv[5], "import_kw": 600, "aggregator": HOSTILE},
        {"id": "VW-PV", "kind": "pv", "node": mv[10], "export_kw": 800, "aggregator": HOSTILE},
    ]  # fmt: skip
    for body in assets:
        made = http.post("/api/der/assets", json={"name": body["id"], "owner": "Owner Ltd", **body}, headers=headers)
        assert made.status_code == 201, made.text
    http.close()
    return room


def test_the_flexibility_page_shows_portfolios_envelopes_map_and_tso_requests(
    browser: Any, flex_room: ControlRoomProcess
) -> None:
    http, headers = _http(flex_room, "olga")
    books = {b["aggregator"]: b for b in http.get("/api/flex/portfolios").json()["aggregators"]}
    assert sorted(books) == sorted(["Flexa", HOSTILE])
    page, errors, violations = _login(browser, flex_room, "olga")
    try:
        page.keyboard.press("f")
        _until(page, "!document.getElementById('page-flex').hidden")
        _until(page, "document.getElementById('page-flex').dataset.state === 'ready'", 60.0)
        # 1. both aggregators, as text (the hostile name runs no script), with the registry's capacities
        shown = page.evaluate("[...document.querySelectorAll('.flex-book .flex-aggregator')].map(e => e.textContent)")
        assert shown == sorted(books)
        assert page.evaluate("document.querySelectorAll('#page-flex img').length") == 0
        for name, book in books.items():
            card = page.locator(".flex-book").filter(has_text=name).first
            totals = card.locator(".flex-totals").inner_text()
            assert f"{book['export_kw']:,.0f} kW" in totals, totals
            assert f"{book['import_kw']:,.0f} kW" in totals, totals
            rows = card.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.node)")
            assert rows == [p["name"] for p in book["points"]]
        # 2. one envelope chart per connection point, drawn by uPlot
        _until(page, "document.querySelectorAll('#flex-envelopes .flex-chart .uplot canvas').length >= 4")
        assert page.evaluate("window.opendso.flex().charts") == 4
        # the interval's bounds are the API's, chosen with the keyboard, under both rules
        page.focus("#flex-interval")
        page.keyboard.press("Home")
        for _ in range(INTERVAL):
            page.keyboard.press("ArrowRight")
        assert page.evaluate("window.opendso.flex().map.interval") == INTERVAL
        _bounds_are_the_apis(page, http, "proportional")
        page.select_option("#flex-rule", "equal")
        _until(page, "window.opendso.flex().rule === 'equal' && window.opendso.flex().state === 'ready'", 60.0)
        _bounds_are_the_apis(page, http, "equal")
        page.select_option("#flex-rule", "proportional")
        _until(page, "window.opendso.flex().rule === 'proportional' && window.opendso.flex().state === 'ready'", 60.0)
        _until(page, "window.opendso.flex().charts === 4")
        # hovering a chart names the interval's binding element (or "—" where none binds)
        chart = page.locator("#flex-envelopes .flex-chart .u-over").first
        chart.hover(position={"x": 120, "y": 60})
        assert "binds:" in page.locator("#flex-envelopes .flex-readout").first.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("document.getElementById('page-flex').scrollTop = 0")
        page.screenshot(path=str(ARTIFACTS / "ui-flex.png"), full_page=False)
        # 4. the TSO-DSO charts: one card per grid-supply point, two charts each, and the CSV link
        _until(page, "Number(document.getElementById('flex-tso').dataset.drawn || 0) >= 2")
        link = page.evaluate("document.getElementById('flex-tso-csv').getAttribute('href')")
        assert link.startswith("/api/tso/day-ahead.csv?issued=")
        table = http.get(link)
        assert table.status_code == 200, table.text
        assert table.headers["content-type"].startswith("text/csv")
        # an operator's request: the answer shown is the API's status and reasons
        assert page.evaluate("document.getElementById('flex-tso-form').hidden") is False
        # more than is offered upward (the registry's upward capacity behind the GSP is 1.6 MW): partly met at most
        page.fill("#flex-req-mw", "2.5")
        page.select_option("#flex-req-direction", "up")
        options = page.evaluate("[...document.querySelectorAll('#flex-req-from option')].map(o => o.value)")
        assert len(options) >= 6
        page.locator("#flex-req-from").select_option(index=2)
        page.locator("#flex-req-to").select_option(index=5)
        page.click("#flex-req-send")
        _until(page, "document.querySelector('#flex-tso-answer .flex-answer') !== null", 60.0)
        status = page.evaluate("document.querySelector('#flex-tso-answer .flex-answer').dataset.status")
        assert status in {"partial", "refused"}
        shown_rows = page.evaluate(
            "[...document.querySelectorAll('#flex-tso-answer tbody tr')].map(r => [r.cells[1].textContent,"
            " r.cells[2].textContent])"
        )
        # the same request straight to the API gets the same answer, interval by interval
        gsp = page.evaluate("document.getElementById('flex-req-gsp').value")
        body = {"gsp": gsp, "direction": "up", "mw": 2.5, "intervals": options[2:6], "all_or_none": False}
        direct = http.post("/api/tso/requests", json=body, headers=headers)
        assert direct.status_code == 200, direct.text
        assert status == direct.json()["status"]
        assert shown_rows == [
            [f"{r['accepted_mw']:,.3f}".rstrip("0").rstrip("."), r["reason"] or "—"] for r in direct.json()["intervals"]
        ]
        assert all(reason != "—" for _, reason in shown_rows), shown_rows  # each interval says why it fell short
        page.evaluate("document.getElementById('flex-tso-answer').scrollIntoView({block: 'end'})")
        page.screenshot(path=str(ARTIFACTS / "ui-flex-tso.png"), full_page=False)
        # 3. the map layer: every connection point coloured, no other node; a legend in kW/MW
        page.click("#flex-map-toggle")
        _until(page, "!document.getElementById('page-network').hidden")
        # export: the three points with export capacity (the EV hub has none; it stays grey), then import: two
        _until(page, "window.opendso.flex().map.coloured === 3")
        assert not page.evaluate("document.getElementById('flex-map-panel').hidden")
        legend = page.evaluate("[...document.querySelectorAll('#flex-map-scale span')].map(s => s.textContent)")
        assert legend[0] == "0 kW", legend
        assert legend[-1] == "1.5 MW", legend  # the largest export capacity at a point: Flexa's 1,500 kW PV
        page.screenshot(path=str(ARTIFACTS / "ui-flex-map.png"), full_page=False)
        page.evaluate(
            "(() => { const s = document.getElementById('flex-map-direction'); s.value = 'import';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        _until(page, "window.opendso.flex().map.coloured === 2")
        page.click("#flex-map-off")
        _until(page, "window.opendso.flex().map.on === false && window.opendso.flex().map.coloured === 0")
        # the hosting-capacity layer (key h) and this one share the map's node layer: switching one on hides the other
        page.keyboard.press("f")
        page.click("#flex-map-toggle")
        _until(page, "window.opendso.flex().map.on && !document.getElementById('page-network').hidden")
        page.keyboard.press("h")
        _until(page, "window.opendso.flex().map.on === false && window.opendso.hosting().on === true")
        assert page.evaluate("document.getElementById('flex-map-panel').hidden") is True
        page.keyboard.press("f")
        page.click("#flex-map-toggle")
        _until(page, "window.opendso.flex().map.coloured === 2 && window.opendso.hosting().on === false")
        assert page.evaluate("document.querySelectorAll('#flex-map-panel img').length") == 0
        assert page.evaluate("document.title") != "1"
    finally:
        page.context.close()
        http.close()
    assert not errors, errors
    assert not violations, violations


def test_a_viewer_sees_the_page_without_the_request_form(browser: Any, flex_room: ControlRoomProcess) -> None:
    page, errors, violations = _login(browser, flex_room, "victor")
    try:
        page.click("#tab-flex")
        _until(page, "document.getElementById('page-flex').dataset.state === 'ready'", 60.0)
        assert page.evaluate("document.querySelectorAll('.flex-book').length") == 2
        assert page.evaluate("document.getElementById('flex-tso-form').hidden") is True
        assert page.evaluate("document.getElementById('flex-tso-csv').hidden") is False
        for reserved in ("flex-timeline", "flex-dr", "flex-settlement"):
            assert page.evaluate(f"document.getElementById('{reserved}') !== null")
    finally:
        page.context.close()
    assert not errors, errors
    assert not violations, violations
