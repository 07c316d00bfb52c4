"""The ``opendso congestion`` command: the congestion forecast of the next 48 hours.

``opendso congestion GRID [--issued TIME] [--scenarios N] [--steps N] [--seed N] [--u-min 0.9
--u-max 1.1 --loading-max 1.0] [--min-probability P] [--json]`` makes the history of the grid's
loads and generators (its profiles with noise), the weekly-profile quantile forecast issued at
``TIME`` (default: now, moved into the profiles' year), the Gaussian copula of the previous
week's forecast errors, and runs ``N`` correlated scenarios through the batch power flow. With
``--json`` it prints one object (:meth:`~opendso.planning.congestion.CongestionForecast.to_dict`):
``{"grid", "issued", "method", "scenarios", "steps", "time": [...], "limits", "elements_judged",
"elements": [{"element", "kind", "id", "quantity", "max_probability", "probability": [...],
"median": [...], "violations": [{"interval", "time", "probability", "excess", "excess_mva",
"median", "relieve": [{"node", "p_mw", "q_mvar"}]}]}], "seconds"}``. Exit 2 for bad input (an
unknown grid, a grid without profiles, a bad time or number, too little history before the
issue time), 1 when the calculation fails.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from opendso.cli._common import Subparsers, emit_json, load_valid_grid, parse_cli_time
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["cmd_congestion", "register"]


def cmd_congestion(args: argparse.Namespace) -> int:
    """Run the congestion forecast and print it."""
    from opendso.calc.timeseries import ViolationLimits
    from opendso.planning.congestion import congestion_outlook, issue_time_in_profiles

    if not 0 < args.u_min < args.u_max:
        raise InputError(f"--u-min {args.u_min} / --u-max {args.u_max}: need 0 < u_min < u_max")
    if not args.loading_max > 0:
        raise InputError(f"--loading-max {args.loading_max}: must be positive")
    if not 0 <= args.min_probability < 1:
        raise InputError(f"--min-probability {args.min_probability}: must lie in [0, 1)")
    issued = parse_cli_time(args.issued, "--issued") if args.issued else None
    grid = load_valid_grid(args.grid)
    if issued is None:
        issued = issue_time_in_profiles(grid, datetime.now(UTC))
    limits = ViolationLimits(u_min_pu=args.u_min, u_max_pu=args.u_max, loading_max=args.loading_max)
    result = congestion_outlook(grid, issued, steps=args.steps, scenarios=args.scenarios, seed=args.seed, limits=limits)
    payload = result.to_dict(min_probability=args.min_probability)
    if args.json:
        emit_json(payload)
        return 0
    print(
        f"{payload['grid']}: congestion forecast issued {payload['issued']}, {payload['steps']} intervals, "
        f"{payload['scenarios']} scenarios ({payload['method']}), {len(payload['elements'])} element(s) at risk"
    )
    for element in payload["elements"]:
        worst = max(element["violations"], key=lambda v: v["probability"])
        size = f"{worst['excess_mva']:.3f} MVA over" if "excess_mva" in worst else f"{worst['excess']:.4f} p.u. beyond"
        print(
            f"  {element['kind']} {element['element']}: up to {element['max_probability']:.0%} "
            f"at {worst['time']} ({size}), {len(element['violations'])} interval(s)"
        )
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``congestion`` to the ``opendso`` command."""
    p = sub.add_parser(
        "congestion",
        help="congestion forecast: probability and size of violations per element and interval",
        description=(
            "Per line, transformer and node and 15-minute interval of the horizon: the probability of a "
            "voltage or thermal violation from correlated forecast scenarios (Gaussian copula) through the "
            "batch power flow, its size and where to relieve it."
        ),
    )
    p.add_argument("grid", help="grid source (simbench:CODE, pandapower:FILE, ...); it must have profiles")
    p.add_argument(
        "--issued",
        metavar="TIME",
        help="issue time, ISO 8601 (UTC when no zone is given); default now, moved into the profiles' year",
    )
    p.add_argument("--scenarios", type=int, default=200, help="correlated scenarios (default 200)")
    p.add_argument("--steps", type=int, default=192, help="15-minute intervals ahead (default 192: 48 h)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenario sampling (default 0)")
    p.add_argument("--u-min", type=float, default=0.9, help="lowest voltage, p.u. (default 0.9)")
    p.add_argument("--u-max", type=float, default=1.1, help="highest voltage, p.u. (default 1.1)")
    p.add_argument("--loading-max", type=float, default=1.0, help="highest branch loading (default 1.0)")
    p.add_argument(
        "--min-probability", type=float, default=0.0, help="list elements above this probability (default 0: any)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_congestion)
