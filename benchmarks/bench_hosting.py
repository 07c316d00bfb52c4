"""Benchmark: a year of hosting capacity at every node of an MV+LV grid on Dask (1, 2, 4 workers); a pandapower loop.

- ``year``: :func:`opendso.calc.hc_dask.run_hosting_capacity` at every node (225) of the demo grid
  (SimBench 1-MVLV-semiurb-5.220-0-sw, MV + LV, 227 nodes) over the whole year of profiles (35,136
  quarter-hours), generation and load, to 1 % or 10 kW, with the margin filter
  (:data:`opendso.calc.hosting_capacity.MARGIN_FILTER`), on a LocalCluster of 1, 2 and 4 worker
  processes (one thread each): the time, nodes x steps per second and the speed-up against one
  worker. The results must be identical for every worker count.
- ``filter``: the margin filter against the exact every-step check, over the same year, for a
  sample of MV and LV nodes in this process: both answers (which must agree within the stated
  accuracy: the two searches may meet different violating steps first), the filtered answers
  judged at every step by power flows (:func:`opendso.calc.hosting_capacity.verify_every_step`:
  each must hold), both times, and the share of (node, step) checks the filter left to a power
  flow.
- ``pandapower``: the same study written as a plain loop (bracket x4, bisection, one ``runpp`` per
  step with early exit at the first violating step; transformer loading power-based as
  power-grid-model's) for a sample of nodes of SimBench 1-MVLV-rural-all (MV and LV) over the
  first steps, side by side with OpenDSO on exactly the same nodes and steps (one worker, exact
  check): the sizes of both (which must agree within the two searches' accuracy, 1 % or 10 kW
  each), the time and the nodes x steps per second of each.

Run ``python benchmarks/bench_hosting.py`` (``--quick`` for a smoke run: two days instead of the
year). About 10 minutes on 2 cores.
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
DEMO = "SimBench 1-MVLV-semiurb-5.220-0-sw"


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


def year_study(grid: Any, steps: int, margin_filter: float) -> tuple[list[list[str]], dict[int, float], bool]:
    """Every node of ``grid`` over ``steps`` steps on 1, 2 and 4 worker processes: table rows, times, identical."""
    from dask.distributed import Client, LocalCluster

    from opendso.calc.hc_dask import run_hosting_capacity

    rows: list[list[str]] = []
    times: dict[int, float] = {}
    answers: dict[int, Any] = {}
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
            result = run_hosting_capacity(grid, steps=steps, client=client, margin_filter=margin_filter)
            times[workers] = time.perf_counter() - t0
        answers[workers] = result.to_dict()
        rate = len(result.nodes) * result.steps / times[workers]
        rows.append(
            [f"{workers}", fmt_s(start_s), fmt_s(times[workers]), f"{rate:,.0f}", fmt_ratio(times[1] / times[workers])]
        )
    return rows, times, answers[1] == answers[2] == answers[4]


def filter_against_exact(grid: Any, names: list[str], steps: int, margin_filter: float) -> dict[str, Any]:
    """The filtered and the exact study of ``names`` in this process: answers, times, share of steps judged."""
    import logging
    import re

    from opendso.calc.hosting_capacity import hosting_capacity, verify_every_step

    counts = [0, 0]

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.search(r"step_checks=(\d+) steps_skipped=(\d+)", record.getMessage())
            if found:
                counts[0] += int(found.group(1))
                counts[1] += int(found.group(2))

    # the exact study first: each pays for its own base case (the filter's keeps the phasors too)
    t0 = time.perf_counter()
    exact = hosting_capacity(grid, nodes=names, steps=steps, chunk_nodes=len(names))
    exact_s = time.perf_counter() - t0
    logger = logging.getLogger("opendso.calc.hosting_capacity")
    handler = Counter(level=logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        t0 = time.perf_counter()
        fast = hosting_capacity(grid, nodes=names, steps=steps, margin_filter=margin_filter, chunk_nodes=len(names))
        fast_s = time.perf_counter() - t0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return {
        "verified": verify_every_step(grid, fast),
        "fast": fast,
        "exact": exact,
        "fast_s": fast_s,
        "exact_s": exact_s,
        "judged": counts[0] / max(counts[0] + counts[1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the hosting-capacity measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="two days instead of the year, fewer nodes")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    import os

    # dask's INFO lines and the shutdown-race heartbeat errors of worker processes stay out of the report
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

    from opendso.calc.hc_dask import run_hosting_capacity
    from opendso.calc.hosting_capacity import MARGIN_FILTER, resolve_nodes
    from opendso.grid import load_grid

    year_steps, pp_steps, pp_nodes = (192, 4, 1) if args.quick else (None, 8, 3)
    rows: list[list[str]] = []
    info: list[list[str]] = []
    targets: list[Target] = []

    # 1. the year at every node of the demo MV+LV grid, on 1, 2 and 4 workers
    demo = load_grid("demo")
    assert demo.profiles is not None
    steps = demo.profiles.steps if year_steps is None else year_steps
    ids = resolve_nodes(demo, None)
    rows, times, identical = year_study(demo, steps, MARGIN_FILTER)
    scope = f"every node ({ids.size}) x {steps:,} steps"
    print_table(
        f"hosting capacity, demo grid ({DEMO}, {demo.count('node')} nodes, MV+LV): {scope}, generation and "
        f"load to 1 % or 10 kW, margin filter {MARGIN_FILTER}, on a LocalCluster of worker processes",
        ["workers", "cluster start", "study time", "nodes x steps / s", "speed-up"],
        rows,
    )
    print(f"identical results with 1, 2, 4 workers: {identical}\n")
    best = min(times.values())
    info.append(["hosting capacity, demo MV+LV grid, " + scope, fmt_s(best), "best of 1, 2, 4 workers"])
    info.append(["hosting capacity nodes x steps / s (demo MV+LV, year, best)", f"{ids.size * steps / best:,.0f}", ""])
    info.append(
        [
            "hosting capacity Dask speed-up 2 / 4 workers",
            f"{fmt_ratio(times[1] / times[2])} / {fmt_ratio(times[1] / times[4])}",
            "against 1 worker, 2 cores",
        ]
    )
    targets.append(Target("hosting capacity identical with 1, 2, 4 workers", float(not identical), 0.0, "max", "count"))

    # 2. the margin filter against the exact every-step check, same steps, MV and LV nodes
    sample = ids[np.linspace(0, ids.size - 1, 2 if args.quick else 4).astype(int)]
    sample_names = [str(n) for n in demo.names_of("node")[demo.node_positions(sample)]]
    check = filter_against_exact(demo, sample_names, steps, MARGIN_FILTER)
    same = check["fast"].to_dict() == check["exact"].to_dict()
    apart = 0.0  # the largest difference in units of the stated accuracy (1 % or 10 kW of the larger)
    for f, e in zip(check["fast"].nodes, check["exact"].nodes, strict=True):
        for key in ("generation_mw", "load_mw"):
            a, b = getattr(f, key), getattr(e, key)
            apart = max(apart, abs(a - b) / max(0.01 * max(a, b), 0.01))
    broken = sum(not (g and ld) for g, ld in check["verified"])
    print_table(
        f"margin filter {MARGIN_FILTER} against the exact every-step check: {len(sample_names)} nodes x {steps:,} "
        "steps, one process",
        ["node", "gen MW filter", "gen MW exact", "load MW filter", "load MW exact", "filtered holds at every step"],
        [
            [
                f.node,
                f"{f.generation_mw:.3f}",
                f"{e.generation_mw:.3f}",
                f"{f.load_mw:.3f}",
                f"{e.load_mw:.3f}",
                f"{'yes' if g else 'NO'} / {'yes' if ld else 'NO'}",
            ]
            for f, e, (g, ld) in zip(check["fast"].nodes, check["exact"].nodes, check["verified"], strict=True)
        ],
    )
    print(
        f"identical: {same}; largest difference {apart:.2f} x the stated accuracy (<= 1 agrees); "
        f"time {fmt_s(check['fast_s'])} with the filter, {fmt_s(check['exact_s'])} exact "
        f"({fmt_ratio(check['exact_s'] / check['fast_s'])}); the filter judged "
        f"{100 * check['judged']:.1f} % of the (node, step) checks by a power flow\n"
    )
    targets.append(
        Target(
            "hosting capacity margin filter: answers failing the every-step check", float(broken), 0.0, "max", "count"
        )
    )
    targets.append(Target("hosting capacity margin filter against the exact check", apart, 1.0, "max", "x"))
    info.append(
        [
            "hosting capacity margin filter speed-up over the exact every-step check",
            fmt_ratio(check["exact_s"] / check["fast_s"]),
            f"{len(sample_names)} nodes x {steps:,} steps, {100 * check['judged']:.1f} % of checks solved",
        ]
    )

    # 3. a sample of nodes, MV and LV, spread over another MV+LV grid: OpenDSO beside a pandapower loop
    grid = load_grid(MVLV)
    mvlv_ids = resolve_nodes(grid, None)
    pp_ids = mvlv_ids[np.linspace(0, mvlv_ids.size - 1, pp_nodes).astype(int)]
    pp_names = [str(n) for n in grid.names_of("node")[grid.node_positions(pp_ids)]]
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
        f"{MVLV} ({grid.count('node')} nodes): {len(pp_names)} sampled nodes x {pp_steps} steps, generation and "
        "load: OpenDSO beside a pandapower loop",
        ["node", "gen MW opendso", "gen MW pandapower", "load MW opendso", "load MW pandapower", "pp power flows"],
        rows_pp,
    )
    ours_rate = len(pp_names) * pp_steps / ours_s
    pp_rate = len(pp_names) * pp_steps / pp_s
    print_table(
        f"the same study ({len(pp_names)} nodes x {pp_steps} steps) side by side",
        ["side", "time", "power flows", "nodes x steps / s"],
        [
            ["opendso (1 worker, batched, exact check)", fmt_s(ours_s), "batched", f"{ours_rate:,.2f}"],
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
    write_report(args.json, "hosting", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
