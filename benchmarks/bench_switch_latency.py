"""Benchmark: a switch change in the field to the screen, with the event-driven cycle on (after) and off (before).

Issue 9, item 7: for switch-state changes, p99 under 1 s from the RTU's spontaneous IEC 104
report, or from its receipt by the Modbus poller with a status poll group of 0.25 s, to the
screen, with the default 2 s cycle period (analog values stay on the period).

Each case runs in its own process, wired as ``opendso run`` wires it
(:class:`~opendso.runtime.ControlRoomProcess`): the field simulator on the demo grid with no
scripted events, the telemetry adapter over the real protocol on loopback, the historian
(SQLite), the monitor with the default cycle period, the control room and its web service.
The screen is a WebSocket client of the control room's live stream (``/api/stream``, bearer
token), in a thread of the benchmark process: it reads the very messages the web UI draws from,
so the figure ends where the browser's work begins (no browser is started; drawing a frame is
measured by ``bench_ui.py``). A feeder breaker is opened or closed in the simulated field
(``set_switch``, as protection or a crew would) after a random pause of up to one period, so the
operations do not line up with the cycle; the latency runs

- IEC 104: from the RTU's spontaneous report (the switch point is a double point with time tag,
  M_DP_TB_1: the time tag is the instant the simulated RTU took the change and sent it, COT 3),
- Modbus: from the poller's receipt (the time the poll of the status group, every 0.25 s, read
  the new value; analog values are polled every second in their own group),

to the arrival at the WebSocket client of the first ``state`` message that shows the switch in
its new position. The start is the time of the switch's measurement as the monitor holds it
(same machine, same clock). Reported: p50 and p99 over the operations, event-driven cycle on and
off side by side, the latency from the operation in the field for reference, and the monitor's
cycle counts. Target: p99 < 1 s with the event-driven cycle on, for both protocols.

Run standalone: ``.venv/bin/python benchmarks/bench_switch_latency.py`` (``--quick``: 10
operations per case; ``--operations N``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _util import Target, emit, print_table, quiet_warnings, run_child, write_report

GRID = "demo"
PROTOCOLS = ("iec104", "modbus")
STATUS_POLL_S = 0.25  # the Modbus status poll group
ANALOG_POLL_S = 1.0  # the Modbus analog poll group
TARGET_P99_S = 1.0
PASSWORD = "benchmark admin password"
OPERATIONS = 100
QUICK_OPERATIONS = 10


def latency_point_map(grid: Any, protocol: str, port: int) -> Any:
    """The grid's placements and switches over one protocol, switches as a utility would read them.

    IEC 104: switches as double points with time tag (M_DP_TB_1), values as short floats.
    Modbus: switches in a status poll group of ``STATUS_POLL_S``, values in one of ``ANALOG_POLL_S``.
    """
    from opendso.telemetry.points import PointMap, point_map_for_grid

    base = point_map_for_grid(grid, protocol=protocol, port=port)  # type: ignore[arg-type]
    source = base.sources["field"]
    points = list(base.points)
    for k, p in enumerate(points):
        if p.quantity == "switch" and protocol == "iec104":
            points[k] = dataclasses.replace(p, type="M_DP_TB_1")
        elif p.quantity == "switch" and protocol == "modbus":
            points[k] = dataclasses.replace(p, poll_group="status")
    if protocol == "modbus":
        source = dataclasses.replace(source, poll_groups={"default": ANALOG_POLL_S, "status": STATUS_POLL_S})
    return PointMap(file=f"<switch latency point map of {grid.name}>", sources={"field": source}, points=tuple(points))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- the child: one protocol, event-driven on or off -------------------------------------------------------
class Screen:
    """The operator's screen: a WebSocket client of the live stream, watching one switch."""

    def __init__(self, url: str, token: str, switch_id: str) -> None:
        from websockets.sync.client import connect

        self.switch_id = switch_id
        self.ws = connect(
            url.replace("http", "ws", 1) + "/api/stream",
            additional_headers={"Authorization": f"Bearer {token}", "Origin": url},
            max_size=None,
        )
        self.states = 0

    def next_state(self, deadline: float) -> tuple[float, bool] | None:
        """The next state message before ``deadline`` (monotonic): its arrival (epoch s) and the switch's state."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                message = self.ws.recv(timeout=remaining)
            except TimeoutError:
                return None
            arrived = time.time()
            if isinstance(message, bytes) or not message.startswith('{"type":"state"'):
                continue
            self.states += 1
            return arrived, bool(json.loads(message)["switches"][self.switch_id])

    def drain_for(self, seconds: float) -> bool | None:
        """Read every message for ``seconds``; return the switch state of the last state message (None: none came)."""
        deadline = time.monotonic() + seconds
        last = None
        while (got := self.next_state(deadline)) is not None:
            last = got[1]
        return last

    def close(self) -> None:
        self.ws.close()


def _has(process: Any, point: str) -> bool:
    """Whether the monitor holds a value of ``point`` (called in the control room's loop)."""
    return point in process.monitor.latest


def run_case(protocol: str, event_driven: bool, operations: int, seed: int) -> dict[str, Any]:
    """Open and close a feeder breaker ``operations`` times; return the latencies to the screen."""
    import httpx

    from opendso.demo import feeder_breaker
    from opendso.grid.sources import load_grid
    from opendso.operations.cycle import CycleSettings
    from opendso.runtime import ControlRoomProcess, free_port
    from opendso.telemetry.scenario import Scenario

    grid = load_grid(GRID)
    breaker = feeder_breaker(grid)
    if breaker is None:
        raise RuntimeError(f"{grid.name}: no feeder breaker")
    row = int(np.flatnonzero(grid.switch_names == breaker)[0])
    switch_id = str(int(grid.switches["id"][row]))
    point = f"{breaker}/switch"
    period = CycleSettings().period_s  # the default period: 2 s
    folder = Path(tempfile.mkdtemp(prefix="opendso-bench-switch-"))
    process = ControlRoomProcess(
        grid,
        folder,
        points=latency_point_map(grid, protocol, free_port()),
        period_s=period,
        event_driven=event_driven,
        scenario=Scenario(name="no scripted events"),
        port=0,
        admin_password=PASSWORD,
    )
    rng = random.Random(seed)
    latencies: list[float] = []
    from_field: list[float] = []
    misses = 0
    try:
        with process.in_thread(timeout_s=120):
            url = process.url
            assert url is not None
            response = httpx.post(f"{url}/api/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30)
            response.raise_for_status()
            screen = Screen(url, response.json()["access_token"], switch_id)
            try:
                # warm-up: the breaker's telemetry is in, a few cycles ran, the screen shows it closed
                shown = None
                deadline = time.monotonic() + 60
                while not (shown and process.monitor.stats.cycles >= 3 and process.call(_has, process, point)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the screen never showed the breaker closed")
                    last = screen.drain_for(0.5)
                    shown = shown if last is None else last
                state = True
                for _ in range(operations):
                    screen.drain_for(rng.uniform(0.0, period))  # de-phase from the cycle period
                    state = not state
                    operated = time.time()
                    process.set_switch(breaker, state)
                    deadline = time.monotonic() + 3 * period + 5
                    seen = None
                    while (got := screen.next_state(deadline)) is not None:
                        if got[1] == state:
                            seen = got[0]
                            break
                    if seen is None:
                        misses += 1
                        shown = screen.drain_for(period)
                        state = state if shown is None else shown
                        continue
                    held = process.call(process.monitor.latest.__getitem__, point)
                    start = held.time.timestamp()
                    if held.value != (1.0 if state else 0.0) or start < operated - 0.05:
                        misses += 1  # not the measurement of this change
                        continue
                    latencies.append(seen - start)
                    from_field.append(seen - operated)
            finally:
                screen.close()
            stats = process.monitor.stats
            counts = {
                "states": screen.states,
                "cycles": stats.cycles,
                "event_cycles": stats.event_cycles,
                "skipped_periods": stats.skipped_periods,
                "overruns": stats.overruns,
                "last_cycle_ms": stats.last_cycle_ms,
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "protocol": protocol,
        "event_driven": event_driven,
        "period_s": period,
        "operations": operations,
        "latencies_s": latencies,
        "from_field_s": from_field,
        "misses": misses,
        **counts,
    }


# -- the parent ----------------------------------------------------------------------------------------------
def _start_of(protocol: str) -> str:
    return "RTU's spontaneous report" if protocol == "iec104" else f"poller's receipt ({STATUS_POLL_S} s poll)"


def main(argv: list[str] | None = None) -> int:
    """Measure every case in its own process; print the table and the targets; write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_OPERATIONS} operations per case")
    parser.add_argument("--json", help="write the report here (for run_all.py)")
    parser.add_argument("--operations", type=int, help=f"switch operations per case (default {OPERATIONS})")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: iec104, modbus")
    parser.add_argument("--case", nargs=3, metavar=("PROTOCOL", "EVENT_DRIVEN", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_warnings()
    operations = args.operations or (QUICK_OPERATIONS if args.quick else OPERATIONS)
    if args.case:
        logging.disable(logging.WARNING)
        protocol, on, seed = args.case
        emit(run_case(protocol, on == "on", operations, int(seed)))
        return 0

    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"--protocols: unknown {', '.join(unknown)}")
    print(f"Switch change to screen, {operations} operations per case, demo grid", flush=True)
    results: dict[tuple[str, bool], dict[str, Any] | None] = {}
    for k, protocol in enumerate(protocols):
        for on in (False, True):
            label = f"{protocol}, event-driven {'on' if on else 'off'}"
            print(f"  {label} ...", flush=True)
            extra = ["--operations", str(operations), "--case", protocol, "on" if on else "off", str(k + 1)]
            child = run_child("bench_switch_latency.py", extra, timeout=300 + 12 * operations)
            if not child.ok:
                print(f"    failed: {child.error}", flush=True)
            results[(protocol, on)] = child.data if child.ok else None

    def ms(v: float) -> str:
        return "-" if not np.isfinite(v) else f"{v * 1e3:.0f}"

    rows = []
    targets: list[Target] = []
    info: list[list[str]] = []
    for protocol in protocols:
        for on in (False, True):
            r = results[(protocol, on)]
            label = f"{protocol}, {'after (event-driven on)' if on else 'before (event-driven off)'}"
            if r is None:
                rows.append([label, "-", "-", "-", "-", "-", "-", "crashed"])
                continue
            lat, field = r["latencies_s"], r["from_field_s"]
            rows.append(
                [
                    label,
                    f"{len(lat)}",
                    ms(_percentile(lat, 50)),
                    ms(_percentile(lat, 99)),
                    ms(max(lat)) if lat else "-",
                    ms(_percentile(field, 50)),
                    f"{r['cycles']} ({r['event_cycles']} extra, {r['skipped_periods']} periods left out)",
                    f"missed {r['misses']}, overruns {r['overruns']}",
                ]
            )
        before, after = results[(protocol, False)], results[(protocol, True)]
        p99 = _percentile(after["latencies_s"], 99) if after else float("nan")
        ok = after is not None and after["latencies_s"] and not after["misses"]
        targets.append(
            Target(
                f"switch change -> screen p99, {protocol}, event-driven",
                p99 if ok else None,
                TARGET_P99_S,
                "max",
                "s",
                f"from the {_start_of(protocol)}; period {after['period_s'] if after else '?'} s; "
                f"{len(after['latencies_s']) if after else 0} operations",
            )
        )
        if before is not None and after is not None:
            info.append(
                [
                    f"switch change -> screen, {protocol}",
                    f"p50 {ms(_percentile(after['latencies_s'], 50))} ms, p99 {ms(p99)} ms",
                    f"before (period only): p50 {ms(_percentile(before['latencies_s'], 50))} ms, "
                    f"p99 {ms(_percentile(before['latencies_s'], 99))} ms",
                ]
            )
    print_table(
        "Switch change in the field to the state on the screen (WebSocket client of /api/stream), demo grid, "
        "cycle period 2 s; latencies in ms",
        [
            "protocol, cycle",
            "operations",
            "p50",
            "p99",
            "max",
            "p50 from the field operation",
            "cycles run",
            "note",
        ],
        rows,
    )
    print("Start of each latency: IEC 104, the time tag of the RTU's spontaneous report (M_DP_TB_1, COT 3);")
    print(f"Modbus, the poller's receipt of the status poll ({STATUS_POLL_S} s group; analog values every")
    print(f"{ANALOG_POLL_S} s). End: arrival of the state message with the new switch position.", flush=True)
    print_table("targets", ["target", "measured", "limit", "result", "note"], [t.cells() for t in targets])
    write_report(args.json, "switch_latency", targets, info)
    return 0 if all(r is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
