"""``opendso grid``: inspect, validate, export and list grids."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from opendso.cli._common import Subparsers, emit_json, load_valid_grid
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["cmd_grid_export", "cmd_grid_info", "cmd_grid_list", "cmd_grid_validate", "register"]


def cmd_grid_info(args: argparse.Namespace) -> int:
    """Print what a grid holds."""
    import numpy as np

    from opendso.grid import analyse_topology, load_grid

    grid = load_grid(args.grid)
    u_rated = grid.component("node")["u_rated"]
    info: dict[str, Any] = {
        "grid": grid.name,
        "elements": grid.summary(),
        "voltage_levels_kv": sorted({round(float(u) / 1e3, 3) for u in np.unique(u_rated)}),
        "coordinates": int(np.isfinite(grid.node_xy).all(axis=1).sum()) if grid.node_xy.size else 0,
        "open_switches": int((grid.switches["closed"] == 0).sum()) if grid.switches.size else 0,
        "profile_steps": grid.profiles.steps if grid.profiles is not None else 0,
    }
    topo = analyse_topology(grid)
    info["topology"] = {
        "islands": int(topo.n_components),
        "islands_without_source": len(topo.islands_without_source),
        "de_energised_nodes": int((~topo.node_energised).sum()),
        "radial": bool(topo.radial),
        "substations": int(topo.substations.id.size),
        "feeders": int(topo.feeders.id.size),
        "meshed_feeders": int((topo.feeders.cycles > 0).sum()),
        "normally_open_points": sorted(str(n) for n in topo.normally_open.switch_name),
    }
    if grid.profiles is not None and grid.profiles.steps:
        info["profile_start"] = str(np.datetime_as_string(grid.profiles.time[0], unit="s")) + "Z"
        info["profile_end"] = str(np.datetime_as_string(grid.profiles.time[-1], unit="s")) + "Z"
    if args.json:
        emit_json(info)
        return 0
    print(f"grid {info['grid']}")
    for key, count in info["elements"].items():
        print(f"  {key:28s} {count:>8d}")
    print(f"  voltage levels (kV)          {', '.join(str(v) for v in info['voltage_levels_kv'])}")
    print(f"  nodes with coordinates       {info['coordinates']:>8d}")
    print(f"  open switches                {info['open_switches']:>8d}")
    print(f"  profile steps                {info['profile_steps']:>8d}")
    topology = info["topology"]
    print(
        f"  islands                      {topology['islands']:>8d}"
        f" ({topology['islands_without_source']} without source)"
    )
    print(f"  de-energised nodes           {topology['de_energised_nodes']:>8d}")
    print(
        f"  substations / feeders        {topology['substations']:>8d} / {topology['feeders']}"
        f" ({topology['meshed_feeders']} meshed)"
    )
    print(f"  normally-open points         {len(topology['normally_open_points']):>8d}")
    return 0


def cmd_grid_validate(args: argparse.Namespace) -> int:
    """Validate a grid; exit 2 listing every finding when it is not valid."""
    from opendso.grid import load_grid, validate_grid

    grid = load_grid(args.grid)
    findings = validate_grid(grid, symmetric=not args.asym)
    if args.json:
        emit_json(
            {
                "grid": grid.name,
                "valid": not findings,
                "findings": [
                    {
                        "component": f.component,
                        "field": f.field,
                        "ids": list(f.ids),
                        "names": list(f.names),
                        "message": f.message,
                    }
                    for f in findings
                ],
            }
        )
    elif findings:
        for finding in findings:
            print(f"{grid.name}: {finding}", file=sys.stderr)
    else:
        print(f"{grid.name}: valid ({sum(grid.summary().values())} elements)")
    return 2 if findings else 0


def cmd_grid_export(args: argparse.Namespace) -> int:
    """Export a grid to power-grid-model JSON or pandapower JSON."""
    target: str = args.to
    scheme, _, path = target.partition(":")
    if scheme not in ("pgm", "pandapower") or not path:
        raise InputError(f"--to {target}: expected pgm:<file.json> or pandapower:<file.json>")
    grid = load_valid_grid(args.grid)
    if scheme == "pgm":
        from opendso.grid import write_pgm_json

        write_pgm_json(grid, Path(path))
    else:
        from opendso.grid import write_pandapower_json

        write_pandapower_json(grid, Path(path))
    print(f"{grid.name}: written to {target}", file=sys.stderr)
    return 0


def cmd_grid_list(args: argparse.Namespace) -> int:
    """List the SimBench codes the installed simbench package ships."""
    from opendso.grid.sources import simbench_codes

    for code in sorted(simbench_codes()):
        print(f"simbench:{code}")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``grid info|validate|export|list-simbench``."""
    grid = sub.add_parser("grid", help="inspect, validate and export grids")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True, metavar="ACTION")
    p = grid_sub.add_parser("info", help="what a grid holds")
    p.add_argument("grid", help="grid source, e.g. simbench:1-MV-urban--0-sw, pandapower:net.json, demo")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grid_info)
    p = grid_sub.add_parser("validate", help="check a grid's data; exit 2 listing every problem")
    p.add_argument("grid", help="grid source")
    p.add_argument("--asym", action="store_true", help="validate for unbalanced calculations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grid_validate)
    p = grid_sub.add_parser("export", help="write a grid as power-grid-model or pandapower JSON")
    p.add_argument("grid", help="grid source")
    p.add_argument("--to", required=True, help="pgm:<file.json> or pandapower:<file.json>")
    p.set_defaults(func=cmd_grid_export)
    p = grid_sub.add_parser("list-simbench", help="list the SimBench grid codes available")
    p.set_defaults(func=cmd_grid_list)
