"""Benchmark: the congestion forecast's batch power flow, beside a pandapower loop on a sample.

- ``opendso``: :func:`opendso.planning.congestion.forecast_congestion` with ``S`` copula scenarios
  of a 48-hour weekly-profile forecast (192 intervals) on SimBench grids: the figure is scenario
  x interval power flows per second (the whole call: sampling, batch power flows, aggregation and
  the relief sensitivities), and the time of one 48-hour forecast.
- ``pandapower loop``: the same scenario x interval injections set on SimBench's pandapower net
  (taps honoured, ``trafo_loading="power"`` as power-grid-model reports it), one ``runpp`` per
  pair on a sample of pairs; the rate is extrapolated, and the loadings are compared with the
  batch results of the same pairs (an independent check of the batch).

Run ``python benchmarks/bench_congestion.py`` (``--quick``: one grid, fewer scenarios). Stays under
two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from _util import Target, fmt_s, print_table, quiet_warnings, time_it, write_report

GRIDS = ("1-LV-rural1--2-sw", "1-MV-urban--0-sw")
ISSUED = datetime(2016, 6, 10, tzinfo=UTC)
SAMPLE = 60


def pandapower_loop(code: str, grid: Any, forecast: Any, values: np.ndarray, pairs: np.ndarray) -> dict[str, Any]:
    """One runpp per (scenario, interval) pair of the sample: seconds per power flow and the loadings found."""
    import pandapower as pp
    import simbench as sb

    from opendso.planning.congestion import scenario_injections

    net = sb.get_simbench_net(code)
    net.trafo["tap_changer_type"] = "Ratio"
    net.ext_grid["s_sc_max_mva"] = 1e9
    update = scenario_injections(grid, forecast, values)
    rows = pairs[:, 0] * values.shape[1] + pairs[:, 1]  # scenario-major rows
    names = {c: [str(n) for n in grid.names_of(c)] for c in ("sym_load", "sym_gen")}
    where: dict[str, list[tuple[str, int]]] = {"sym_load": [], "sym_gen": []}
    for component, tables in (("sym_load", ("load", "storage")), ("sym_gen", ("sgen",))):
        for name in names[component]:
            for table in tables:
                hit = np.flatnonzero(net[table]["name"].to_numpy() == name)
                if hit.size:
                    where[component].append((table, int(net[table].index[hit[0]])))
                    break
            else:
                raise SystemExit(f"{code}: {name} not in the pandapower net")
    trafo_loading: list[float] = []
    # per table: the net's row labels and the grid's columns that set them (vectorised writes, a fair loop)
    writes = []
    for component in ("sym_load", "sym_gen"):
        for table in ("load", "storage", "sgen"):
            cols = [k for k, (t, _) in enumerate(where[component]) if t == table]
            if cols:
                labels = [where[component][k][1] for k in cols]
                writes.append((component, table, labels, np.array(cols)))
    pp.runpp(net)  # numba compilation outside the timing
    t0 = time.perf_counter()
    for row in rows:
        for component, table, labels, cols in writes:
            # a storage's p is consumption (charging), as the sym_load the reader made of it
            net[table].loc[labels, "p_mw"] = update[component]["p_specified"][row, cols] / 1e6
            net[table].loc[labels, "q_mvar"] = update[component]["q_specified"][row, cols] / 1e6
        pp.runpp(net, trafo_loading="power", tolerance_mva=1e-9)
        trafo_loading.append(float(net.res_trafo["loading_percent"].max()) / 100.0)
    seconds = time.perf_counter() - t0
    return {"per_pf": seconds / rows.size, "trafo": np.array(trafo_loading), "rows": rows}


def bench_grid(code: str, scenarios: int, repeats: int) -> dict[str, Any]:
    from opendso.grid import load_grid
    from opendso.planning.baselines import weekly_profile_forecast
    from opendso.planning.congestion import HISTORY_WINDOW, fit_copula_before, forecast_congestion, scenario_injections
    from opendso.planning.history import profile_history
    from opendso.planning.scenarios import sample_scenarios

    grid = load_grid(f"simbench:{code}")
    history = profile_history(grid)
    recent = history.loc[(history.index < ISSUED) & (history.index >= ISSUED - HISTORY_WINDOW)]
    forecast = weekly_profile_forecast(recent, ISSUED)
    t0 = time.perf_counter()
    copula = fit_copula_before(history, ISSUED)
    fit_s = time.perf_counter() - t0
    timing, result = time_it(
        lambda: forecast_congestion(grid, forecast, scenarios=scenarios, copula=copula, seed=0), repeats=repeats
    )
    pairs_per_s = scenarios * forecast.steps / timing.median
    # the same scenarios through pandapower on a sample of pairs
    values = sample_scenarios(forecast, copula, scenarios, seed=0)
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, scenarios, SAMPLE), rng.integers(0, forecast.steps, SAMPLE)], axis=1)
    loop = pandapower_loop(code, grid, forecast, values, pairs)
    # batch loadings of the same pairs, for the independent check
    from power_grid_model import PowerGridModel

    update = scenario_injections(grid, forecast, values)
    model = PowerGridModel(grid.pgm_input())
    sub = {c: {a: v[loop["rows"]] for a, v in cols.items()} for c, cols in update.items()}
    out = model.calculate_power_flow(update_data=sub, output_component_types={"transformer": ["loading"]})  # type: ignore[arg-type]
    diff = float(np.max(np.abs(out["transformer"]["loading"].max(axis=1) - loop["trafo"])))
    return {
        "grid": code,
        "nodes": grid.count("node"),
        "targets": len(forecast.targets),
        "scenarios": scenarios,
        "steps": forecast.steps,
        "seconds": timing.median,
        "runs": timing.runs,
        "copula_fit_s": fit_s,
        "pairs_per_s": pairs_per_s,
        "pandapower_per_s": 1.0 / loop["per_pf"],
        "speedup": pairs_per_s * loop["per_pf"],
        "max_trafo_loading_diff": diff,
        "elements_at_risk": int((result.probability > 0).any(axis=1).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one grid, 100 scenarios")
    parser.add_argument("--json", help="write the report here (run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    grids = GRIDS[:1] if args.quick else GRIDS
    scenarios = 100 if args.quick else 200
    results = [bench_grid(code, scenarios, 1 if args.quick else 3) for code in grids]
    rows = [
        [
            r["grid"],
            str(r["nodes"]),
            str(r["targets"]),
            f"{r['scenarios']} x {r['steps']}",
            fmt_s(r["seconds"]),
            f"{r['pairs_per_s']:,.0f}",
            f"{r['pandapower_per_s']:,.0f}",
            f"{r['speedup']:.0f}x",
            f"{r['max_trafo_loading_diff']:.1e}",
            fmt_s(r["copula_fit_s"]),
        ]
        for r in results
    ]
    print_table(
        "congestion forecast: scenario x interval power flows per second",
        [
            "grid",
            "nodes",
            "targets",
            "S x T",
            "48-h forecast",
            "pairs/s",
            "pandapower/s",
            "speed-up",
            "trafo diff",
            "copula fit",
        ],
        rows,
    )
    info = [
        [
            f"congestion forecast {r['grid']}",
            f"{r['pairs_per_s']:,.0f} pairs/s",
            f"{r['scenarios']} scenarios x {r['steps']} intervals in {fmt_s(r['seconds'])}; pandapower loop "
            f"{r['pandapower_per_s']:,.0f}/s ({r['speedup']:.0f}x); copula fit {fmt_s(r['copula_fit_s'])}",
        ]
        for r in results
    ]
    targets = [
        Target(
            f"congestion batch vs pandapower transformer loading ({r['grid']})",
            r["max_trafo_loading_diff"],
            1e-3,
            "max",
            "",
        )
        for r in results
    ]
    targets += [
        Target(f"congestion 48-h forecast, {r['scenarios']} scenarios ({r['grid']})", r["seconds"], 60.0, "max", "s")
        for r in results
    ]
    write_report(args.json, "congestion", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
