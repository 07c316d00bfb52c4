"""Benchmark: a day-ahead UFTP round's network-aware selection on a 10,000-node grid (1-MVLV-urban-all).

The round: the grid's profiles for one winter day (96 quarter-hours); the MV lines derated so
the most loaded ones run up to 40 % over their rating around the evening peak (every MV line
over its rating in an interval is a need); congestion points from the load and generator nodes
of the congested MV feeders (their MV nodes and the LV busbars of their secondary substations,
at most :data:`MAX_NODES`); 1,000 offers (seeded: 1-3 options each, 0.05-0.6 MW less
consumption per interval over windows of 2-16 quarter-hours that overlap the congested hours,
a tenth with the wrong sign, prices 20-2,000 EUR) spread over the points.

Measured, medians of repeats, in a child process:

- the sensitivities of every branch and node to every candidate node in all 96 intervals
  (power-grid-model, one batch: nodes + 1 scenarios per interval), against pandapower finite
  differences, the tool a user would otherwise pick: a sample of pandapower power flows on the
  same grid, scaled to the same count of power flows (candidates + 1 per interval);
- congestion points and their sensitivities;
- the selection (HiGHS MILP over all options) and the plain merit-order ranking.

Run ``python benchmarks/bench_uftp_selection.py`` (``--quick``: 24 intervals and 8 candidate
nodes, one repeat). A few minutes on 2 cores, most of it the sensitivities.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _util import (
    Target,
    emit,
    fmt_ratio,
    fmt_s,
    print_table,
    quiet_warnings,
    run_child,
    time_it,
    timing_of,
    write_report,
)

GRID = "simbench:1-MVLV-urban-all-0-sw"
DAY = 20  # 21 January 2016, a winter weekday
INTERVALS = 96
OFFERS = 1000
MAX_NODES = 24
PEAK_LOADING = 1.4
SEED = 12
SELECTION_TARGET_S = 60.0  # a day-ahead round: the gate closes hours after the offers come in


def _round(intervals: int, max_nodes: int) -> dict[str, Any]:
    """Set up the round: grid, states, needs and candidate nodes."""
    from power_grid_model import PowerGridModel

    from opendso.grid import analyse_topology, load_grid
    from opendso.markets.model import ISP, FlexNeed

    grid = load_grid(GRID)
    assert grid.profiles is not None
    start = DAY * 96
    update = grid.profiles.update_data(start, start + intervals)
    node_u = grid.component("node")["u_rated"]
    lines = grid.component("line").copy()
    mv = node_u[grid.node_positions(lines["from_node"])] >= 1e3
    model = PowerGridModel(grid.pgm_input(), system_frequency=grid.frequency_hz)
    out = model.calculate_power_flow(
        update_data=update,
        threading=0,
        output_component_types={"line": ["loading"]},  # type: ignore[arg-type]
    )
    peak = float(out["line"]["loading"][:, mv].max())
    lines["i_n"] = np.where(mv, lines["i_n"] * peak / PEAK_LOADING, lines["i_n"])
    grid = grid.with_input(line=lines)
    loading = out["line"]["loading"] * np.where(mv, PEAK_LOADING / peak, 1.0)
    t0 = datetime(2016, 1, 1, tzinfo=UTC) + timedelta(days=DAY)
    line_names = [str(n) for n in grid.names_of("line")]
    needs = [
        FlexNeed(f"line:{line_names[b]}", s, t0 + s * ISP, float(loading[s, b] - 1.0))
        for s in range(intervals)
        for b in np.flatnonzero(mv & (loading[s] > 1.0))
    ]
    topology = analyse_topology(grid)
    over = np.flatnonzero(mv & (loading.max(axis=0) > 1.0))
    congested = {int(f) for f in topology.branch_feeder["line"][over]}
    # connections: MV nodes with loads or generators, and the LV busbars of secondary substations, on those feeders
    names = [str(n) for n in grid.names_of("node")]
    trafo = grid.component("transformer")
    lv_busbars = grid.node_positions(trafo["to_node"][node_u[grid.node_positions(trafo["to_node"])] < 1e3])
    hv_side = grid.node_positions(trafo["from_node"][node_u[grid.node_positions(trafo["to_node"])] < 1e3])
    rows = [int(lv) for lv, hv in zip(lv_busbars, hv_side, strict=True) if int(topology.node_feeder[hv]) in congested]
    for component in ("sym_load", "sym_gen"):
        at = grid.node_positions(grid.component(component)["node"])
        rows += [int(r) for r in at if node_u[r] >= 1e3 and int(topology.node_feeder[r]) in congested]
    rows = sorted(set(rows))
    step = max(1, len(rows) // max_nodes)
    candidates = [names[r] for r in rows[::step][:max_nodes]]
    return {"grid": grid, "update": update, "needs": needs, "candidates": candidates}


def _offers(points: list[Any], needs: list[Any], intervals: int, rng: np.random.Generator) -> list[Any]:
    """Offers answering the round's FlexRequests: every option overlaps the intervals with a need."""
    from opendso.markets.model import FlexOffer, FlexOption

    lo = min(n.interval for n in needs)
    hi = max(n.interval for n in needs)

    offers = []
    for k in range(OFFERS):
        point = points[int(rng.integers(len(points)))]
        wrong = rng.random() < 0.1
        options = []
        for j in range(int(rng.integers(1, 4))):
            length = int(rng.integers(2, min(16, intervals) + 1))
            first = int(rng.integers(max(0, lo - length + 1), min(hi, intervals - length) + 1))
            size = rng.uniform(0.05e6, 0.6e6, length)
            power = tuple(float(x) for x in (size if wrong else -size))
            options.append(FlexOption(f"o{j}", first, power, float(round(rng.uniform(20, 2000), 2))))
        offers.append(FlexOffer(f"offer-{k}", f"agr{k % 7}.example", point.id, tuple(options)))
    return offers


