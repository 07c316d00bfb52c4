"""The hosting-capacity layer of the network map in a real browser: run a study, coloured nodes, legend, GeoJSON.

Debian's Chromium through Playwright against `opendso run`'s process on the demo grid (the
fixtures of ``test_web_ui.py``), under the control room's real Content-Security-Policy. An
engineer turns the layer on (key ``h``), runs a study of the first steps with "Run study" and
watches its progress; the nodes take the colours of the scale, the legend shows it in MW, a
node's tooltip and detail give its binding limits with the step's time, and the GeoJSON link
downloads a valid RFC 7946 document. A viewer sees the same layer without the buttons. What the
page shows is compared with what the API serves (the calculation is checked against brute force in
``test_hosting_capacity.py``). Screenshot: ``test-artifacts/ui-hosting-map.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import geojson
import httpx
import pytest
from test_web_ui import ARTIFACTS, FAST, PASSWORD, _new_page, browser, room  # noqa: F401  (fixtures)

from opendso.runtime import ControlRoomProcess
from opendso.service import Security

STEPS = 4
#: The study of the demo grid's 225 nodes over 4 steps takes a few seconds; margin for 2 busy cores.
STUDY_TIMEOUT_S = 180.0


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
    page.goto(f"{room.url}/")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    return page, errors, violations


@pytest.fixture(scope="module")
def hc_room(room: ControlRoomProcess) -> Iterator[ControlRoomProcess]:
    """The control room with an engineer; a study left running is cancelled and waited for at the end."""
    Security(room.historian.engine, settings=FAST).add_user("hedda", PASSWORD, ["engineer"], actor="admin")
    yield room
    studies = getattr(room.app.state, "hosting", None)
    if studies is not None:
        if studies.status()["status"] == "running":
            studies.cancel(by="teardown")
        assert studies.wait(STUDY_TIMEOUT_S)


def _served(room: ControlRoomProcess, *, start_as: str | None = None) -> dict[str, Any]:
    """The API's document, read as the viewer; with ``start_as``, that user's study of 2 steps first, waited for."""
    assert room.url is not None
    with httpx.Client(base_url=room.url, timeout=30.0) as http:
        if start_as is not None:
            token = http.post("/api/auth/token", data={"username": start_as, "password": PASSWORD})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            started = http.post("/api/hosting-capacity", json={"steps": 2}, headers=headers)
            assert started.status_code == 202, started.text
        token = http.post("/api/auth/token", data={"username": "victor", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while True:
            body: dict[str, Any] = http.get("/api/hosting-capacity", headers=headers).json()
            if body["status"] != "running":
                return body
            assert time.monotonic() < deadline, f"still running after {STUDY_TIMEOUT_S} s"
            time.sleep(0.1)


def _palette_pixels(page: Any) -> int:
    """Pixels of the network canvas painted exactly in one of the layer's colours."""
    return int(
        page.evaluate(
            """() => {
            const wanted = new Set(window.opendso.hosting().palette.map((c) => c.replace(/\\s/g, "")));
            const c = document.getElementById('network-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (wanted.has(`rgb(${d[i]},${d[i+1]},${d[i+2]})`)) n++;
            return n;
        }"""
        )
    )


