"""Benchmark: advisory Volt/VAR optimisation on SimBench MV grids, beside a brute-force tap search.

- ``opendso``: :func:`opendso.calc.vvo.optimise_volt_var` (taps, DER Q at |cos phi| >= 0.9,
  band 0.9-1.1 p.u.; successive MILPs in HiGHS on power-grid-model sensitivities) at the step of
  the year's largest load and the step of its largest PV output, on the SimBench MV grids; the
  figures are the time per step, the power flows it ran, and the losses saved against the
  as-found taps and Q.
- ``pandapower brute force``: every tap position of 1-MV-rural's HV/MV transformers (kept equal,
  as they run in parallel) with one ``runpp`` each, the best in-band losses, beside VVO with taps
  only (the same search space) and with taps and DER Q.

Run ``python benchmarks/bench_vvo.py`` (``--quick`` for two grids). Stays under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import numpy as np
from _util import Target, fmt_s, print_table, quiet_warnings, write_report

GRIDS = ("1-MV-rural--0-sw", "1-MV-semiurb--0-sw", "1-MV-urban--0-sw", "1-MV-comm--0-sw")
SMALL = "1-MV-rural--0-sw"


def extreme_steps(grid: Any) -> dict[str, int]:
    """The steps of the year's largest total load and largest total generation."""
    update = grid.profiles.update_data(0, grid.profiles.steps)
    load = update["sym_load"]["p_specified"].sum(axis=1)
    gen = update["sym_gen"]["p_specified"].sum(axis=1)
    return {"high load": int(np.argmax(load)), "high PV": int(np.argmax(gen))}


