"""The DER registry page in a real browser: the assets, the connection queue, filters, an asset's detail, moves.

Debian's Chromium through Playwright against `opendso run`'s process on the demo grid (the
fixtures of ``test_web_ui.py``), under the control room's real Content-Security-Policy. The
registry is filled through the REST API as an engineer; the page (key ``d``) lists the assets and
the queue in received order, filters them by kind and feeder, shows an asset's agreement and
request history, builds text from data without running it (a hostile asset name), and lets an
engineer move a request along the state machine. A viewer sees the same page without the
buttons. Screenshot: ``test-artifacts/ui-der.png``.
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

#: A name that would run script if the page built HTML from data.
HOSTILE = 'Solar <img src=x onerror="document.title=1">'


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


def _login(browser: Any, room: ControlRoomProcess, user: str) -> tuple[Any, list[str], list[str]]:
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("dialog", lambda dialog: dialog.accept("customer withdrew"))
    page.goto(f"{room.url}/")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    return page, errors, violations


@pytest.fixture(scope="module")
def der_room(room: ControlRoomProcess) -> ControlRoomProcess:
    """The control room with an engineer and a registry of six assets, four of them queued."""
    Security(room.historian.engine, settings=FAST).add_user("edna", PASSWORD, ["engineer"], actor="admin")
    assert room.url is not None
    http = httpx.Client(base_url=room.url, headers={"Origin": room.url}, timeout=30.0)
    me = http.post("/api/auth/login", json={"username": "edna", "password": PASSWORD})
    headers = {CSRF_HEADER: me.json()["csrf_token"]}
    nodes = sorted(str(n) for n in room.grid.names_of("node").tolist() if str(n).startswith("MV2.101 Bus"))
    lv = sorted(str(n) for n in room.grid.names_of("node").tolist() if str(n).startswith("LV5.220 Bus"))
    flexible = {"kind": "flexible", "principle": "lifo", "curtailment_cap_pct": 5, "export_limit_kw": 300}
    assets = [
        {"id": "PV-01", "name": HOSTILE, "kind": "pv", "node": nodes[3], "export_kw": 1500, "agreement": flexible},
        {"id": "WT-01", "name": "Wind farm Hill", "kind": "wind", "node": nodes[10], "export_kw": 3000},
        {
            "id": "BAT-01",
            "name": "Grid battery",
            "kind": "battery",
            "node": nodes[20],
            "export_kw": 1000,
            "import_kw": 1000,
            "storage_kwh": 2000,
            "agreement": {
                "kind": "flexible",
                "principle": "pro_rata",
                "curtailment_cap_pct": 3,
                "export_limit_kw": 400,
            },
        },
        {"id": "EV-01", "name": "Depot chargers", "kind": "ev_hub", "node": lv[5], "import_kw": 600},
        {"id": "HP-01", "name": "Heat pumps Elm St", "kind": "heat_pumps", "node": lv[9], "import_kw": 250},
        {
            "id": "DC-01",
            "name": "Data centre North",
            "kind": "flexible_load",
            "node": nodes[30],
            "import_kw": 8000,
            "control": {"protocol": "openadr", "address": "ven-dc-north"},
        },
    ]
    for body in assets:
        made = http.post("/api/der/assets", json={"owner": "Owner Ltd", **body}, headers=headers)
        assert made.status_code == 201, made.text
    for rid, aid, at in (
        ("CR-104", "DC-01", "2026-04-01T08:00Z"),
        ("CR-101", "PV-01", "2026-01-10T08:00Z"),
        ("CR-103", "BAT-01", "2026-03-01T08:00Z"),
        ("CR-102", "WT-01", "2026-02-01T08:00Z"),
    ):
        made = http.post("/api/der/requests", json={"id": rid, "asset_id": aid, "received_at": at}, headers=headers)
        assert made.status_code == 201, made.text
    return room


def test_the_registry_page_lists_filters_and_moves(browser: Any, der_room: ControlRoomProcess) -> None:
    page, errors, violations = _login(browser, der_room, "edna")
    try:
        page.keyboard.press("d")
        _until(page, "document.querySelectorAll('#der-asset-rows tr.der-row').length === 6")
        queue = page.evaluate("[...document.querySelectorAll('#der-queue-rows tr')].map(r => r.dataset.request)")
        assert queue == ["CR-101", "CR-102", "CR-103", "CR-104"]  # received order, not entry order
        # the hostile name is text, not markup
        assert page.evaluate("document.querySelector('[data-asset=\"PV-01\"] td:nth-child(2)').textContent") == HOSTILE
        assert page.evaluate("document.querySelectorAll('#der-assets img').length") == 0
        # filters
        page.select_option("#der-kind", "battery")
        _until(page, "document.querySelectorAll('#der-asset-rows tr.der-row').length === 1")
        assert page.evaluate("[...document.querySelectorAll('#der-queue-rows tr')].map(r => r.dataset.request)") == [
            "CR-103"
        ]
        page.select_option("#der-kind", "")
        feeders = page.evaluate("[...document.querySelectorAll('#der-feeder option')].map(o => o.value).filter(v => v)")
        assert len(feeders) >= 2
        page.select_option("#der-feeder", feeders[0])
        shown = page.evaluate("document.querySelectorAll('#der-asset-rows tr.der-row').length")
        assert shown in range(1, 6)
        page.select_option("#der-feeder", "")
        # an asset's detail: agreement and requests
        page.click("[data-asset='PV-01']")
        _until(page, "document.querySelector('#der-detail .der-request[data-request=\"CR-101\"]') !== null")
        detail = page.evaluate("document.getElementById('der-detail').textContent")
        assert "flexible · last in, first off · cap 5 % · limit 300 kW" in detail
        assert "queue position 1" in detail
        # the engineer moves CR-101 on: studied
        page.click("#der-queue-rows tr[data-request='CR-101'] button[data-move='studied']")
        _until(
            page, "document.querySelector('#der-queue-rows tr[data-request=\"CR-101\"]')?.dataset.status === 'studied'"
        )
        # withdrawing asks why (the dialog answers "customer withdrew") and takes it out of the queue
        page.click("#der-queue-rows tr[data-request='CR-102'] button[data-move='withdrawn']")
        _until(page, "document.querySelector('#der-queue-rows tr[data-request=\"CR-102\"]') === null")
        assert page.evaluate(
            "[...document.querySelectorAll('#der-queue-rows tr td:first-child')].map(t => t.textContent)"
        ) == [
            "1",
            "2",
            "3",
        ]
        page.click("[data-asset='BAT-01']")
        _until(page, "document.querySelector('#der-detail .der-request[data-request=\"CR-103\"]') !== null")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-der.png"), full_page=False)
        assert page.evaluate("document.title") != "1"
    finally:
        page.context.close()
    assert not errors, errors
    assert not violations, violations


def test_a_viewer_reads_the_registry_without_buttons(browser: Any, der_room: ControlRoomProcess) -> None:
    page, errors, violations = _login(browser, der_room, "victor")
    try:
        page.click("#tab-der")
        _until(page, "document.querySelectorAll('#der-asset-rows tr.der-row').length === 6")
        assert page.evaluate("document.querySelectorAll('#der-queue-rows button[data-move]').length") == 0
        assert page.evaluate("document.getElementById('der-new').hidden") is True
        page.click("[data-asset='DC-01']")
        _until(page, "document.querySelector('#der-detail .der-facts') !== null")
        assert page.evaluate("document.querySelectorAll('#der-detail form').length") == 0
        assert "openadr · ven-dc-north" in page.evaluate("document.getElementById('der-detail').textContent")
    finally:
        page.context.close()
    assert not errors, errors
    assert not violations, violations
