"""Benchmark: the real-time cycle (measurements -> topology -> state estimation -> alarms).

The cycle runs on the latest measurement of every point of a grid's measurement placements and
switches (values from a power flow of the true state with realistic noise, as the field would
send them) plus pseudo-measurements of every load and generator, on the demo grid and on
SimBench's 1-MVLV-urban-all (10,458 nodes). The figure is the median cycle time over repeated
cycles after a warm-up, with the stages broken down; the state-estimation stage includes the
bad-data test (the largest weighted residuals normalised, one extra estimation each). The latest
values reach the cycle as the monitor hands them over: a snapshot of its
:class:`~opendso.measurement.LatestValues` (arrays by point index). Target from issue 3: < 1 s
for 10,000 nodes.

For comparison the same state estimation is timed as a direct power-grid-model call on the same
measurement set (the part of the cycle a user of power-grid-model alone would have to write).
Run standalone: ``.venv/bin/python benchmarks/bench_realtime.py``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from _util import Target, print_table, quiet_warnings, write_report

GRIDS = {"demo": "demo", "10k nodes": "simbench:1-MVLV-urban-all-0-sw"}


def field_readings(grid: Any, when: datetime, seed: int = 0) -> dict[str, Any]:
    """Measurements of every placement and switch: a noisy power flow of the grid's present state."""
    from opendso.calc import measurements_from_power_flow, run_power_flow
    from opendso.measurement import Measurement
    from opendso.telemetry.binding import SENSOR_FIELDS

    truth = run_power_flow(grid)
    meas = measurements_from_power_flow(grid, truth, noise=1.0, rng=np.random.default_rng(seed), pseudo_loads=False)
    readings: dict[str, Measurement] = {}
    for (component, q), fields in SENSOR_FIELDS.items():
        names = grid.names.get(component)
        if names is None or component not in meas:
            continue
        rows = {int(i): r for r, i in enumerate(meas[component]["id"])}
        for sid, name in zip(grid.sensors[component]["id"], names, strict=True):
            value = float(meas[component][fields.value][rows[int(sid)]])
            readings[f"{name}/{q}"] = Measurement(f"{name}/{q}", when, value, 0)
    for name, closed in zip(grid.switch_names, grid.switches["closed"], strict=True):
        readings[f"{name}/switch"] = Measurement(f"{name}/switch", when, float(closed), 0)
    return readings


def measure(source: str, cycles: int) -> dict[str, Any]:
    """Median cycle time and stage times on one grid, and power-grid-model's own estimation time."""
    from power_grid_model import PowerGridModel

    from opendso.calc import combine_measurements
    from opendso.grid.sources import load_grid
    from opendso.measurement import LatestValues
    from opendso.operations.cycle import RealTimeCycle

    grid = load_grid(source)
    points = {p: (p.rsplit("/", 1)[0], p.rsplit("/", 1)[1]) for p in field_readings(grid, datetime.now(UTC))}
    cycle = RealTimeCycle(grid, points)
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    latest = LatestValues(cycle.binding.names)  # what the monitor keeps, updated as measurements arrive
    latest.update(field_readings(grid, t0).values())
    cycle.run(latest.snapshot(), t0)  # warm-up
    stages: dict[str, list[float]] = {}
    for k in range(cycles):
        result = cycle.run(latest.snapshot(), t0 + timedelta(seconds=2 * (k + 1)))
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    # power-grid-model alone on the same measurement set (model construction included, as in the cycle)
    direct = []
    measurements = combine_measurements(grid, result.estimation.measurements)
    data = grid.pgm_input()
    data.update(measurements)
    for _ in range(max(3, cycles // 2)):
        start = time.perf_counter()
        PowerGridModel(data).calculate_state_estimation(calculation_method="iterative_linear")
        direct.append((time.perf_counter() - start) * 1e3)
    return {
        "nodes": grid.count("node"),
        "points": len(points),
        "observable": result.observable,
        "stages_ms": {s: statistics.median(v) for s, v in stages.items()},
        "pgm_se_ms": statistics.median(direct),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the cycle on the demo and the 10k-node grid; print the table and PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer cycles, demo grid only")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    logging.disable(logging.WARNING)
    cycles = 3 if args.quick else 9
    grids = {"demo": GRIDS["demo"]} if args.quick else GRIDS
    rows = []
    targets = []
    for label, source in grids.items():
        got = measure(source, cycles)
        st = got["stages_ms"]
        rows.append(
            [
                label,
                f"{got['nodes']:,}",
                f"{got['points']:,}",
                "yes" if got["observable"] else "NO",
                f"{st['topology']:.1f}",
                f"{st['measurements']:.1f}",
                f"{st['state_estimation']:.1f}",
                f"{st['alarms']:.1f}",
                f"{st['cycle']:.1f}",
                f"{got['pgm_se_ms']:.1f}",
            ]
        )
        if label == "10k nodes":
            targets.append(
                Target(
                    "real-time cycle, 10k nodes",
                    st["cycle"] / 1e3,
                    1.0,
                    "max",
                    "s",
                    f"median of {cycles} cycles; {got['points']:,} points",
                )
            )
        else:
            targets.append(
                Target(f"real-time cycle, {label}", st["cycle"] / 1e3, 1.0, "max", "s", f"median of {cycles} cycles")
            )
    print_table(
        f"Real-time cycle (median of {cycles} cycles, ms)",
        [
            "grid",
            "nodes",
            "points",
            "observable",
            "topology",
            "measurements",
            "state est.",
            "alarms",
            "cycle",
            "PGM SE alone",
        ],
        rows,
    )
    write_report(args.json, "realtime", targets, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
