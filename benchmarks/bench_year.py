"""Benchmark 1: a year of quarter-hours on SimBench grids, OpenDSO against power-grid-model and pandapower.

Three sides, each in its own child process (so each reports its own peak memory):

- ``opendso``: the whole process a user runs, ``load_grid("simbench:<code>")`` then
  ``run_time_series`` over the steps (iterative current, Newton-Raphson retries, per-step summary);
- ``pgm``: what a power-grid-model user writes by hand: the SimBench net is loaded and converted
  to power-grid-model input arrays (OpenDSO's converter: power-grid-model-io's crashes on SimBench's
  empty transformer vector groups), the batch update is built with plain numpy from the SimBench
  profile tables, and ``PowerGridModel.calculate_power_flow`` is called chunk by chunk with the same
  method, threading, chunk size and output attributes as OpenDSO. The time of the
  ``calculate_power_flow`` calls alone is reported beside the whole process;
- ``pandapower``: pandapower's fastest time loop, ``runpp`` with ``recycle`` (bus_pq only) after the
  load and generator set-points of each step are written into the net, timed on a contiguous sample
  of steps after a warm-up (numba compilation excluded) and scaled to the full year.

Run ``python benchmarks/bench_year.py`` (``--quick`` for a smoke run, ``--full`` for the full year on
the large grid, ``--only GRID`` to run one grid).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
from _util import (
    ChildResult,
    Target,
    emit,
    fmt_mb,
    fmt_ratio,
    fmt_s,
    print_table,
    quiet_warnings,
    run_child,
    time_it,
    timing_of,
    write_report,
)

YEAR_STEPS = 35_136

#: Output attributes asked for by OpenDSO's time series (see opendso.calc.timeseries).
LOADING_COMPONENTS = ("line", "transformer", "three_winding_transformer", "asym_line", "generic_branch")


# -- plain numpy update data from the SimBench profile tables (the power-grid-model user's way) ------


class DirectProfiles:
    """Per-element base values and profile columns, built with plain pandas/numpy from a SimBench net."""

    def __init__(self, net: Any, grid: Any) -> None:
        prof = net.profiles
        load_table = prof["load"]
        self.load_values = load_table.drop(columns="time").to_numpy(dtype=np.float64)
        load_cols = load_table.columns.drop("time")
        gen_tables = [prof[k].drop(columns="time") for k in ("renewables", "powerplants") if k in prof]
        gen_frame = gen_tables[0].join(gen_tables[1:]) if len(gen_tables) > 1 else gen_tables[0]
        self.gen_values = gen_frame.to_numpy(dtype=np.float64)
        gen_cols = gen_frame.columns
        storage_frame = prof["storage"].drop(columns="time") if "storage" in prof else None

        # power-grid-model rows of loads and generators point back at the pandapower rows
        ld = grid.input["sym_load"]
        table = grid.extra["sym_load"]["source_table"]
        index = grid.extra["sym_load"]["source_index"]
        if np.any(table != "load"):
            if storage_frame is None or len(storage_frame.columns) == 0:
                self.storage_values = np.zeros((self.load_values.shape[0], 0))
            else:
                self.storage_values = storage_frame.to_numpy(dtype=np.float64)
        is_load = table == "load"
        load = net.load.loc[index[is_load]]
        self.n_load = int(ld.size)
        self.p_base = ld["p_specified"].copy()
        self.q_base = ld["q_specified"].copy()
        self.p_base[is_load] = (load["p_mw"] * load["scaling"]).to_numpy() * 1e6
        self.q_base[is_load] = (load["q_mvar"] * load["scaling"]).to_numpy() * 1e6
        names = load["profile"].astype(str)
        self.col_p = np.full(ld.size, -1, dtype=np.int64)
        self.col_q = np.full(ld.size, -1, dtype=np.int64)
        self.col_p[is_load] = load_cols.get_indexer(names + "_pload")
        self.col_q[is_load] = load_cols.get_indexer(names + "_qload")
        if np.any(~is_load):  # storage follows its own table (p only)
            st = net.storage.loc[index[~is_load]]
            self.p_base[~is_load] = (st["p_mw"] * st["scaling"]).to_numpy() * 1e6
            self.col_p_storage = storage_frame.columns.get_indexer(st["profile"].astype(str))  # type: ignore[union-attr]
        self.has_storage = bool(np.any(~is_load))
        self.is_load = is_load

        gen = grid.input.get("sym_gen")
        self.has_gen = gen is not None and gen.size > 0
        if self.has_gen:
            gidx = grid.extra["sym_gen"]["source_index"]
            sgen = net.sgen.loc[gidx]
            self.g_base = (sgen["p_mw"] * sgen["scaling"]).to_numpy() * 1e6
            self.col_g = gen_cols.get_indexer(sgen["profile"].astype(str))

    def update(self, start: int, stop: int) -> dict[str, dict[str, np.ndarray]]:
        """Columnar batch update (no ids: every load and generator, in input order)."""
        load_rows = self.load_values[start:stop]
        p = _scaled(load_rows, self.col_p, self.p_base)
        q = _scaled(load_rows, self.col_q, self.q_base)
        if self.has_storage:
            st = self.storage_values[start:stop]
            p[:, ~self.is_load] = _scaled(st, self.col_p_storage, self.p_base[~self.is_load])
        update = {"sym_load": {"p_specified": p, "q_specified": q}}
        if self.has_gen:
            update["sym_gen"] = {"p_specified": _scaled(self.gen_values[start:stop], self.col_g, self.g_base)}
        return update


def _scaled(values: np.ndarray, columns: np.ndarray, base: np.ndarray) -> np.ndarray:
    """values[:, column] * base, the base alone where an element has no profile (column -1)."""
    out = values[:, np.where(columns >= 0, columns, 0)] * base
    out[:, columns < 0] = base[columns < 0]
    return out


def wanted_outputs(grid: Any) -> dict[str, list[str]]:
    """The output attributes OpenDSO's time series asks for."""
    wanted = {"node": ["u_pu", "energized"]}
    wanted.update({c: ["loading", "energized"] for c in LOADING_COMPONENTS if grid.count(c)})
    return wanted