def _pandapower_per_flow(grid: Any, update: dict[str, Any], sample: int) -> float:
    """Median seconds of one pandapower power flow in the first interval, with a probe as in a finite difference."""
    import pandapower as pp

    from opendso.grid import to_pandapower

    net = to_pandapower(grid)
    for component, table in (("sym_load", net.load), ("sym_gen", net.sgen)):
        columns = update.get(component, {})
        ids = columns.get("id", np.broadcast_to(grid.component(component)["id"], (1, grid.count(component))))[0]
        if "p_specified" in columns:
            table.loc[ids, "p_mw"] = columns["p_specified"][0] / 1e6
        if "q_specified" in columns:
            table.loc[ids, "q_mvar"] = columns["q_specified"][0] / 1e6
    bus = int(grid.component("node")["id"][-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net)  # numba compiles once; not counted

        def one() -> None:
            probe = pp.create_load(net, bus, p_mw=1e-3)
            pp.runpp(net)
            net.load.drop(probe, inplace=True)

        timing, _ = time_it(one, repeats=sample)
    return timing.median


def child(quick: bool) -> None:
    """Measure and emit the figures."""
    quiet_warnings()
    from opendso.calc.sensitivity import injection_sensitivities
    from opendso.markets.merit import congestion_points, merit_order, point_sensitivities, select_offers

    intervals = 24 if quick else INTERVALS
    repeats = 1 if quick else 3
    t0 = time.perf_counter()
    case = _round(intervals, 8 if quick else MAX_NODES)
    setup_s = time.perf_counter() - t0
    grid, update, needs, candidates = case["grid"], case["update"], case["needs"], case["candidates"]
    watched = sorted({n.element for n in needs})
    sens_timing, sens = time_it(lambda: injection_sensitivities(grid, candidates, update=update), repeats=repeats)
    cp_timing, points = time_it(lambda: congestion_points(grid, watched, sensitivities=sens), repeats=repeats)
    ps_timing, point_sens = time_it(lambda: point_sensitivities(points, sens, watched), repeats=repeats)
    offers = _offers(list(points), needs, intervals, np.random.default_rng(SEED))
    sel_timing, selection = time_it(
        lambda: select_offers(needs, offers, point_sens, horizon=intervals), repeats=repeats, warmup=1
    )
    rank_timing, _ = time_it(lambda: merit_order(needs, offers, point_sens, horizon=intervals), repeats=repeats)
    flows = intervals * (len(candidates) + 1)
    pp_per_flow = _pandapower_per_flow(grid, update, 3 if quick else 5)
    emit(
        {
            "nodes": grid.count("node"),
            "intervals": intervals,
            "candidates": len(candidates),
            "points": len(points),
            "needs": len(needs),
            "offers": len(offers),
            "options": sum(len(o.options) for o in offers),
            "setup_s": setup_s,
            "sensitivities": sens_timing,
            "congestion_points": cp_timing,
            "point_sensitivities": ps_timing,
            "selection": sel_timing,
            "ranking": rank_timing,
            "power_flows": flows,
            "pandapower_per_flow_s": pp_per_flow,
            "pandapower_scaled_s": pp_per_flow * flows,
            "bought": len(selection.bought),
            "refused": len(selection.refused),
            "refused_no_need": sum(r.reason.startswith("no power") for r in selection.refused),
            "needs_met": sum(n.met for n in selection.needs),
            "total_cost": selection.total_cost,
            "method": selection.method,
        }
    )


def main(argv: list[str] | None = None) -> int:
    """Run the child and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="24 intervals, 8 candidate nodes, one repeat")
    parser.add_argument("--json", help="write the report here (run_all.py)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.quick)
        return 0
    result = run_child(Path(__file__).name, ["--child", *(["--quick"] if args.quick else [])], timeout=3600)
    if not result.ok:
        print(f"uftp selection: the child failed: {result.error}", file=sys.stderr)
        return 1
    r = result.data
    sens = timing_of(r, "sensitivities")
    sel = timing_of(r, "selection")
    ratio = r["pandapower_scaled_s"] / sens.median if sens.median > 0 else float("nan")
    print_table(
        f"UFTP day-ahead round on {GRID} ({r['nodes']:,} nodes, {r['intervals']} intervals), medians",
        ["step", "size", "time", "note"],
        [
            ["set-up (grid, profiles, needs)", f"{r['needs']} needs", fmt_s(r["setup_s"]), "once"],
            [
                "sensitivities (power-grid-model batch)",
                f"{r['candidates']} nodes x {r['intervals']} intervals = {r['power_flows']:,} flows",
                fmt_s(sens.median),
                f"{len(sens.runs)} runs",
            ],
            [
                "same by pandapower finite differences",
                f"{fmt_s(r['pandapower_per_flow_s'])} per flow",
                fmt_s(r["pandapower_scaled_s"]),
                f"scaled from a sample; power-grid-model {fmt_ratio(ratio)} faster",
            ],
            ["congestion points", f"{r['points']} points", fmt_s(timing_of(r, "congestion_points").median), ""],
            ["point sensitivities", "", fmt_s(timing_of(r, "point_sensitivities").median), ""],
            [
                "selection (HiGHS MILP)",
                f"{r['offers']} offers, {r['options']} options",
                fmt_s(sel.median),
                f"bought {r['bought']}, refused {r['refused']}, met {r['needs_met']}/{r['needs']} ({r['method']})",
            ],
            ["merit-order ranking", "", fmt_s(timing_of(r, "ranking").median), "for display"],
        ],
    )
    print(
        f"refused: {r['refused']} options ({r['refused_no_need']} with no power in an interval with a need, "
        f"{r['refused'] - r['refused_no_need']} with no relief: the wrong sign, or points the need does not see)"
    )
    round_s = (
        sens.median + timing_of(r, "congestion_points").median + timing_of(r, "point_sensitivities").median + sel.median
    )
    targets = [
        Target(
            f"UFTP selection, {r['offers']} offers, {r['nodes']:,} nodes", sel.median, SELECTION_TARGET_S, "max", "s"
        ),
        Target("sensitivities: power-grid-model vs pandapower finite differences", ratio, 1.0, "min", "x"),
    ]
    info = [
        ["UFTP round (sensitivities + points + selection)", fmt_s(round_s), f"{r['intervals']} intervals"],
        [
            "UFTP sensitivities vs pandapower",
            fmt_ratio(ratio),
            f"{fmt_s(sens.median)} vs {fmt_s(r['pandapower_scaled_s'])}",
        ],
    ]
    write_report(args.json, "uftp_selection", targets, info)
    return 0 if all(t.passed is not False for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
