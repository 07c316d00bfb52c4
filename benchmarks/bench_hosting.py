"""Benchmark: time-series hosting capacity on Dask (1, 2, 4 workers) beside a pandapower loop.

- ``opendso``: :func:`opendso.calc.hc_dask.run_hosting_capacity` on SimBench 1-MVLV-rural-all
  (MV + LV, about 5,500 nodes) for a sample of nodes spread over the grid and the first day of the
  profiles, on a LocalCluster of 1, 2 and 4 worker processes (one thread each); the figure is
  nodes x steps per second (both directions, generation and load, to 1 % or 10 kW), and the
  speed-up against one worker. The results must be identical for every worker count.
- a year on a small grid: every node of 1-LV-rural1 over all 35,136 steps on 2 workers.
- ``pandapower``: the same study written as a plain loop (bracket x4, bisection, one ``runpp``
  per step with early exit at the first violating step; transformer loading power-based as
  power-grid-model's) for a sample of nodes spread over the grid (MV and LV) over the first steps,
  side by side with OpenDSO on exactly the same nodes and steps (one worker): the sizes of both
  (which must agree within the two searches' accuracy, 1 % or 10 kW each), the time and the nodes
  x steps per second of each.

Run ``python benchmarks/bench_hosting.py`` (``--quick`` for a smoke run). Stays under 6 minutes on
2 cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import numpy as np
from _util import Target, fmt_ratio, fmt_s, print_table, quiet_warnings, write_report

MVLV = "simbench:1-MVLV-rural-all-0-sw"
LV = "simbench:1-LV-rural1--0-sw"


def simbench_net(code: str) -> Any:
    """The grid's pandapower net, its transformer taps honoured (see the field notes)."""
    from opendso.grid.sources import load_simbench_net

    net = load_simbench_net(code.split(":", 1)[1])
    net.trafo["tap_changer_type"] = "Ratio"
    return net


def pandapower_loop(grid: Any, base: Any, node_name: str, steps: int, u_min: float, u_max: float) -> dict[str, Any]:
    """The same study for one node as a pandapower loop on a copy of ``base``: sizes (MW), power flows, seconds."""
    import pandapower as pp

    net = copy.deepcopy(base)
    profiles = grid.profiles
    bus = int(net.bus.index[np.flatnonzero(net.bus["name"].to_numpy() == node_name)[0]])
    loads = grid.extra["sym_load"]
    gens = grid.extra["sym_gen"]
    set_points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for step in range(steps):
        row = profiles.values[step : step + 1]
        by = {(a.component, a.attribute): a.evaluate(row)[0] for a in profiles.assignments}
        set_points.append(
            (
                by[("sym_load", "p_specified")] / 1e6,
                by[("sym_load", "q_specified")] / 1e6,
                by[("sym_gen", "p_specified")] / 1e6,
            )
        )
    is_load = loads["source_table"] == "load"
    load_rows = loads["source_index"][is_load].astype(int)
    is_sgen = gens["source_table"] == "sgen"
    sgen_rows = gens["source_index"][is_sgen].astype(int)
    probe = pp.create_sgen(net, bus, p_mw=0.0, q_mvar=0.0, name="probe")
    runs = 0

    def feasible(p_mw: float) -> bool:
        nonlocal runs
        net.sgen.at[probe, "p_mw"] = p_mw
        for p, q, g in set_points:
            net.load.loc[load_rows, "p_mw"] = p[is_load]
            net.load.loc[load_rows, "q_mvar"] = q[is_load]
            net.sgen.loc[sgen_rows, "p_mw"] = g[is_sgen]
            runs += 1
            try:
                pp.runpp(net, trafo_loading="power", init="results" if runs > 1 else "auto")
            except pp.LoadflowNotConverged:
                return False
            vm = net.res_bus["vm_pu"].to_numpy()
            vm = vm[np.isfinite(vm)]
            if (vm < u_min).any() or (vm > u_max).any():
                return False
            if (net.res_line["loading_percent"] > 100).any() or (net.res_trafo["loading_percent"] > 100).any():
                return False
        return True

    sizes = {}
    t0 = time.perf_counter()
    for label, sign in (("generation_mw", 1.0), ("load_mw", -1.0)):
        lo, hi = 0.0, 0.25
        while feasible(sign * hi) and hi < 2000:
            lo, hi = hi, hi * 4
        while hi - lo > max(0.01 * lo, 0.01):
            mid = 0.5 * (lo + hi)
            if feasible(sign * mid):
                lo = mid
            else:
                hi = mid
        sizes[label] = lo
    return {"seconds": time.perf_counter() - t0, "runs": runs, **sizes}


