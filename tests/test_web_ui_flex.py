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

The flexibility timeline runs on a control room of its own (SimBench 1-LV-rural1 with its PV tripled,
congested at midday, and the two aggregators of ``test_flex_rounds_api.py``): an operator runs a
day-ahead round from the page, and the timeline draws one row per constrained element, requested
congestion point, offer option and order of the round the API holds (the round itself is checked
against pandapower in ``test_flex_rounds_api.py``); a viewer sees it without the button.
Screenshot: ``ui-flex-timeline.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import UNLIMITED_LOGINS
from test_flex_rounds_api import CODE as ROUND_CODE
from test_flex_rounds_api import ISSUED as ROUND_ISSUED
from test_flex_rounds_api import add_assets, congested
from test_web_ui import ARTIFACTS, FAST, PASSWORD, USERS, _new_page, browser, room  # noqa: F401  (fixtures)

from opendso.der import DerRegistry
from opendso.grid import Grid
from opendso.runtime import ControlRoomProcess
from opendso.service import Security, ServiceSettings
from opendso.service.routes.flexround import close_market
from opendso.service.security import CSRF_HEADER
from opendso.store.der import DerStore

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
        # demand response is off in this control room (no OPENDSO_OPENADR_* files): the panel says so and how
        dr_text = _until(page, "document.getElementById('flex-dr').textContent")
        assert "Demand response is off" in dr_text
        assert "OPENDSO_OPENADR_CERT" in dr_text
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


