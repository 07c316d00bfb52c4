"""Benchmark: FLISR planning time on a 10,000-node grid and on SimBench MV grids, beside exhaustive search.

The large grid is synthetic (:func:`build_flisr_grid`): twenty 10 kV feeders of 500 nodes from one
busbar, each a trunk of 50 nodes with a 9-node lateral on every trunk node, a breaker at the feeder
head, a remote load-break switch on every fifth trunk line, and open ties between the ends of
neighbouring feeders and between the middles of feeders ten apart. Per grid, faults at nodes
spread over the feeders are simulated (breaker trip, indicators as the field simulator sets them)
and :func:`~opendso.operations.flisr.plan_flisr` is timed (location, isolation, restoration and
its power flows included); the median is reported. The exhaustive search
(:func:`~opendso.operations.flisr.exhaustive_flisr`) runs on the same faults with a time limit:
on the small SimBench feeders it finishes and must restore the same load and customers; on the
large grid it is reported as not finished within the limit (or its time, when it finishes).

Run ``python benchmarks/bench_flisr.py`` (``--quick``: fewer faults, shorter limits).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
from _util import Target, fmt_s, print_table, quiet_warnings, write_report

SIMBENCH = ("1-MV-rural--0-sw", "1-MV-semiurb--0-sw", "1-MV-urban--0-sw", "1-MV-comm--0-sw")
U_KV = 10.0


def build_flisr_grid(n_feeders: int = 20, trunk: int = 50, lateral: int = 9, every: int = 5) -> Any:
    """Return a pandapower net of ``n_feeders`` feeders of ``trunk * (1 + lateral)`` nodes with switches and ties."""
    import pandapower as pp

    net = pp.create_empty_network(name=f"flisr-{n_feeders * trunk * (1 + lateral) + 1}")
    bus0 = pp.create_bus(net, vn_kv=U_KV, name="busbar")
    pp.create_ext_grid(net, bus0, vm_pu=1.03, s_sc_max_mva=500.0, rx_max=0.1)
    per_feeder = trunk * (1 + lateral)
    n = n_feeders * per_feeder
    buses = np.asarray(pp.create_buses(net, n, vn_kv=U_KV, name=[f"n{i}" for i in range(n)]))
    parents = np.empty(n, dtype=np.int64)
    trunk_rows: list[np.ndarray] = []
    for f in range(n_feeders):
        base = f * per_feeder
        t_rows = base + np.arange(trunk)
        trunk_rows.append(t_rows)
        parents[t_rows[0]] = -1
        parents[t_rows[1:]] = t_rows[:-1]
        for k, t in enumerate(t_rows):
            l_rows = base + trunk + k * lateral + np.arange(lateral)
            parents[l_rows[0]] = t
            parents[l_rows[1:]] = l_rows[:-1]
    from_bus = np.where(parents < 0, bus0, buses[np.maximum(parents, 0)])
    p_mw = 0.012
    lines = pp.create_lines_from_parameters(
        net,
        from_buses=from_bus,
        to_buses=buses,
        length_km=0.08,
        r_ohm_per_km=0.2,
        x_ohm_per_km=0.1,
        c_nf_per_km=250.0,
        max_i_ka=0.6,
        name=[f"l{i}" for i in range(n)],
    )
    lines = np.asarray(lines)
    pp.create_loads(net, buses, p_mw=p_mw, q_mvar=0.2 * p_mw, name=[f"load{i}" for i in range(n)])
    sw_bus: list[int] = []
    sw_line: list[int] = []
    sw_closed: list[bool] = []
    sw_type: list[str] = []
    sw_name: list[str] = []
    for f, t_rows in enumerate(trunk_rows):
        for k in range(0, trunk, every):
            row = int(t_rows[k])
            sw_bus.append(int(from_bus[row]))
            sw_line.append(int(lines[row]))
            sw_closed.append(True)
            sw_type.append("CB" if k == 0 else "LBS")
            sw_name.append(f"F{f}-{'CB' if k == 0 else f'S{k}'}")
    ties: list[tuple[str, int, int]] = []
    for f in range(n_feeders):
        g = (f + 1) % n_feeders
        ties.append((f"tie-end-{f}-{g}", int(trunk_rows[f][-1]), int(trunk_rows[g][-1])))
        if f < n_feeders // 2:
            h = f + n_feeders // 2
            ties.append((f"tie-mid-{f}-{h}", int(trunk_rows[f][trunk // 2]), int(trunk_rows[h][trunk // 2])))
    tie_lines = pp.create_lines_from_parameters(
        net,
        from_buses=[buses[a] for _, a, _ in ties],
        to_buses=[buses[b] for _, _, b in ties],
        length_km=0.5,
        r_ohm_per_km=0.2,
        x_ohm_per_km=0.1,
        c_nf_per_km=250.0,
        max_i_ka=0.6,
        name=[name for name, _, _ in ties],
    )
    for (name, a, _), line in zip(ties, np.asarray(tie_lines), strict=True):
        sw_bus.append(int(buses[a]))
        sw_line.append(int(line))
        sw_closed.append(False)
        sw_type.append("LBS")
        sw_name.append(f"{name}-sw")
    pp.create_switches(net, sw_bus, sw_line, et="l", closed=sw_closed, type=sw_type, name=sw_name)
    return net


def fault_nodes(grid: Any, count: int) -> list[str]:
    """Return ``count`` node names spread over the feeders (busbars left out)."""
    from opendso.grid import analyse_topology

    topology = analyse_topology(grid)
    rows = np.flatnonzero(topology.node_feeder >= 0)
    pick = rows[np.linspace(0, rows.size - 1, count).round().astype(np.int64)]
    return [str(grid.names_of("node")[r]) for r in pick]


def measure(grid: Any, faults: list[str], *, exhaustive_timeout_s: float, max_branches: int) -> dict[str, Any]:
    """Time plan_flisr per fault (median) and the exhaustive search beside it."""
    from opendso.operations.flisr import exhaustive_flisr, fault_indicators, feeder_breaker, plan_flisr

    plan_s: list[float] = []
    exhaustive_s: list[float] = []
    unfinished = 0
    mismatches = 0
    for fault in faults:
        tripped = feeder_breaker(grid, fault)
        indicators = fault_indicators(grid, fault)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            plan = plan_flisr(grid, tripped=tripped, indicators=indicators)
            runs.append(time.perf_counter() - t0)
        plan_s.append(min(runs))
        t0 = time.perf_counter()
        best = exhaustive_flisr(
            grid,
            tripped=tripped,
            faulted_nodes=plan.faulted_nodes,
            max_branches=max_branches,
            timeout_s=exhaustive_timeout_s,
        )
        if best is None:
            unfinished += 1
            continue
        exhaustive_s.append(time.perf_counter() - t0)
        if not (
            np.isclose(best.load_restored_w, plan.load_restored_w)
            and best.customers_restored == plan.customers_restored
        ):
            mismatches += 1
    return {
        "faults": len(faults),
        "plan_median_s": statistics.median(plan_s),
        "plan_max_s": max(plan_s),
        "exhaustive_median_s": statistics.median(exhaustive_s) if exhaustive_s else None,
        "exhaustive_finished": len(exhaustive_s),
        "exhaustive_unfinished": unfinished,
        "mismatches": mismatches,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the FLISR measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer faults, shorter time limits")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()

    from opendso.grid import from_pandapower, load_grid

    rows: list[list[str]] = []
    info: list[list[str]] = []
    targets: list[Target] = []

    limit_s = 5.0 if args.quick else 10.0
    large = from_pandapower(build_flisr_grid(), name="synthetic 10k")
    n_nodes = large.count("node")
    big = measure(
        large,
        fault_nodes(large, 3 if args.quick else 6),
        exhaustive_timeout_s=limit_s,
        max_branches=10_000,
    )
    exhaustive_text = ", ".join(
        part
        for part in (
            f"finished: {big['exhaustive_finished']}, median {fmt_s(big['exhaustive_median_s'])}"
            if big["exhaustive_finished"]
            else "",
            f"not finished in {limit_s:.0f} s: {big['exhaustive_unfinished']}" if big["exhaustive_unfinished"] else "",
        )
        if part
    )
    rows.append(
        [
            f"synthetic, {n_nodes} nodes",
            str(big["faults"]),
            fmt_s(big["plan_median_s"]),
            fmt_s(big["plan_max_s"]),
            exhaustive_text,
            str(big["mismatches"]),
        ]
    )
    targets.append(
        Target(f"FLISR plan on a {n_nodes}-node grid (median)", big["plan_median_s"], 1.0, "max", "s", "plan_flisr")
    )
    info.append(
        [
            f"FLISR exhaustive search, {n_nodes} nodes",
            exhaustive_text,
            "all combinations of the relevant remote switches",
        ]
    )

    for code in SIMBENCH[:2] if args.quick else SIMBENCH:
        grid = load_grid(f"simbench:{code}")
        result = measure(grid, fault_nodes(grid, 4 if args.quick else 8), exhaustive_timeout_s=3.0, max_branches=64)
        skipped = result["exhaustive_unfinished"]
        ex = fmt_s(result["exhaustive_median_s"]) + (f" (not finished in 3 s: {skipped})" if skipped else "")
        rows.append(
            [
                code,
                str(result["faults"]),
                fmt_s(result["plan_median_s"]),
                fmt_s(result["plan_max_s"]),
                ex,
                str(result["mismatches"]),
            ]
        )
        info.append([f"FLISR plan on {code} (median)", fmt_s(result["plan_median_s"]), f"exhaustive {ex}"])
        targets.append(
            Target(
                f"FLISR plans short of the exhaustive optimum on {code}",
                float(result["mismatches"]),
                0.0,
                "max",
                "count",
                f"{result['exhaustive_finished']} faults compared",
            )
        )

    print_table(
        "FLISR planning (plan_flisr: best of 3 per fault, median over faults) beside exhaustive search",
        ["grid", "faults", "plan median", "plan max", "exhaustive search", "plan != exhaustive"],
        rows,
    )
    write_report(args.json, "flisr", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
