"""The ANM panel of the DER page in a real browser, on `opendso run` with ANM relieving a PV peak.

Debian's Chromium through Playwright (the fixtures of ``test_web_ui.py``), under the control
room's real Content-Security-Policy, against a control room on the grid of ``test_anm`` started at
the PV peak with ``anm=True``: the DER page (key ``d``) shows ANM running, the cable's constraint
and the newest PV (last-in-first-off) limited by ANM with its curtailed energy growing. Screenshot:
``test-artifacts/ui-anm.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_anm import CABLE, anm_grid, make_registry
from test_web_ui import ARTIFACTS, FAST, PASSWORD, _new_page, browser  # noqa: F401  (fixtures)
from test_web_ui_der import _until

from opendso.der import AccessPrinciple
from opendso.operations.fault_response import FlisrMode
from opendso.runtime import ControlRoomProcess
from opendso.service import ServiceSettings
from opendso.store import Historian
from opendso.store.integrity import KEY_FILE
from opendso.telemetry.scenario import Scenario


@pytest.fixture(scope="module")
def anm_room(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("anm-room")
    grid = anm_grid()
    db = Historian.open(f"sqlite:///{folder / 'opendso.db'}", key_path=folder / KEY_FILE)
    make_registry(grid, db, AccessPrinciple.LIFO)
    db.close()
    process = ControlRoomProcess(
        grid,
        folder,
        scenario=Scenario(),
        start_step=2,
        port=0,
        period_s=0.5,
        admin_password=PASSWORD,
        flisr=FlisrMode.OFF,
        anm=True,
        service_settings=ServiceSettings(security=FAST),
    )
    with process.in_thread(timeout_s=60.0):
        yield process


def test_the_der_page_shows_anm_holding_the_newest_pv(browser: Any, anm_room: ControlRoomProcess) -> None:
    page, errors = _new_page(browser, strict_csp=True)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{anm_room.url}/")
    page.fill("#login-user", "admin")
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    _until(page, "window.opendso && window.opendso.stats().nodesDrawn > 0")
    page.keyboard.press("d")
    _until(page, "document.querySelector('#anm-summary').textContent.startsWith('running')")
    row = f"tr.anm-constraint[data-element='{CABLE}']"
    _until(page, f'document.querySelector("{row}") !== null', timeout_s=30.0)
    _until(page, "document.querySelector(\"tr.anm-der[data-asset='A3']\")?.classList.contains('limited')", 30.0)
    cells = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('tr.anm-der')].map(
            (r) => [r.dataset.asset, [...r.querySelectorAll('td')].map((c) => c.textContent)]))"""
    )
    assert cells["A3"][3] == "last in, first off"
    assert cells["A3"][7] == "anm"  # the limit in force is ANM's
    assert cells["A1"][5] == "—"  # the most senior is not limited
    # the curtailed energy grows as the panel refreshes
    _until(page, "Number(document.querySelector(\"tr.anm-der[data-asset='A3'] .anm-curtailed\").textContent) > 0", 30.0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / "ui-anm.png"), full_page=True)
    assert errors == []
    assert violations == []
    page.context.close()
