"""The ``opendso hosting-capacity`` command: hosting capacity per node over the profiles, run on Dask.

``opendso hosting-capacity GRID [--node NAME ...] [--steps N] [--u-min 0.9 --u-max 1.1
--loading-max 1.0] [--scheduler ADDR] [--workers N] --json`` prints one JSON object
``{"grid", "steps", "nodes": [{"node", "generation_mw", "load_mw", "generation_limit": {"kind",
"element", "step"}, "load_limit": {...}}]}``. Exit 0 on success, 2 for bad input (an unknown node,
a grid without profiles, a bad limit or address), 1 when the calculation fails. ``--geojson FILE``
also writes the study as a GeoJSON FeatureCollection of Points at the nodes
(:func:`opendso.calc.hosting_capacity.hosting_geojson`: ``[lon, lat]`` on a geographic grid, else
schematic x/y marked in the properties) for GIS.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from opendso.cli._common import Subparsers, emit_json, load_valid_grid, progress
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["cmd_hosting_capacity", "register"]


def cmd_hosting_capacity(args: argparse.Namespace) -> int:
    """Run the hosting-capacity study and print it."""
    from opendso.calc.hc_dask import run_hosting_capacity
    from opendso.calc.timeseries import ViolationLimits

    if not 0 < args.u_min < args.u_max:
        raise InputError(f"--u-min {args.u_min} / --u-max {args.u_max}: need 0 < u_min < u_max")
    if not args.loading_max > 0:
        raise InputError(f"--loading-max {args.loading_max}: must be positive")
    if not getattr(args, "verbose", False):  # dask's own INFO lines (scheduler, nanny) only with -v
        import distributed  # noqa: F401 - it configures its loggers on import; quieten them after

        for name in list(logging.root.manager.loggerDict):
            if name == "distributed" or name.startswith("distributed."):
                logging.getLogger(name).setLevel(logging.WARNING)
    from opendso.calc.hosting_capacity import check_margin_filter

    check_margin_filter(args.margin_filter)  # before the grid loads: a bad value exits 2 at once
    grid = load_valid_grid(args.grid)
    limits = ViolationLimits(u_min_pu=args.u_min, u_max_pu=args.u_max, loading_max=args.loading_max)
    with progress(not args.quiet, "hosting capacity (nodes)") as update:
        result = run_hosting_capacity(
            grid,
            nodes=args.node or None,
            steps=args.steps,
            limits=limits,
            scheduler=args.scheduler,
            workers=args.workers,
            progress=update,
            margin_filter=args.margin_filter,
        )
    if args.geojson:
        from opendso.calc.hosting_capacity import hosting_geojson
        from opendso.grid.io.atomic import write_atomically

        write_atomically(Path(args.geojson), json.dumps(hosting_geojson(grid, result), indent=1) + "\n")
    if args.json:
        emit_json(result.to_dict())
        return 0
    print(f"{result.grid}: hosting capacity over {result.steps} steps, {len(result.nodes)} nodes")
    for n in result.nodes:
        gl = n.generation_limit
        ll = n.load_limit
        g_txt = f"{gl.kind} {gl.element} @ step {gl.step}" if gl else "-"
        l_txt = f"{ll.kind} {ll.element} @ step {ll.step}" if ll else "-"
        print(f"  {n.node}: generation {n.generation_mw:.3f} MW ({g_txt}), load {n.load_mw:.3f} MW ({l_txt})")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``hosting-capacity`` to the ``opendso`` command."""
    p = sub.add_parser(
        "hosting-capacity",
        help="largest extra generation and load per node over the profiles' steps (on Dask)",
        description=(
            "For every node (or the --node ones), the largest extra generation and load at unity power "
            "factor that keep every step within the voltage band and the loading limit; accurate to "
            "1 %% or 10 kW, whichever is larger."
        ),
    )
    p.add_argument("grid", help="grid source (simbench:CODE, pandapower:FILE, ...); it must have profiles")
    p.add_argument("--node", action="append", metavar="NAME", help="study this node (repeatable; default all)")
    p.add_argument("--steps", type=int, help="first N steps of the profiles (default: all)")
    p.add_argument("--u-min", type=float, default=0.9, help="lowest voltage, p.u. (default 0.9)")
    p.add_argument("--u-max", type=float, default=1.1, help="highest voltage, p.u. (default 1.1)")
    p.add_argument("--loading-max", type=float, default=1.0, help="highest branch loading (default 1.0)")
    p.add_argument(
        "--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:8786); default a LocalCluster"
    )
    p.add_argument("--workers", type=int, help="workers of the LocalCluster (default 1)")
    p.add_argument(
        "--margin-filter",
        type=float,
        metavar="ALLOWANCE",
        help="skip steps whose fitted margin exceeds this share of the change (e.g. 0.02, see the README;"
        " default: every step judged by a power flow)",
    )
    p.add_argument("--geojson", metavar="FILE", help="also write the study as GeoJSON (Points at the nodes) for GIS")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_hosting_capacity)
