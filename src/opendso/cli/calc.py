"""The calculation commands: ``opendso powerflow``, ``timeseries``, ``estimate`` and ``shortcircuit``.

``opendso powerflow GRID --json`` prints the object of DESIGN.md's contract
(:meth:`~opendso.calc.PowerFlowResult.to_dict`); each command exits 0 when its calculation
converged, 1 when it did not, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from opendso.cli._common import Subparsers, emit_json, load_valid_grid, parse_cli_time, progress
from opendso.errors import InputError, OpenDSOError
from opendso.settings import Settings

__all__ = ["cmd_estimate", "cmd_powerflow", "cmd_shortcircuit", "cmd_timeseries", "register"]


def cmd_powerflow(args: argparse.Namespace) -> int:
    """Run one power flow."""
    from opendso.calc import run_power_flow

    grid = load_valid_grid(args.grid, symmetric=not args.asym)
    result = run_power_flow(grid, symmetric=not args.asym, method=args.method, fallback_linear=args.fallback_linear)
    if args.json:
        emit_json(result.to_dict())
    else:
        _print_powerflow(result)
    return 0 if result.converged else 1


def _print_powerflow(result: Any) -> None:
    import numpy as np

    data = result.to_dict()
    status = "converged" if result.converged else f"did not converge: {result.error}"
    if result.fallback:
        status = f"linear fallback ({result.error})"
    print(f"{data['grid']}: power flow {status} ({data['method']}, {'balanced' if result.symmetric else 'unbalanced'})")
    if not data["nodes"]:
        return
    u = np.array([n["u_pu"] for n in data["nodes"] if n["energized"]])
    loading = [b for b in data["branches"] if b["loading"] is not None]
    print(f"  nodes {len(data['nodes'])}, energised {u.size}, voltage {u.min():.4f} .. {u.max():.4f} p.u.")
    if loading:
        worst = max(loading, key=lambda b: b["loading"])
        print(f"  max loading {worst['loading'] * 100:.1f} % on {worst['kind']} {worst['name']}")


def _profile_time(text: str, flag: str) -> Any:
    """A command-line time as the profiles keep theirs: numpy datetime64 in UTC, to the second."""
    import numpy as np

    return np.datetime64(parse_cli_time(text, flag).replace(tzinfo=None), "s")


def cmd_timeseries(args: argparse.Namespace) -> int:
    """Run the grid's profiles as a time series."""
    import numpy as np

    from opendso.calc import ParquetWriter, ViolationLimits, run_time_series

    grid = load_valid_grid(args.grid)
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    start, stop = 0, grid.profiles.steps
    if args.steps is not None:
        if args.steps <= 0:
            raise InputError(f"--steps {args.steps}: must be positive")
        stop = min(args.steps, stop)
    if args.start or args.end:
        times = grid.profiles.time
        if args.start:
            start = int(np.searchsorted(times, _profile_time(args.start, "--start")))
        if args.end:
            stop = int(np.searchsorted(times, _profile_time(args.end, "--end")))
        if stop <= start:
            raise InputError(
                f"--start {args.start} / --end {args.end}: no profile steps in that range "
                f"({np.datetime_as_string(times[0])} .. {np.datetime_as_string(times[-1])})"
            )
    writer = ParquetWriter(Path(args.out), grid) if args.out else None
    limits = ViolationLimits(u_min_pu=args.u_min, u_max_pu=args.u_max, loading_max=args.loading_max)
    with progress(not args.quiet, "time series") as update:
        result = run_time_series(
            grid,
            start=start,
            stop=stop,
            method=args.method,
            limits=limits,
            fallback_linear=args.fallback_linear,
            writer=writer,
            progress=update,
            threading=args.threads,
        )
    if args.json:
        emit_json(result.to_dict(with_steps=not args.no_steps))
    else:
        summary = result.to_dict(with_steps=False)
        print(
            f"{summary['grid']}: {summary['steps']} steps, {summary['converged_steps']} converged, "
            f"{summary['failed_steps']} failed, {summary['fallback_steps']} linear fallback"
        )
        if summary["u_min_pu"] is not None:
            print(
                f"  voltage {summary['u_min_pu']:.4f} .. {summary['u_max_pu']:.4f} p.u., "
                f"max loading {summary['max_loading'] * 100:.1f} %"
            )
        print(
            f"  steps with voltage violations {summary['steps_with_voltage_violations']}, "
            f"with overloads {summary['steps_with_overloads']}"
        )
        for step, reason in list(result.errors.items())[:10]:
            print(f"  step {start + step}: {reason}", file=sys.stderr)
        if args.out:
            print(f"  full results in {args.out}")
    return 0 if result.converged.all() else 1