def test_an_engineer_runs_a_study_and_the_map_shows_it(
    browser: Any, hc_room: ControlRoomProcess, tmp_path: Any
) -> None:
    page, errors, violations = _login(browser, hc_room, "hedda")
    try:
        assert page.evaluate("document.getElementById('hc-panel').hidden") is True
        before = _palette_pixels(page)
        page.focus("#network-canvas")
        page.keyboard.press("h")
        _until(page, "!document.getElementById('hc-panel').hidden && window.opendso.hosting().status !== null")
        assert page.evaluate("document.getElementById('hc-toggle').getAttribute('aria-pressed')") == "true"
        if _served(hc_room)["result"] is None:
            assert "No study yet: run one." in page.inner_text("#hc-status")
        assert page.is_visible("#hc-run")
        assert page.is_hidden("#hc-geojson")
        page.fill("#hc-steps", str(STEPS))
        page.click("#hc-run")
        # progress while it runs, then the result
        _until(page, "window.opendso.hosting().status === 'running'", 30.0)
        assert page.is_visible("#hc-progress")
        assert page.is_disabled("#hc-run")
        _until(page, "window.opendso.hosting().status === 'done'", STUDY_TIMEOUT_S)
        assert page.is_hidden("#hc-progress")
        served = _served(hc_room)
        nodes = served["result"]["nodes"]
        assert served["result"]["steps"] == STEPS
        assert served["run"]["by"] == "hedda"
        stats = page.evaluate("window.opendso.hosting()")
        assert stats["studied"] == stats["coloured"] == len(nodes) > 100
        assert stats["bins"] >= 4  # the scale spreads the nodes over several colours
        # the nodes are painted in the layer's colours, and the legend gives the scale in MW
        assert _palette_pixels(page) > before + 5 * len(nodes)
        legend = stats["legend"]
        assert len(legend) >= 2
        assert all(text.endswith(("MW", "kW")) for text in legend)
        assert "generation" in page.inner_text("#hc-legend-title")
        assert f"{len(nodes)} nodes · {STEPS} steps" in page.inner_text("#hc-status")

        # a node's tooltip and detail: the served numbers and binding limits with the step's time
        candidates = sorted((n for n in nodes if n["generation_limit"]), key=lambda n: -n["generation_mw"])
        box = page.locator("#network-canvas").bounding_box()
        for node in candidates:  # the first on view whose spot is not taken by a switch beside it or a panel
            x, y = page.evaluate(f"window.opendso.screenOf({node['node_id']})")
            x, y = box["x"] + x, box["y"] + y
            if page.evaluate(f"document.elementFromPoint({x}, {y})?.id") != "network-canvas":
                continue
            page.mouse.move(x, y)
            _until(page, "!document.getElementById('hover-tip').hidden")
            tip = page.inner_text("#hover-tip")
            if tip.startswith(f"node {node['node']} "):
                break
        else:
            raise AssertionError("no studied node could be hovered")
        limit = node["generation_limit"]
        assert "HC generation" in tip, tip
        assert f"{limit['element']} · step {limit['step']}" in tip, tip
        page.evaluate(f"window.opendso.selectElement({node['node_id']})")
        _until(page, f"document.getElementById('hc-detail').dataset.node === {json.dumps(node['node'])}")
        detail = page.inner_text("#hc-detail")
        assert node["node"] in detail
        assert f"{limit['kind']} · {limit['element']} · step {limit['step']} ({limit['time'][:10]}" in detail
        shown_mw = page.inner_text("#hc-detail .hc-generation")
        value, unit = shown_mw.split()
        assert (
            abs(float(value) * (1e-3 if unit == "kW" else 1.0) - node["generation_mw"]) <= 0.005 * node["generation_mw"]
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-hosting-map.png"), full_page=False)
        # the load measure recolours and relabels
        page.select_option("#hc-measure", "load_mw")
        _until(page, "document.getElementById('hc-legend-title').textContent.includes('load')")
        assert "Load" in page.inner_text("#hc-detail")
        page.select_option("#hc-measure", "generation_mw")

        # the GeoJSON download: valid RFC 7946, one Point per studied node
        assert page.is_visible("#hc-geojson")
        with page.expect_download() as download:
            page.click("#hc-geojson")
        saved = tmp_path / "hc.geojson"
        download.value.save_as(saved)
        parsed = geojson.loads(saved.read_text())
        assert parsed.is_valid, parsed.errors()
        assert {f["properties"]["node"] for f in parsed["features"]} == {n["node"] for n in nodes}

        # the layer turns off: the voltage colours come back
        page.click("#hc-toggle")
        _until(page, "document.getElementById('hc-panel').hidden")
        page.wait_for_timeout(200)
        assert _palette_pixels(page) < before + 5 * len(nodes)
    finally:
        page.context.close()
    assert not errors, errors
    assert not violations, violations


def test_a_viewer_sees_the_layer_without_the_buttons(browser: Any, hc_room: ControlRoomProcess) -> None:
    if _served(hc_room)["result"] is None:  # the engineer's test did not run first: a study through the API
        assert _served(hc_room, start_as="hedda")["status"] == "done"
    page, errors, violations = _login(browser, hc_room, "victor")
    try:
        page.click("#hc-toggle")
        _until(page, "window.opendso.hosting().status === 'done' && window.opendso.hosting().coloured > 100")
        for hidden in ("#hc-run", "#hc-steps-label", "#hc-cancel"):
            assert page.is_hidden(hidden), hidden
        assert page.is_visible("#hc-geojson")
    finally:
        page.context.close()
    assert not errors, errors
    assert not violations, violations