def _with_settlement(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as if delivered and settled (display only): each order 90 % delivered, penalty 10 % of its price."""
    offers = {(o["id"], x["reference"]): x for o in record["offers"] for x in o["options"]}
    delivery, orders = [], []
    for o in record["orders"]:
        option = offers[(o["offer_id"], o["option"])]
        intervals = [
            {"interval": option["first"] + j, "time": record["time"][option["first"] + j], "ordered_w": w,
             "baseline_w": -w, "measured_w": -0.1 * w, "delivered_w": 0.9 * w, "delivered_low_w": 0.85 * w,
             "delivered_high_w": 0.95 * w}
            for j, w in enumerate(option["power_w"])
        ]  # fmt: skip
        delivery.append(
            {**{k: o[k] for k in ("order_reference", "aggregator", "congestion_point")}, "intervals": intervals}
        )
        orders.append({"OrderReference": o["order_reference"], "disposition": "Accepted", "dispute_reason": None})
    reports = []
    for agr in sorted({o["aggregator"] for o in record["orders"]}):
        price = sum(o["price"] for o in record["orders"] if o["aggregator"] == agr)
        n = sum(1 for o in record["orders"] if o["aggregator"] == agr)
        reports.append(
            {"aggregator": agr, "currency": "EUR", "orders": n, "full_orders": 0, "ordered_mwh": 1.0,
             "delivered_mwh": 0.9, "not_delivered_mwh": 0.1, "delivered_share": 0.9, "price": f"{price:.2f}",
             "penalty": f"{0.1 * price:.2f}", "net_settlement": f"{0.9 * price:.2f}"}
        )  # fmt: skip
    return {**record, "delivery": delivery, "settlement": {"orders": orders, "reports": reports, "messages": []}}


# -- the flexibility timeline: a day-ahead round run from the page ------------------------------------------
@pytest.fixture(scope="module")
def round_room(
    grid_of: Callable[[str], Grid], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlRoomProcess]:
    """A control room on SimBench 1-LV-rural1 with its PV tripled (congested at midday) and two aggregators' PV."""
    grid = congested(grid_of(ROUND_CODE))
    process = ControlRoomProcess(
        grid,
        tmp_path_factory.mktemp("flex-round-room"),
        port=0,
        period_s=0.5,
        admin_password="first admin password",
        service_settings=ServiceSettings(security=FAST, login=UNLIMITED_LOGINS),
    )
    security = Security(process.historian.engine, settings=FAST)
    for user, roles in USERS.items():
        security.add_user(user, PASSWORD, list(roles), actor="admin")
    add_assets(DerRegistry(DerStore(process.historian.engine), grid))
    try:
        with process.in_thread():
            yield process
    finally:
        close_market(process.app)


def test_an_operator_runs_a_round_from_the_page_and_the_timeline_draws_it(
    browser: Any, round_room: ControlRoomProcess
) -> None:
    page, errors, violations = _login(browser, round_room, "olga")
    try:
        page.keyboard.press("f")
        _until(page, "document.getElementById('page-flex').dataset.state === 'ready'", 60.0)
        _until(page, "window.opendso.flex().timeline.state === 'empty'")
        assert "No flexibility round yet" in page.locator("#flex-round-summary").inner_text()
        assert page.evaluate("document.getElementById('flex-round-form').hidden") is False
        page.fill("#flex-round-issued", ROUND_ISSUED)
        page.click("#flex-round-run")
        _until(
            page,
            "document.getElementById('flex-round-run').disabled === false && "
            "['ready', 'error'].includes(window.opendso.flex().timeline.state)",
            120.0,
        )
        stats = page.evaluate("window.opendso.flex().timeline")
        assert stats["state"] == "ready", page.locator("#flex-round-status").inner_text()
        # the page draws what the API holds: a row per constrained element, requested point, offer option, order
        http, _ = _http(round_room, "victor")
        latest: dict[str, Any] = http.get("/api/flex/rounds/latest").json()
        http.close()
        elements = {n["element"] for n in latest["needs"]}
        assert stats["rows"]["need"] == len(elements) >= 1
        assert stats["rows"]["request"] == len({r["congestion_point"] for r in latest["requests"]}) >= 1
        assert stats["rows"]["offer"] == sum(len(o["options"]) for o in latest["offers"]) >= 2
        assert stats["rows"]["order"] == len(latest["orders"]) >= 1
        bought = page.evaluate("document.querySelectorAll('.flex-tl-offer[data-status=bought]').length")
        assert bought == sum(1 for o in latest["offers"] for x in o["options"] if x["status"] == "bought")
        # the tooltip of a need's cell names the element and its probability; the summary the cost
        tip = page.evaluate("document.querySelector('.flex-tl-need .flex-tl-cell title').textContent")
        assert next(iter(elements)) in tip
        assert "probability" in tip
        summary = page.locator("#flex-round-summary").inner_text()
        assert f"{len(latest['needs'])} need(s)" in summary
        assert "EUR" in summary
        assert "Settlement follows delivery" in page.locator("#flex-settlement").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("document.getElementById('flex-timeline').scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ARTIFACTS / "ui-flex-timeline.png"), full_page=False)
    finally:
        page.context.close()
    viewer, verrors, vviolations = _login(browser, round_room, "victor")
    try:
        viewer.click("#tab-flex")
        _until(viewer, "window.opendso.flex().timeline.state === 'ready'", 60.0)
        assert viewer.evaluate("document.getElementById('flex-round-form').hidden") is True
        assert viewer.evaluate("window.opendso.flex().timeline.rows.offer") >= 2
    finally:
        viewer.context.close()
    # a settled round (this route does not settle; the desk's settlement is tested in test_flex_round.py): the page
    # draws the table per aggregator and one ordered-vs-delivered chart per order from the round's JSON
    settled = _with_settlement(latest)
    page, serrors, sviolations = _login(browser, round_room, "victor")
    try:
        page.route(
            "**/api/flex/rounds/latest",
            lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(settled)),
        )
        page.click("#tab-flex")
        _until(page, "window.opendso.flex().timeline.settlementCharts === " + str(len(settled["delivery"])), 60.0)
        rows = page.evaluate(
            "[...document.querySelectorAll('.flex-settlement-table tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        assert len(rows) == len(settled["settlement"]["reports"])
        for row, report in zip(rows, settled["settlement"]["reports"], strict=True):
            assert row[5] == f"{float(report['price']):,.2f} EUR"
            assert row[6] == f"{float(report['penalty']):,.2f} EUR"
            assert row[7] == f"{float(report['net_settlement']):,.2f} EUR"
            assert row[4] == f"{100 * report['delivered_share']:.1f} %"
        assert page.evaluate("document.querySelectorAll('#flex-settlement .uplot canvas').length") >= len(rows)
        page.evaluate("document.getElementById('flex-settlement').scrollIntoView({block: 'end'})")
        page.screenshot(path=str(ARTIFACTS / "ui-flex-settlement.png"), full_page=False)
    finally:
        page.context.close()
    assert not serrors, serrors
    assert not sviolations, sviolations
    assert not errors + verrors, errors + verrors
    assert not violations + vviolations, violations + vviolations
