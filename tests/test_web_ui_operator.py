"""Browser tests of the operator essentials (issue 8, items 19, 20, 21, 24) against `opendso run`'s process.

The fixtures are test_web_ui.py's (Playwright driving Debian's Chromium, the whole control room
on an ephemeral port, one process for this module). The simulated clock is driven: paused and
jumped to the scripted breaker trip, so the times to expect are known exactly.

- 19: the status bar, the alarm list, the event log and the trend all show the simulated clock;
  the wall-clock time is in the event log's detail column and in tooltips.
- 20: the element panel shows readable labels with units scaled sensibly, and no raw field names.
- 21: several series in one trend (points of two elements), one axis per unit, a chosen time
  range (preset and custom), and a CSV export of exactly what is shown.
- 24: the page shortcuts keep working after a checkbox was clicked (not while typing text).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_web_ui import _shot, browser, page, room

from opendso.runtime import ControlRoomProcess

__all__ = ["browser", "page", "room"]  # the fixtures, imported for this module

DAY = "2016-06-21"


def _element_id(room: ControlRoomProcess, name: str) -> int:
    view = room.room.grid_view()
    for kind in ("nodes", "branches", "switches"):
        for item in view[kind]:
            if item["name"] == name:
                return int(item["id"])
    raise AssertionError(f"no element {name!r}")


def _open(page: Any, element_id: int) -> None:
    page.evaluate(f"window.opendso.selectElement({element_id})")
    page.wait_for_function(f"document.getElementById('el-kind').textContent.includes('id {element_id}')")
    page.wait_for_function("![...document.querySelectorAll('#el-points .pv')].some(e => e.textContent === '…')")


def _trip_paused(room: ControlRoomProcess) -> float:
    """Pause the clock and jump to the scripted breaker trip (once per module); return its simulated seconds."""
    sim = room.simulator
    trip = next(e for e in sim.scenario.events if e.kind == "breaker_trip")
    room.call(sim.pause)
    if room.call(lambda: sim.elapsed_s) < trip.at_s:
        room.call(sim.jump_to, trip.at_s)
    return trip.at_s


def test_status_bar_alarms_log_and_trend_show_the_simulated_clock(page: Any, room: ControlRoomProcess) -> None:
    at_s = _trip_paused(room)
    trip_time = (room.simulator.start_time + timedelta(seconds=at_s)).strftime("%Y-%m-%d %H:%M:%S")
    assert trip_time == f"{DAY} 15:00:00"
    # paused at the trip: the status bar shows exactly that simulated time, and says it is paused
    page.wait_for_function("document.getElementById('st-speed').textContent === 'PAUSED'", timeout=15_000)
    page.wait_for_function(f"document.getElementById('st-clock').textContent === '{trip_time}'", timeout=15_000)
    assert page.inner_text("#st-clock-label") == "Simulated clock"
    assert "wall clock" in (page.get_attribute("#st-clock", "title") or "")

    # the breaker's alarm was raised (and stored) at a wall-clock instant; the list shows its simulated time
    breaker = next(e.switch for e in room.simulator.scenario.events if e.kind == "breaker_trip")
    key = f"switch:{breaker}"
    page.wait_for_function(f"window.opendso.alarms().some(a => a.key === {key!r})", timeout=15_000)
    page.keyboard.press("2")
    row = page.locator(f'tr[data-key="{key}"]')
    row.wait_for()
    assert row.locator("td").nth(1).inner_text().startswith(f"{DAY} 15:0")
    since = next(a["since"] for a in room.room.alarms() if a["key"] == key)
    assert datetime.fromisoformat(since).year == datetime.now(UTC).year  # stored: real time

    # the event log: simulated time in the time column, the wall clock beside it, never a mix
    page.keyboard.press("3")
    raised = page.locator("#event-rows tr", has_text="alarm.raised").filter(has_text=breaker).first
    raised.wait_for()
    cells = raised.locator("td")
    assert cells.nth(1).inner_text().startswith(f"{DAY} 15:0")
    wall = cells.nth(2).inner_text()
    assert wall.endswith("UTC")
    assert wall.startswith(str(datetime.now(UTC).year))
    assert page.inner_text("#event-time-head") == "Time (simulated)"
    times = page.locator("#event-rows td.time").all_inner_texts()
    assert times
    assert all(t.startswith("2016-") for t in times)

    # the trend's time axis is the simulated clock too
    page.keyboard.press("1")
    node = next(
        n["id"]
        for n in room.room.grid_view()["nodes"]
        if any(p.endswith("/u") for p in room.room.element(n["id"])["points"])
    )
    _open(page, node)
    page.wait_for_function("(window.opendso.trend()?.samples ?? 0) > 0", timeout=15_000)
    trend = page.evaluate("window.opendso.trend()")
    start = room.simulator.start_time.timestamp()
    assert start <= trend["xMin"] <= trend["xMax"] <= start + at_s + 1
    assert trend["wallMin"] / 1000 > datetime.now(UTC).timestamp() - 3600  # fetched by wall-clock time
    _shot(page, "operator-simulated-clock")


def test_element_panel_shows_readable_names_with_units(page: Any, room: ControlRoomProcess) -> None:
    line = _element_id(room, "MV2.101 Line 1")  # measured by a power sensor at its substation end
    _open(page, line)
    rows = page.locator("#el-points tr")
    labels = [rows.nth(k).locator("td").first.inner_text().split("\n")[0] for k in range(rows.count())]
    assert labels == ["Active power", "Reactive power", "Fault indicator"]  # the indicator after the measurements
    power = rows.nth(0)
    value, unit = power.locator(".pv").inner_text(), power.locator(".pu").inner_text()
    assert unit in ("W", "kW", "MW"), unit
    assert abs(float(value)) < 1000  # scaled: no 103001.164 W
    assert len(value.split(".")[-1]) <= 3
    assert rows.nth(1).locator(".pu").inner_text() in ("var", "kvar", "Mvar")

    data = page.inner_text("#el-fields")
    for label, shown in (("Rated current", "252.0 A"), ("Length", "700 m"), ("From node", "MV2.101 busbar1.1")):
        assert f"{label}\n{shown}" in data or f"{label}\t{shown}" in data, (label, data)
    assert "Resistance R1" in data
    assert "mΩ" in data
    panel = page.inner_text("#element-panel")
    for raw in ("tan1", "tan0", "source_index", "i_n", "r1", "x1", "from_status", "c0", "u_rated", "None", "null"):
        assert not re.search(rf"\b{raw}\b", panel), raw

    # a node (the substation's busbar, energised whatever trips): rated voltage in kV, the estimate in p.u. and kV
    bus = _element_id(room, "MV2.101 busbar1.1")
    _open(page, bus)
    assert "20.00 kV" in page.inner_text("#el-fields")
    page.wait_for_function("document.getElementById('el-estimated').textContent.includes('kV')")
    # a transformer: vector group and tap from the model's integers
    _open(page, _element_id(room, "MV2.101-LV5.220-Trafo 1"))
    fields = page.inner_text("#el-fields")
    assert "Dyn5" in fields
    assert "630.0 kVA" in fields
    assert "6.0 %" in fields
    assert "winding_from" not in fields
    assert "clock" not in fields
    _shot(page, "operator-element-units")


def test_trend_with_several_series_a_time_range_units_and_csv(page: Any, room: ControlRoomProcess) -> None:
    room.call(room.simulator.resume)  # the clock runs: samples spread over simulated time
    line = _element_id(room, "MV2.101 Line 1")
    _open(page, line)
    page.wait_for_function("window.opendso.trend()?.series.length === 1")
    # a second point of the element, then a point of another element: three series, one axis per unit
    page.locator("#el-points input.trend-pick").nth(1).check()
    node = next(
        n["id"]
        for n in room.room.grid_view()["nodes"]
        if n["name"].startswith("MV") and any(p.endswith("/u") for p in room.room.element(n["id"])["points"])
    )
    _open(page, node)
    page.locator("#el-points input.trend-pick").first.check()
    page.wait_for_function("window.opendso.trend()?.series.length === 3 && window.opendso.trend().axes.length === 3")
    trend = page.evaluate("window.opendso.trend()")
    assert [s["unit"] for s in trend["series"]] == ["W", "var", "V"]
    assert trend["axes"][2] == "kV"
    assert trend["axes"][0] in ("W", "kW", "MW")
    assert trend["axes"][1].endswith("var")
    assert page.locator("#trend-series li").count() == 3
    page.wait_for_function("(window.opendso.trend()?.samples ?? 0) > 3", timeout=15_000)

    # a preset range on the simulated clock: the last 15 minutes
    loads = page.evaluate("window.opendso.trend().loads")
    page.select_option("#trend-range", "900")
    page.wait_for_function(f"window.opendso.trend().drawn > {loads} && window.opendso.trend().samples > 0")
    trend = page.evaluate("window.opendso.trend()")
    now_sim = datetime.fromisoformat(room.room.status()["simulated_time"]).timestamp()
    assert trend["xMin"] >= now_sim - 900 - 5
    # a custom range: from the start of the simulation to five simulated minutes later
    start = room.simulator.start_time
    page.select_option("#trend-range", "custom")
    page.fill("#trend-from", start.strftime("%Y-%m-%dT%H:%M:%S"))
    page.fill("#trend-to", (start + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S"))
    loads = page.evaluate("window.opendso.trend().loads")
    page.click("#trend-apply")
    page.wait_for_function(f"window.opendso.trend().drawn > {loads} && window.opendso.trend().samples > 0")
    trend = page.evaluate("window.opendso.trend()")
    assert start.timestamp() <= trend["xMin"] <= trend["xMax"] <= start.timestamp() + 300 + 1

    # the CSV is what the chart shows: both clocks, every series in its axis's unit
    with page.expect_download() as download:
        page.click("#trend-csv")
    path = download.value.path()
    with open(path, encoding="utf-8", newline="") as f:
        table = list(csv.reader(io.StringIO(f.read())))
    header, rows = table[0], table[1:]
    assert header[:2] == ["simulated time (UTC)", "wall clock (UTC)"]
    assert header[2].endswith(f"/p [{trend['axes'][0]}]")
    assert header[4].endswith("/u [kV]")
    assert len(rows) == trend["samples"]
    assert all(r[0].startswith(f"{DAY}T05:0") for r in rows)
    assert all(r[1].startswith(str(datetime.now(UTC).year)) for r in rows)
    volts = [float(r[4]) for r in rows if r[4]]
    assert volts
    assert all(5 < v < 50 for v in volts)
    _shot(page, "operator-trend")


@pytest.mark.parametrize("checkbox", ["#alarm-group-toggle", "#el-points input.trend-pick"])
def test_page_shortcuts_work_after_a_checkbox_is_clicked(page: Any, room: ControlRoomProcess, checkbox: str) -> None:
    if checkbox.startswith("#alarm"):
        page.keyboard.press("2")
        page.wait_for_selector("#page-alarms:not([hidden])")
    else:
        _open(page, _element_id(room, "MV2.101 Line 1"))
    page.click(checkbox)
    assert page.evaluate("document.activeElement.type") == "checkbox"
    page.keyboard.press("3")
    page.wait_for_selector("#page-log:not([hidden])", timeout=5_000)
    page.keyboard.press("1")
    page.wait_for_selector("#page-network:not([hidden])", timeout=5_000)
    # typing text is not a shortcut
    page.keyboard.press("3")
    page.wait_for_selector("#page-log:not([hidden])")
    page.click("#note-text")
    page.keyboard.type("12")
    assert page.input_value("#note-text") == "12"
    assert page.is_visible("#page-log")