def default_chunk_size(grid: Any, wanted: dict[str, list[str]]) -> int:
    """The chunk size OpenDSO's run_time_series picks by default (about 64 MB of update and output)."""
    per_step = 8 * sum(a.ids.size for a in grid.profiles.assignments)
    per_step += 9 * sum(grid.count(c) for c in wanted)
    return int(np.clip(64e6 // max(per_step, 1), 64, 4096))


# -- the sides (child processes) -------------------------------------------------------------------


def child_opendso(code: str, start: int, stop: int, repeats: int) -> dict[str, Any]:
    """Whole process: load_grid + run_time_series, ``repeats`` times; load and calculation timed apart.

    ``load_grid`` keeps converted SimBench grids in a cache folder: each repeat points it at a fresh
    temporary folder, so the first load is cold (SimBench CSV files read and converted, cache written)
    and a second load is warm (cache read); both are reported.
    """
    import os
    import tempfile

    from opendso.calc.timeseries import run_time_series
    from opendso.grid.sources import load_grid

    cold: list[float] = []
    warm: list[float] = []
    calcs: list[float] = []
    converged = 0
    fallback = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="opendso-bench-cache-") as folder:
            os.environ["OPENDSO_CACHE_DIR"] = folder
            t0 = time.perf_counter()
            grid = load_grid(f"simbench:{code}")
            t1 = time.perf_counter()
            result = run_time_series(grid, start=start, stop=stop)
            t2 = time.perf_counter()
            del grid
            t3 = time.perf_counter()
            grid = load_grid(f"simbench:{code}")
            t4 = time.perf_counter()
        cold.append(t1 - t0)
        calcs.append(t2 - t1)
        warm.append(t4 - t3)
        converged = int(result.converged.sum())
        fallback = int(result.fallback.sum())
        del grid, result
    return {
        "load": {"median": float(np.median(cold)), "runs": cold},
        "load_warm": {"median": float(np.median(warm)), "runs": warm},
        "calc": {"median": float(np.median(calcs)), "runs": calcs},
        "converged": converged,
        "fallback": fallback,
    }


def child_pgm(code: str, start: int, stop: int, repeats: int) -> dict[str, Any]:
    """Direct power-grid-model: load + arrays, numpy update per chunk, batch calls; calls timed alone too."""
    from power_grid_model import CalculationMethod, PowerGridModel

    from opendso.grid import from_pandapower
    from opendso.grid.sources import load_simbench_net

    loads: list[float] = []
    builds: list[float] = []
    calcs: list[float] = []
    update_diff = math.nan
    for rep in range(repeats):
        t0 = time.perf_counter()
        net = load_simbench_net(code)
        grid = from_pandapower(net, name=code)
        direct = DirectProfiles(net, grid)
        wanted = wanted_outputs(grid)
        chunk = default_chunk_size(grid, wanted)
        model = PowerGridModel(grid.pgm_input(), system_frequency=50.0)
        t1 = time.perf_counter()
        build = 0.0
        calc = 0.0
        for c0 in range(start, stop, chunk):
            c1 = min(c0 + chunk, stop)
            tb = time.perf_counter()
            update = direct.update(c0, c1)
            tc = time.perf_counter()
            model.calculate_power_flow(
                update_data=update,
                threading=0,
                output_component_types=wanted,  # type: ignore[arg-type]
                calculation_method=CalculationMethod.iterative_current,
                error_tolerance=1e-8,
                max_iterations=30,
            )
            td = time.perf_counter()
            build += tc - tb
            calc += td - tc
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        builds.append(build)
        calcs.append(calc)
        if rep == 0:
            # the hand-built update must equal OpenDSO's, or the comparison is not on the same data
            ids = {c: grid.component(c)["id"] for c in ("sym_load", "sym_gen")}
            ours = grid.profiles.update_data(start, min(start + 96, stop), input_ids=ids)  # type: ignore[union-attr]
            theirs = direct.update(start, min(start + 96, stop))
            update_diff = max(float(np.max(np.abs(ours[c][a] - theirs[c][a]))) for c in theirs for a in theirs[c])
        del net, grid, model
        _ = t2
    return {
        "load": {"median": float(np.median(loads)), "runs": loads},
        "build": {"median": float(np.median(builds)), "runs": builds},
        "calc": {"median": float(np.median(calcs)), "runs": calcs},
        "update_max_diff_w": update_diff,
    }


def child_pandapower(code: str, start: int, steps: int, repeats: int) -> dict[str, Any]:
    """pandapower runpp with recycle over ``steps`` contiguous steps, after a warm-up; per-step seconds."""
    import pandapower as pp

    from opendso.calc.timeseries import run_time_series
    from opendso.grid import from_pandapower
    from opendso.grid.sources import load_simbench_net

    net = load_simbench_net(code)
    grid = from_pandapower(net, name=code)
    net.trafo["tap_changer_type"] = "Ratio"  # SimBench leaves it empty; pandapower would then ignore the tap
    # only the sampled rows: a year of every load's values would take gigabytes
    prof = {k: v.iloc[start : start + steps].reset_index(drop=True) for k, v in net.profiles.items()}
    lp = prof["load"][net.load["profile"].astype(str) + "_pload"].to_numpy() * net.load["p_mw"].to_numpy()
    lq = prof["load"][net.load["profile"].astype(str) + "_qload"].to_numpy() * net.load["q_mvar"].to_numpy()
    gen_frame = prof["renewables"].drop(columns="time")
    if "powerplants" in prof and len(prof["powerplants"].columns) > 1:
        gen_frame = gen_frame.join(prof["powerplants"].drop(columns="time"))
    gp = gen_frame[net.sgen["profile"].astype(str)].to_numpy() * net.sgen["p_mw"].to_numpy()
    has_storage = len(net.storage) > 0 and "storage" in prof and len(prof["storage"].columns) > 1
    sp = (
        prof["storage"][net.storage["profile"].astype(str)].to_numpy() * net.storage["p_mw"].to_numpy()
        if has_storage
        else None
    )
    recycle = {"trafo": False, "gen": False, "bus_pq": True}
    load_p = net.load.columns.get_loc("p_mw")
    load_q = net.load.columns.get_loc("q_mvar")
    sgen_p = net.sgen.columns.get_loc("p_mw")

    def set_step(t: int) -> None:
        t -= start
        net.load.iloc[:, load_p] = lp[t]
        net.load.iloc[:, load_q] = lq[t]
        net.sgen.iloc[:, sgen_p] = gp[t]
        if sp is not None:
            net.storage["p_mw"] = sp[t]

    vm_max = np.zeros(steps)

    def loop() -> None:
        for k in range(steps):
            set_step(start + k)
            pp.runpp(net, recycle=recycle, numba=True)
            vm_max[k] = net.res_bus["vm_pu"].max()

    # warm-up: numba compilation and the stored internals that recycle reuses
    set_step(start)
    pp.runpp(net, numba=True)
    for k in range(3):
        set_step(start + k)
        pp.runpp(net, recycle=recycle, numba=True)
    timing, _ = time_it(loop, repeats=repeats)
    # same data: pandapower's highest voltage per step against OpenDSO's on the sampled steps
    ours = run_time_series(grid, start=start, stop=start + steps)
    return {
        "per_step": {"median": timing.median / steps, "runs": [r / steps for r in timing.runs]},
        "steps": steps,
        "u_max_diff_pu": float(np.max(np.abs(ours.u_max_pu - vm_max))),
    }


# -- the parent -----------------------------------------------------------------------------------


GRIDS = {
    "mv-urban": "1-MV-urban--0-sw",
    "mvlv-urban-all": "1-MVLV-urban-all-0-sw",
}


def plan(name: str, quick: bool, full: bool) -> dict[str, int]:
    """Steps, repeats and pandapower sample of one grid for the chosen mode."""
    if name == "mv-urban":
        if quick:
            return {"steps": 960, "repeats": 1, "pp_steps": 20, "pp_repeats": 1}
        return {"steps": YEAR_STEPS, "repeats": 5, "pp_steps": 200, "pp_repeats": 3}
    if quick:
        return {"steps": 96, "repeats": 1, "pp_steps": 5, "pp_repeats": 1}
    if full:
        return {"steps": YEAR_STEPS, "repeats": 2, "pp_steps": 30, "pp_repeats": 3}
    return {"steps": YEAR_STEPS // 4, "repeats": 3, "pp_steps": 30, "pp_repeats": 3}


def merge_runs(results: list[ChildResult]) -> ChildResult:
    """One result from repeated single-repeat children: timings pooled, the largest peak memory."""
    good = [r for r in results if r.ok]
    if len(good) < len(results):
        bad = next(r for r in results if not r.ok)
        return ChildResult(False, error=bad.error)
    merged: dict[str, Any] = dict(good[-1].data)
    for key, value in good[0].data.items():
        if isinstance(value, dict) and "runs" in value:
            runs = [x for r in good for x in r.data[key]["runs"]]
            merged[key] = {"median": float(np.median(runs)), "runs": runs}
    merged["peak_rss_mb"] = max(float(r.data["peak_rss_mb"]) for r in good)
    return ChildResult(True, data=merged)


def run_grid(name: str, quick: bool, full: bool) -> tuple[list[Target], list[list[str]]]:
    """Run the three sides on one grid, print its table and return its targets and info rows."""
    code = GRIDS[name]
    p = plan(name, quick, full)
    steps, repeats = p["steps"], p["repeats"]
    scale = YEAR_STEPS / steps
    pp_start = YEAR_STEPS // 2  # a contiguous sample from mid-year (summer noon has most PV)
    print(
        f"== {code}: {steps} steps x {repeats} repeats (medians), scaled x{scale:.2f} to {YEAR_STEPS} steps", flush=True
    )
    # the two sides alternate, one repeat per child process, so load from other processes on the
    # machine falls on both alike; medians are taken over the repeats
    common = ["--grid", code, "--start", "0", "--stop", str(steps), "--repeats", "1"]
    ods_runs: list[ChildResult] = []
    pgm_runs: list[ChildResult] = []
    for k in range(repeats):
        print(f"  repeat {k + 1}/{repeats}: opendso side, then power-grid-model side ...", flush=True)
        ods_runs.append(run_child("bench_year.py", ["--child", "opendso", *common]))
        pgm_runs.append(run_child("bench_year.py", ["--child", "pgm", *common]))
    ods = merge_runs(ods_runs)
    pgm = merge_runs(pgm_runs)
    print(f"  pandapower side ({p['pp_steps']} steps x {p['pp_repeats']} repeats after warm-up) ...", flush=True)
    ppr = run_child(
        "bench_year.py",
        [
            "--child",
            "pandapower",
            "--grid",
            code,
            "--start",
            str(pp_start),
            "--stop",
            str(pp_start + p["pp_steps"]),
            "--repeats",
            str(p["pp_repeats"]),
        ],
    )
    for side, res in (("opendso", ods), ("pgm", pgm), ("pandapower", ppr)):
        if not res.ok:
            print(f"  {side} side failed: {res.error}", file=sys.stderr)

    nan = math.nan
    o_load = timing_of(ods.data, "load").median if ods.ok else nan
    o_calc = timing_of(ods.data, "calc").median * scale if ods.ok else nan
    o_whole = o_load + o_calc
    o_warm = timing_of(ods.data, "load_warm").median if ods.ok else nan
    g_load = timing_of(pgm.data, "load").median if pgm.ok else nan
    g_build = timing_of(pgm.data, "build").median * scale if pgm.ok else nan
    g_calc = timing_of(pgm.data, "calc").median * scale if pgm.ok else nan
    g_whole = g_load + g_build + g_calc
    pp_calc = timing_of(ppr.data, "per_step").median * YEAR_STEPS if ppr.ok else nan

    rows = [
        ["OpenDSO load_grid (cold: CSV + convert)", fmt_s(o_load), "", ""],
        ["OpenDSO load_grid (warm: grid cache)", fmt_s(o_warm), "", "info"],
        ["OpenDSO run_time_series", fmt_s(o_calc), "", ""],
        ["OpenDSO whole process (cold load)", fmt_s(o_whole), fmt_mb(ods.data.get("peak_rss_mb")), ""],
        ["OpenDSO whole process (warm load)", fmt_s(o_warm + o_calc), "", "info"],
        ["PGM load + arrays", fmt_s(g_load), "", ""],
        ["PGM numpy update", fmt_s(g_build), "", ""],
        ["PGM calculate_power_flow alone", fmt_s(g_calc), "", ""],
        ["PGM whole process", fmt_s(g_whole), fmt_mb(pgm.data.get("peak_rss_mb")), ""],
        ["pandapower runpp(recycle) loop", fmt_s(pp_calc), fmt_mb(ppr.data.get("peak_rss_mb")), "sampled"],
    ]
    print_table(
        f"{code}: {YEAR_STEPS} quarter-hours (times scaled from {steps} steps, medians of {repeats})",
        ["what", "seconds", "peak memory", "note"],
        rows,
    )
    r_whole_calc = o_whole / g_calc
    r_whole_whole = o_whole / g_whole
    r_calc_calc = o_calc / g_calc
    r_pp = pp_calc / o_calc
    notes = []
    if steps < YEAR_STEPS:
        notes.append(f"{steps} contiguous steps run, times scaled x{scale:.2f}")
    if ppr.ok:
        notes.append(f"pandapower timed on {ppr.data['steps']} steps, scaled")
    print(f"  OpenDSO whole / PGM calculation alone : {fmt_ratio(r_whole_calc)}")
    print(f"  OpenDSO whole / PGM whole process     : {fmt_ratio(r_whole_whole)}")
    print(f"  OpenDSO time series / PGM calculation : {fmt_ratio(r_calc_calc)}")
    print(f"  pandapower / OpenDSO time series      : {fmt_ratio(r_pp)}")
    if ods.ok:
        print(f"  OpenDSO: {ods.data['converged']} of {steps} steps converged, {ods.data['fallback']} fallbacks")
    if pgm.ok:
        print(f"  same data: hand-built update vs OpenDSO's differs by at most {pgm.data['update_max_diff_w']:.3g} W")
    if ppr.ok:
        print(
            f"  same data: pandapower vs OpenDSO highest voltage per step differs by <= {ppr.data['u_max_diff_pu']:.2g}"
            " pu"
        )
    for note in notes:
        print(f"  note: {note}")
    print(flush=True)

    note = "; ".join(notes)
    short = "MV-urban" if name == "mv-urban" else "MVLV-urban-all"
    targets: list[Target] = []
    if name == "mv-urban":
        targets.append(Target(f"{short} year: OpenDSO whole / PGM whole", r_whole_whole, 1.2, "max", "x", note))
        targets.append(Target(f"{short} year: pandapower / OpenDSO calc", r_pp, 50.0, "min", "x", note))
    else:
        targets.append(Target(f"{short} year: OpenDSO whole / PGM calc alone", r_whole_calc, 1.2, "max", "x", note))
    info = [
        [f"{short} year: OpenDSO whole", fmt_s(o_whole), fmt_mb(ods.data.get("peak_rss_mb"))],
        [
            f"{short} year: PGM calc alone / whole",
            f"{fmt_s(g_calc)} / {fmt_s(g_whole)}",
            fmt_mb(pgm.data.get("peak_rss_mb")),
        ],
        [f"{short} year: pandapower loop", fmt_s(pp_calc), fmt_mb(ppr.data.get("peak_rss_mb"))],
        [f"{short} year: overhead OpenDSO calc / PGM calc", fmt_ratio(r_calc_calc), ""],
        [f"{short} year: OpenDSO whole / PGM calc alone", fmt_ratio(r_whole_calc), ""],
        [f"{short} year: OpenDSO whole / PGM whole", fmt_ratio(r_whole_whole), ""],
    ]
    return targets, info


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run a child side or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small step counts (smoke run)")
    parser.add_argument("--full", action="store_true", help="full year on MVLV-urban-all too (slow)")
    parser.add_argument("--only", choices=sorted(GRIDS), help="run one grid")
    parser.add_argument("--json", help="write targets and ratios to this file (for run_all.py)")
    parser.add_argument("--child", choices=("opendso", "pgm", "pandapower"), help=argparse.SUPPRESS)
    parser.add_argument("--grid", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, default=YEAR_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_warnings()
    if args.child:
        if args.child == "opendso":
            emit(child_opendso(args.grid, args.start, args.stop, args.repeats))
        elif args.child == "pgm":
            emit(child_pgm(args.grid, args.start, args.stop, args.repeats))
        else:
            emit(child_pandapower(args.grid, args.start, args.stop - args.start, args.repeats))
        return 0
    names = [args.only] if args.only else list(GRIDS)
    if args.quick and not args.only:
        names = ["mv-urban"]
        print("quick run: MV-urban only (pass --only mvlv-urban-all for the large grid)", flush=True)
    targets: list[Target] = []
    info: list[list[str]] = []
    for name in names:
        t, i = run_grid(name, args.quick, args.full)
        targets += t
        info += i
    print_table(
        "year benchmark: targets", ["target", "measured", "limit", "result", "note"], [t.cells() for t in targets]
    )
    write_report(args.json, "year", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