def cmd_estimate(args: argparse.Namespace) -> int:
    """Run state estimation from a measurement file or from the source's placements."""
    import numpy as np

    from opendso.calc import measurements_from_power_flow, read_measurements, run_power_flow, run_state_estimation

    grid = load_valid_grid(args.grid)
    if args.measurements:
        measurements = read_measurements(Path(args.measurements), grid)
    else:
        truth = run_power_flow(grid)
        if not truth.converged:
            raise OpenDSOError(
                f"{grid.name}: the power flow that feeds the simulated measurements failed: {truth.error}"
            )
        measurements = measurements_from_power_flow(grid, truth, noise=args.noise, rng=np.random.default_rng(args.seed))
    result = run_state_estimation(grid, measurements, method=args.method)
    if args.json:
        emit_json(result.to_dict())
    else:
        data = result.to_dict()
        print(
            f"{grid.name}: state estimation {'converged' if data['converged'] else 'failed'}"
            f" ({data.get('method')}); observable: {data.get('observable')}"
        )
        if data.get("error"):
            print(f"  {data['error']}")
        for key in ("max_normalised_residual", "suspect_sensors"):
            if key in data:
                print(f"  {key.replace('_', ' ')}: {data[key]}")
    return 0 if result.converged else 1


def cmd_shortcircuit(args: argparse.Namespace) -> int:
    """Run short-circuit calculations (IEC 60909) at every node or the named ones."""
    from opendso.calc import run_short_circuit

    grid = load_valid_grid(args.grid)
    result = run_short_circuit(grid, fault_type=args.fault_type, case=args.case, nodes=args.node or None)
    data = result.to_dict()
    if args.json:
        emit_json(data)
    else:
        print(f"{grid.name}: {data.get('fault_type')} short circuit, {data.get('case')} case (IEC 60909)")
        for node in data.get("nodes", [])[: args.limit]:
            print(f"  {node['name']:40s} Ik'' = {node['ik_ka']:.3f} kA")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``powerflow``, ``timeseries``, ``estimate`` and ``shortcircuit``."""
    from opendso.calc import EstimationMethod, PowerFlowMethod

    methods = [m.value for m in PowerFlowMethod]
    p = sub.add_parser("powerflow", help="run one power flow")
    p.add_argument("grid", help="grid source")
    p.add_argument("--asym", action="store_true", help="unbalanced (three-phase) power flow")
    p.add_argument("--method", choices=methods, default="newton_raphson", help="calculation method")
    p.add_argument("--fallback-linear", action="store_true", help="re-run with the linear method if not converged")
    p.add_argument("--json", action="store_true", help="print one JSON object (see DESIGN.md)")
    p.set_defaults(func=cmd_powerflow)

    p = sub.add_parser("timeseries", help="run the grid's profiles as a time series")
    p.add_argument("grid", help="grid source with profiles (e.g. a SimBench grid)")
    p.add_argument("--steps", type=int, help="number of steps from the start")
    p.add_argument("--start", help="first time (ISO 8601, UTC)")
    p.add_argument("--end", help="end time, exclusive (ISO 8601, UTC)")
    p.add_argument("--method", choices=methods, default="iterative_current", help="calculation method")
    p.add_argument("--threads", type=int, default=0, help="threads (0: all hardware threads, -1: sequential)")
    p.add_argument("--fallback-linear", action="store_true", help="linear fallback for steps that do not converge")
    p.add_argument("--u-min", type=float, default=0.9, help="lower voltage limit (p.u.)")
    p.add_argument("--u-max", type=float, default=1.1, help="upper voltage limit (p.u.)")
    p.add_argument("--loading-max", type=float, default=1.0, help="loading limit (fraction)")
    p.add_argument("--out", help="write full node voltages and branch loadings to this Parquet file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-steps", action="store_true", help="with --json: totals only, no per-step records")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_timeseries)

    p = sub.add_parser("estimate", help="state estimation")
    p.add_argument("grid", help="grid source")
    p.add_argument(
        "--measurements",
        help="measurement file (CSV or JSON); default: the source's placements "
        "fed from a power flow with realistic noise",
    )
    p.add_argument("--noise", type=float, default=1.0, help="noise scale for simulated measurements (0: exact)")
    p.add_argument("--seed", type=int, default=0, help="random seed for simulated noise")
    p.add_argument(
        "--method",
        choices=[m.value for m in EstimationMethod],
        default=EstimationMethod.ITERATIVE_LINEAR.value,
        help="estimation method",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("shortcircuit", help="short-circuit currents (IEC 60909)")
    p.add_argument("grid", help="grid source")
    p.add_argument(
        "--fault-type",
        default="three_phase",
        choices=["three_phase", "single_phase_to_ground", "phase_to_phase", "two_phase_to_ground"],
    )
    p.add_argument("--case", choices=["max", "min"], default="max", help="maximum or minimum currents")
    p.add_argument("--node", action="append", help="faulted node by name (repeatable; default: every node)")
    p.add_argument("--limit", type=int, default=50, help="rows to print without --json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_shortcircuit)