def main(argv: list[str] | None = None) -> int:
    """Run the hosting-capacity measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer nodes and steps")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    import os

    # dask's INFO lines and the shutdown-race heartbeat errors of worker processes stay out of the report
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

    from opendso.calc.hc_dask import run_hosting_capacity
    from opendso.calc.hosting_capacity import resolve_nodes
    from opendso.grid import load_grid

    n_nodes, steps, pp_steps, pp_nodes = (4, 24, 4, 1) if args.quick else (12, 96, 8, 3)
    grid = load_grid(MVLV)
    ids = resolve_nodes(grid, None)
    sample_ids = ids[np.linspace(0, ids.size - 1, n_nodes).astype(int)]
    names = [str(n) for n in grid.names_of("node")[grid.node_positions(sample_ids)]]

    rows: list[list[str]] = []
    info: list[list[str]] = []
    targets: list[Target] = []
    times: dict[int, float] = {}
    answers: dict[int, Any] = {}
    from dask.distributed import Client, LocalCluster

    for workers in (1, 2, 4):
        t_start = time.perf_counter()
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(workers)
            client.run(lambda: __import__("opendso.calc.hosting_capacity"))  # imports paid before the clock
            start_s = time.perf_counter() - t_start
            t0 = time.perf_counter()
            result = run_hosting_capacity(grid, nodes=names, steps=steps, chunk_nodes=3, client=client)
            times[workers] = time.perf_counter() - t0
        answers[workers] = result.to_dict()
        rate = n_nodes * steps / times[workers]
        rows.append(
            [f"{workers}", fmt_s(start_s), fmt_s(times[workers]), f"{rate:,.0f}", fmt_ratio(times[1] / times[workers])]
        )
    identical = answers[1] == answers[2] == answers[4]
    print_table(
        f"hosting capacity, {MVLV} ({grid.count('node')} nodes): {n_nodes} sampled nodes x {steps} steps, "
        "generation and load, on a LocalCluster of worker processes",
        ["workers", "cluster start", "study time", "nodes x steps / s", "speed-up"],
        rows,
    )
    print(f"identical results with 1, 2, 4 workers: {identical}\n")
    best = min(times.values())
    info.append(
        [
            "hosting capacity nodes x steps / s (MVLV, best)",
            f"{n_nodes * steps / best:,.0f}",
            f"{n_nodes} nodes x {steps} steps",
        ]
    )
    info.append(
        [
            "hosting capacity Dask speed-up 2 / 4 workers",
            f"{fmt_ratio(times[1] / times[2])} / {fmt_ratio(times[1] / times[4])}",
            "against 1 worker, 2 cores",
        ]
    )
    targets.append(Target("hosting capacity identical with 1, 2, 4 workers", float(not identical), 0.0, "max", "count"))

    # a sample of nodes, MV and LV, spread over the grid: the same study by OpenDSO and by a pandapower loop
    pp_names = [names[i] for i in np.linspace(0, len(names) - 1, pp_nodes).astype(int)]
    ours_t0 = time.perf_counter()
    ours = run_hosting_capacity(
        grid, nodes=pp_names, steps=pp_steps, workers=1, processes=False, chunk_nodes=len(pp_names)
    )
    ours_s = time.perf_counter() - ours_t0
    base = simbench_net(MVLV)
    pp_results = [pandapower_loop(grid, base, node, pp_steps, 0.9, 1.1) for node in pp_names]
    pp_s = sum(r["seconds"] for r in pp_results)
    pp_runs = sum(r["runs"] for r in pp_results)
    rows_pp: list[list[str]] = []
    worst = 0.0
    for mine, theirs in zip(ours.nodes, pp_results, strict=True):
        for key in ("generation_mw", "load_mw"):
            a, b = getattr(mine, key), theirs[key]
            # each search is within max(1 %, 10 kW) of the true size: two of them within twice that
            worst = max(worst, abs(a - b) / (2 * max(0.01 * max(a, b), 0.01)))
        rows_pp.append(
            [
                mine.node,
                f"{mine.generation_mw:.3f}",
                f"{theirs['generation_mw']:.3f}",
                f"{mine.load_mw:.3f}",
                f"{theirs['load_mw']:.3f}",
                str(theirs["runs"]),
            ]
        )
    print_table(
        f"{len(pp_names)} sampled nodes x {pp_steps} steps, generation and load: OpenDSO beside a pandapower loop",
        ["node", "gen MW opendso", "gen MW pandapower", "load MW opendso", "load MW pandapower", "pp power flows"],
        rows_pp,
    )
    ours_rate = len(pp_names) * pp_steps / ours_s
    pp_rate = len(pp_names) * pp_steps / pp_s
    print_table(
        f"the same study ({len(pp_names)} nodes x {pp_steps} steps) side by side",
        ["side", "time", "power flows", "nodes x steps / s"],
        [
            ["opendso (1 worker, batched)", fmt_s(ours_s), "batched", f"{ours_rate:,.2f}"],
            ["pandapower loop", fmt_s(pp_s), str(pp_runs), f"{pp_rate:,.2f}"],
        ],
    )
    print(f"largest difference between the two, in units of their combined accuracy: {worst:.2f} (<= 1 agrees)\n")
    targets.append(Target("hosting capacity agrees with the pandapower loop", worst, 1.0, "max", "x"))
    info.append(
        [
            "hosting capacity OpenDSO / pandapower loop, same nodes and steps",
            fmt_ratio(ours_rate / pp_rate),
            f"{len(pp_names)} nodes x {pp_steps} steps, 1 worker",
        ]
    )
    info.append(
        [
            "hosting capacity OpenDSO (Dask, best) / pandapower loop",
            fmt_ratio(n_nodes * steps / best / pp_rate),
            "nodes x steps per second",
        ]
    )

    t0 = time.perf_counter()
    lv = load_grid(LV)
    year = run_hosting_capacity(lv, workers=2, processes=True, chunk_nodes=2, steps=2 * 96 if args.quick else None)
    year_s = time.perf_counter() - t0
    year_rate = len(year.nodes) * year.steps / year_s
    print(
        f"{LV}: every node ({len(year.nodes)}) x {year.steps} steps on 2 workers in {fmt_s(year_s)}: "
        f"{year_rate:,.0f} nodes x steps / s\n"
    )
    info.append(
        [
            f"hosting capacity, every node x {year.steps} steps, 1-LV-rural1, 2 workers",
            fmt_s(year_s),
            f"{year_rate:,.0f} nodes x steps / s",
        ]
    )
    write_report(args.json, "hosting", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