def brute_force_taps(grid: Any, code: str, step: int, u_min: float, u_max: float) -> dict[str, Any]:
    """Every tap position with pandapower: best in-band losses (MW), its tap, power flows, seconds."""
    import pandapower as pp
    import simbench as sb

    net = sb.get_simbench_net(code)
    net.trafo["tap_changer_type"] = "Ratio"
    profiles = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    for (element, column), frame in profiles.items():
        if len(net[element]):
            net[element][column] = frame.loc[step].to_numpy()
    lo, hi = int(net.trafo["tap_min"].max()), int(net.trafo["tap_max"].min())
    best: tuple[float, int] | None = None
    t0 = time.perf_counter()
    runs = 0
    for tap in range(lo, hi + 1):
        trial = copy.deepcopy(net)
        trial.trafo["tap_pos"] = tap
        pp.runpp(trial, tolerance_mva=1e-9)
        runs += 1
        vm = trial.res_bus["vm_pu"].dropna().to_numpy()
        if vm.min() < u_min or vm.max() > u_max:
            continue
        losses = float(trial.res_line["pl_mw"].sum() + trial.res_trafo["pl_mw"].sum())
        if best is None or losses < best[0]:
            best = (losses, tap)
    seconds = time.perf_counter() - t0
    return {
        "losses_mw": None if best is None else best[0],
        "tap": None if best is None else best[1],
        "runs": runs,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="two grids only")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()

    from opendso.calc.vvo import VvoSettings, optimise_volt_var
    from opendso.grid import load_grid

    codes = GRIDS[::2] if args.quick else GRIDS
    rows: list[list[str]] = []
    info: list[list[str]] = []
    targets: list[Target] = []
    out_of_band = 0
    worse = 0
    slowest = 0.0
    saved: list[float] = []
    grids: dict[str, Any] = {}
    for code in codes:
        grid = load_grid(f"simbench:{code}")
        grids[code] = grid
        for label, step in extreme_steps(grid).items():
            optimise_volt_var(grid, step=step, settings=VvoSettings(max_iterations=1))  # warm-up: imports, HiGHS
            t0 = time.perf_counter()
            r = optimise_volt_var(grid, step=step)
            seconds = time.perf_counter() - t0
            slowest = max(slowest, seconds)
            out_of_band += not r.in_band
            worse += r.after.losses_mw > r.before.losses_mw + 1e-9
            pct = 100 * (r.before.losses_mw - r.after.losses_mw) / r.before.losses_mw
            saved.append(pct)
            rows.append(
                [
                    code,
                    f"{label} ({step})",
                    f"{grid.count('node')}",
                    f"{len(r.taps)} / {len(r.ders)}",
                    f"{r.before.losses_mw * 1e3:.1f} -> {r.after.losses_mw * 1e3:.1f} kW ({pct:.1f} %)",
                    f"{r.before.u_min_pu:.3f}-{r.before.u_max_pu:.3f} -> {r.after.u_min_pu:.3f}-{r.after.u_max_pu:.3f}",
                    f"{r.iterations}",
                    f"{r.power_flows}",
                    fmt_s(seconds),
                ]
            )
    print_table(
        "Volt/VAR optimisation per step (taps + DER Q at |cos phi| >= 0.9, band 0.9-1.1 p.u.)",
        ["grid", "step", "nodes", "taps / DER", "losses", "voltage p.u.", "SLP iterations", "power flows", "time"],
        rows,
    )
    info.append(
        [
            "VVO losses saved, per step (min / median / max)",
            f"{min(saved):.1f} / {np.median(saved):.1f} / {max(saved):.1f} %",
            f"{len(saved)} steps on {len(codes)} SimBench MV grids",
        ]
    )
    info.append(["VVO time per step (slowest)", fmt_s(slowest), "SimBench MV grids, 2 cores"])
    targets.append(Target("VVO steps left out of band", float(out_of_band), 0.0, "max", "count"))
    targets.append(Target("VVO steps with more losses than as found", float(worse), 0.0, "max", "count"))
    targets.append(Target("VVO time per step (slowest, SimBench MV)", slowest, 30.0, "max", "s"))

    # brute force over the taps of the small grid, beside VVO on the same search space and on the full one
    grid = grids.get(SMALL) or load_grid(f"simbench:{SMALL}")
    step = extreme_steps(grid)["high PV"]
    bf = brute_force_taps(grid, SMALL, step, 0.9, 1.1)
    t0 = time.perf_counter()
    taps_only = optimise_volt_var(grid, step=step, settings=VvoSettings(der_q=False, shunts=False))
    taps_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = optimise_volt_var(grid, step=step)
    full_s = time.perf_counter() - t0
    print_table(
        f"{SMALL}, high PV step {step}: brute-force tap search (pandapower) beside VVO",
        ["method", "tap", "losses kW", "power flows", "time"],
        [
            [
                "pandapower brute force, taps",
                str(bf["tap"]),
                f"{bf['losses_mw'] * 1e3:.3f}",
                str(bf["runs"]),
                fmt_s(bf["seconds"]),
            ],
            [
                "VVO, taps only",
                str(taps_only.taps[0].tap_after),
                f"{taps_only.after.losses_mw * 1e3:.3f}",
                str(taps_only.power_flows),
                fmt_s(taps_s),
            ],
            [
                "VVO, taps + DER Q",
                str(full.taps[0].tap_after),
                f"{full.after.losses_mw * 1e3:.3f}",
                str(full.power_flows),
                fmt_s(full_s),
            ],
        ],
    )
    gap = (taps_only.after.losses_mw - bf["losses_mw"]) * 1e3
    info.append(
        ["VVO taps-only minus brute-force losses", f"{gap:.4f} kW", "same tap: pgm vs pandapower model difference"]
    )
    info.append(
        [
            "VVO taps + DER Q beside brute-force taps",
            f"{(bf['losses_mw'] - full.after.losses_mw) * 1e3:.2f} kW less",
            f"{fmt_s(full_s)} vs {fmt_s(bf['seconds'])} for {bf['runs']} runpp",
        ]
    )
    differs = float(taps_only.taps[0].tap_after != bf["tap"])
    targets.append(Target("VVO taps-only tap differs from brute force", differs, 0.0, "max", "count"))
    write_report(args.json, "vvo", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
