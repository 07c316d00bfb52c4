"""The ``opendso flex`` commands: aggregators' operating envelopes and the TSO-DSO day-ahead report.

``opendso flex envelopes --grid GRID [--issued TIME] [--steps N] [--rule proportional|equal]
[--u-min --u-max --loading-max] [--json]`` allocates every aggregator's import and export bound per
connection point and 15-minute interval, jointly, from the DER registry in the database (``opendso
der import``) and the grid's profiles (:func:`~opendso.markets.envelopes.allocate_envelopes`; the
JSON is :meth:`~opendso.markets.envelopes.EnvelopeAllocation.to_json`).

``opendso flex tso --grid GRID [--issued TIME] [--steps N] [--csv FILE] [--json]`` gives per
grid-supply point the scheduled exchange with its forecast band and the flexibility the DSO can
offer the TSO (:class:`~opendso.markets.tso.TsoInterface`; the JSON is
:meth:`~opendso.markets.tso.TsoReport.to_dict`, ``--csv`` writes the file the TSO takes).

``opendso flex local --grid GRID --feeder NAME --orders FILE.csv [--charges distance|voltage]
[--no-approval] [--json]`` clears a local market's order book (columns in
:func:`~opendso.markets.local.read_order_book`) per interval by the k-double auction, approves the
trades with a power flow (curtailing those that would cause a violation) and charges the network
by distance or voltage level (:meth:`~opendso.markets.local.MarketResult.to_json`). An unknown
feeder is named with the feeders the grid has.

``--issued`` defaults to now moved into the profiles' year. Exit 2 for bad input (an unknown grid,
a grid without profiles, a bad time or number), 1 when the calculation fails.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opendso.cli._common import Subparsers, emit_json, load_valid_grid, parse_cli_time
from opendso.cli.database import add_database_arguments, database_of
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.settings import Settings

__all__ = ["cmd_flex_envelopes", "cmd_flex_local", "cmd_flex_tso", "register"]


def _issued(args: argparse.Namespace, grid: Grid) -> datetime:
    from opendso.planning.congestion import issue_time_in_profiles

    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    if args.issued:
        return parse_cli_time(args.issued, "--issued")
    return issue_time_in_profiles(grid, datetime.now(UTC))


def _with_registry(args: argparse.Namespace, grid: Grid, work: Any) -> Any:
    from opendso.der import DerRegistry
    from opendso.store import Historian
    from opendso.store.der import DerStore

    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
    try:
        return work(DerRegistry(DerStore(historian.engine), grid))
    finally:
        historian.close()


def cmd_flex_envelopes(args: argparse.Namespace) -> int:
    """Allocate the operating envelopes and print them."""
    import pandas as pd

    from opendso.calc.timeseries import ViolationLimits
    from opendso.markets.envelopes import allocate_envelopes, connection_points
    from opendso.planning.history import profile_times

    if not 1 <= args.steps <= 672:
        raise InputError(f"--steps {args.steps}: must be 1..672")
    if not 0 < args.u_min < args.u_max:
        raise InputError(f"--u-min {args.u_min} / --u-max {args.u_max}: need 0 < u_min < u_max")
    if not args.loading_max > 0:
        raise InputError(f"--loading-max {args.loading_max}: must be positive")
    grid = load_valid_grid(args.grid)
    issued = _issued(args, grid)
    known = profile_times(grid)
    times = [t.to_pydatetime() for t in known[known >= pd.Timestamp(issued)][: args.steps]]
    if not times:
        raise InputError(f"--issued {issued.isoformat()}: after the grid's profiles ({known[-1].isoformat()})")
    points = _with_registry(args, grid, connection_points)
    if not points:
        raise InputError("the DER registry has no connected asset with an aggregator (opendso der import)")
    limits = ViolationLimits(u_min_pu=args.u_min, u_max_pu=args.u_max, loading_max=args.loading_max)
    allocation = allocate_envelopes(grid, points, times=times, rule=args.rule, limits=limits)
    payload = allocation.to_json()
    if args.json:
        emit_json(payload)
        return 0
    print(
        f"{grid.name}: operating envelopes ({args.rule}) for {len(payload['envelopes'])} aggregator(s), "
        f"{len(times)} interval(s) from {payload['intervals'][0]['time']}, {allocation.seconds:.2f} s"
    )
    for envelope in allocation.envelopes.values():
        for point in envelope.points:
            print(
                f"  {envelope.aggregator} at {point.point.node}: import <= {min(point.import_max_w) / 1e3:,.1f} kW, "
                f"export <= {min(point.export_max_w) / 1e3:,.1f} kW (the tightest interval)"
            )
    return 0


def cmd_flex_tso(args: argparse.Namespace) -> int:
    """Make the TSO-DSO day-ahead report and print or write it."""
    from opendso.markets.tso import TsoInterface

    if not 1 <= args.steps <= 672:
        raise InputError(f"--steps {args.steps}: must be 1..672")
    grid = load_valid_grid(args.grid)
    issued = _issued(args, grid)
    report = _with_registry(
        args, grid, lambda registry: TsoInterface(grid, registry).day_ahead(issued, steps=args.steps)
    )
    if args.csv:
        report.write_csv(Path(args.csv))
    payload = report.to_dict()
    if args.json:
        emit_json(payload)
        return 0
    print(
        f"{grid.name}: TSO-DSO day-ahead report issued {payload['issued']}, {len(payload['gsps'])} grid-supply point(s)"
    )
    for gsp in payload["gsps"]:
        rows = gsp["intervals"]
        print(f"  {gsp['gsp']}: {len(rows)} interval(s)" + (f", written to {args.csv}" if args.csv else ""))
    return 0


def cmd_flex_local(args: argparse.Namespace) -> int:
    """Clear, approve and charge a local market's order book and print the result."""
    from opendso.grid.topology import analyse_topology
    from opendso.markets.local import ChargeBasis, LocalMarket, NetworkTariff, read_order_book

    grid = load_valid_grid(args.grid)
    feeders = sorted(str(f) for f in analyse_topology(grid).feeders.name.tolist())
    if args.feeder not in feeders:
        shown = ", ".join(repr(f) for f in feeders[:20]) + (" ..." if len(feeders) > 20 else "")
        raise InputError(f"--feeder {args.feeder!r} is not a feeder of {grid.name} (feeders: {shown})")
    basis = ChargeBasis.DISTANCE if args.charges == "distance" else ChargeBasis.VOLTAGE_LEVEL
    market = LocalMarket(grid, args.feeder, tariff=NetworkTariff(basis))
    orders = read_order_book(args.orders, nodes=market.nodes)
    result = market.run(orders, approve=not args.no_approval)
    payload = result.to_json()
    if args.json:
        emit_json(payload)
        return 0
    print(f"{grid.name}, feeder {args.feeder}: {len(orders)} order(s), {len(payload['intervals'])} interval(s)")
    for row in payload["intervals"]:
        price = row["price_eur_per_kwh"]
        print(
            f"  {row['interval']}: cleared {row['cleared_kwh']:.3f} kWh, approved {row['approved_kwh']:.3f} kWh"
            + (f" at {price:.4f} EUR/kWh" if price is not None else "")
        )
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``flex envelopes`` and ``flex tso``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "flex", help="flexibility: aggregators' operating envelopes, the TSO-DSO day-ahead report"
    )
    actions = parser.add_subparsers(dest="flex_action", required=True)
    env = actions.add_parser(
        "envelopes", help="every aggregator's import and export bound per connection point and interval"
    )
    env.add_argument("--grid", required=True, help="grid source with profiles (simbench:CODE, pandapower:FILE, ...)")
    env.add_argument("--issued", metavar="TIME", help="first interval, ISO 8601; default now in the profiles' year")
    env.add_argument("--steps", type=int, default=96, help="15-minute intervals (default 96: a day)")
    env.add_argument("--rule", choices=("proportional", "equal"), default="proportional", help="allocation rule")
    env.add_argument("--u-min", type=float, default=0.9, help="lowest voltage, p.u. (default 0.9)")
    env.add_argument("--u-max", type=float, default=1.1, help="highest voltage, p.u. (default 1.1)")
    env.add_argument("--loading-max", type=float, default=1.0, help="highest branch loading (default 1.0)")
    add_database_arguments(env)
    env.add_argument("--json", action="store_true", help="print one JSON object")
    env.set_defaults(func=cmd_flex_envelopes)
    tso = actions.add_parser(
        "tso", help="per grid-supply point: the day-ahead exchange and the flexibility offered to the TSO"
    )
    tso.add_argument("--grid", required=True, help="grid source with profiles")
    tso.add_argument("--issued", metavar="TIME", help="first interval, ISO 8601; default now in the profiles' year")
    tso.add_argument("--steps", type=int, default=96, help="15-minute intervals (default 96: a day)")
    tso.add_argument("--csv", metavar="FILE", help="also write the report as CSV (the TSO's file)")
    add_database_arguments(tso)
    tso.add_argument("--json", action="store_true", help="print one JSON object")
    tso.set_defaults(func=cmd_flex_tso)
    loc = actions.add_parser(
        "local", help="a local market's order book: double auction per interval, network approval, charges"
    )
    loc.add_argument("--grid", required=True, help="grid source with profiles")
    loc.add_argument("--feeder", required=True, help="the feeder of the market (as the grid's topology names it)")
    loc.add_argument("--orders", required=True, metavar="FILE.csv", help="the order book CSV")
    loc.add_argument("--charges", choices=("distance", "voltage"), default="distance", help="network charge basis")
    loc.add_argument("--no-approval", action="store_true", help="clear without the network check (for comparison)")
    loc.add_argument("--json", action="store_true", help="print one JSON object")
    loc.set_defaults(func=cmd_flex_local)
