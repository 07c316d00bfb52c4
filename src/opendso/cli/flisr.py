"""``opendso flisr``: simulate a fault at a node, locate it, and plan isolation and restoration.

The planning is :mod:`opendso.operations.flisr`'s; this module is the command-line glue.
``--json`` prints exactly the object of the issue-10 contract (see the README's "FLISR"
section). An unknown grid, an unknown node or a node outside any feeder exits 2 naming it.
"""

from __future__ import annotations

import argparse
import math

from opendso.cli._common import Subparsers, emit_json, load_valid_grid
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["cmd_flisr", "register"]


def cmd_flisr(args: argparse.Namespace) -> int:
    """Run ``opendso flisr``: print the plan for a fault at ``--fault``."""
    from opendso.operations.flisr import FlisrLimits, simulate_fault_and_plan

    limits = FlisrLimits(u_min=args.u_min, u_max=args.u_max, loading_max=args.loading_max)
    if args.cold_load_pickup < 1.0:
        raise InputError(f"--cold-load-pickup {args.cold_load_pickup} must be at least 1")
    grid = load_valid_grid(args.grid, validate=False)
    plan = simulate_fault_and_plan(grid, args.fault, limits=limits, cold_load_pickup=args.cold_load_pickup)
    payload = plan.to_json()
    if args.json:
        emit_json(payload)
        return 0
    print(f"grid: {plan.grid}")
    print(f"fault at {plan.fault}: breaker {plan.tripped} trips")
    if plan.located:
        best = plan.located[0]
        print(f"located: {', '.join(best.elements)} (confidence {best.confidence:.2f}; {len(plan.located)} candidates)")
    print(f"isolate (open): {', '.join(plan.isolate) or 'nothing more'}")
    for step, (switch, action) in enumerate(plan.restore, start=1):
        print(f"restore {step}: {action} {switch}")
    print(
        f"customers: {plan.customers_interrupted} interrupted, {plan.customers_restored} restored, "
        f"{plan.customers_off} off"
    )
    for v in plan.violations:
        print(f"violation: {v.element} {v.kind} {v.value:.4g} (limit {v.limit:g})")
    print(f"planned in {plan.plan_ms:.1f} ms")
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive finite number")
    return value


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``flisr``."""
    del settings
    p = sub.add_parser(
        "flisr",
        help="simulate a fault at a node and plan FLISR (fault location, isolation, service restoration)",
        description=(
            "On the grid as its source gives it, the feeder breaker of NODE trips, the fault-passage "
            "indicators pick up as the field simulator sets them, the fault is located, the faulted section "
            "isolated with the nearest remote-controlled switches, the breaker reclosed and the healthy "
            "downstream sections restored through normally-open points, checked by power flow with the "
            "generation of the interrupted region at zero."
        ),
    )
    p.add_argument("grid", metavar="GRID", help="grid source (simbench:<code>, pandapower:<file.json>, ...)")
    p.add_argument("--fault", required=True, metavar="NODE", help="name of the faulted node")
    p.add_argument("--u-min", type=_positive, default=0.9, help="lowest voltage allowed, p.u. (default 0.9)")
    p.add_argument("--u-max", type=_positive, default=1.1, help="highest voltage allowed, p.u. (default 1.1)")
    p.add_argument(
        "--loading-max", type=_positive, default=1.0, help="highest branch loading allowed, fraction (default 1.0)"
    )
    p.add_argument(
        "--cold-load-pickup",
        type=_positive,
        default=1.0,
        help="factor on the interrupted region's loads when restored (default 1.0)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=cmd_flisr)
