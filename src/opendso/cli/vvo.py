"""The ``opendso vvo`` command: advisory Volt/VAR optimisation of one state of a grid.

``opendso vvo GRID [--step K] [--u-min 0.9 --u-max 1.1] [--pf-min 0.9] [--cvr] [--no-taps]
[--no-shunts] [--no-der-q] --json`` prints one JSON object: ``{"grid", "step", "advisory": true,
"solver", "settings", "in_band", "before": {"losses_mw", "u_min_pu", "u_max_pu", "violation_pu",
"load_mw", "load_cvr_mw"}, "after": {...}, "losses_saved_mw", "iterations", "power_flows",
"seconds", "taps": [{"transformer", "tap_before", "tap_after", "tap_min", "tap_max"}], "shunts":
[{"shunt", "status_before", "status_after"}], "ders": [{"der", "node", "p_mw", "q_before_mvar",
"q_after_mvar", "q_limit_mvar"}], "powerflow": {...as opendso powerflow --json}}``. Nothing is
sent to the field. Exit 0 on success, 2 for bad input (a step outside the profiles, a grid
without profiles given --step, a bad band or power factor), 1 when the calculation fails.
"""

from __future__ import annotations

import argparse

from opendso.cli._common import Subparsers, emit_json, load_valid_grid
from opendso.settings import Settings

__all__ = ["cmd_vvo", "register"]


def cmd_vvo(args: argparse.Namespace) -> int:
    """Optimise taps, shunts and DER Q of one state and print the advisory set-points."""
    from opendso.calc.vvo import VvoSettings, optimise_volt_var

    settings = VvoSettings(
        u_min_pu=args.u_min,
        u_max_pu=args.u_max,
        power_factor_min=args.pf_min,
        cvr=args.cvr,
        cvr_factor=args.cvr_factor,
        taps=not args.no_taps,
        shunts=not args.no_shunts,
        der_q=not args.no_der_q,
    )
    settings.check()  # before the grid is read: a bad band is named at once
    grid = load_valid_grid(args.grid)
    result = optimise_volt_var(grid, step=args.step, settings=settings)
    if args.json:
        emit_json(result.to_dict(with_powerflow=not args.no_powerflow))
        return 0
    b, a = result.before, result.after
    where = f"step {result.step}" if result.step is not None else "as found"
    print(f"{result.grid} ({where}): Volt/VAR optimisation (advisory, nothing sent)")
    print(f"  losses   {b.losses_mw * 1e3:9.2f} kW -> {a.losses_mw * 1e3:9.2f} kW")
    print(f"  voltage  {b.u_min_pu:.4f}..{b.u_max_pu:.4f} p.u. -> {a.u_min_pu:.4f}..{a.u_max_pu:.4f} p.u.")
    print(f"  in band  {'yes' if result.in_band else 'NO'} ({settings.u_min_pu}..{settings.u_max_pu} p.u.)")
    for t in result.taps:
        print(f"  tap {t.transformer}: {t.tap_before} -> {t.tap_after} ({t.tap_min}..{t.tap_max})")
    for s in result.shunts:
        print(f"  shunt {s.shunt}: {s.status_before} -> {s.status_after}")
    moved = [d for d in result.ders if abs(d.q_after_mvar - d.q_before_mvar) > 1e-6]
    print(f"  DER Q set-points changed: {len(moved)} of {len(result.ders)}")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``vvo`` to the ``opendso`` command."""
    p = sub.add_parser(
        "vvo",
        help="advisory Volt/VAR optimisation: taps, capacitor banks and DER Q (HiGHS)",
        description=(
            "Choose transformer taps, switched shunts and DER reactive power (within a power-factor "
            "limit) that keep every energised node in the voltage band at the least losses (or, with "
            "--cvr, the least voltage-dependent consumption too). Advisory: nothing is sent."
        ),
    )
    p.add_argument("grid", help="grid source (simbench:CODE, pandapower:FILE, ...)")
    p.add_argument("--step", type=int, help="optimise this step of the grid's profiles (default: the model as found)")
    p.add_argument("--u-min", type=float, default=0.9, help="lowest voltage, p.u. (default 0.9)")
    p.add_argument("--u-max", type=float, default=1.1, help="highest voltage, p.u. (default 1.1)")
    p.add_argument("--pf-min", type=float, default=0.9, help="DER power factor limit, |cos phi| (default 0.9)")
    p.add_argument("--cvr", action="store_true", help="conservation voltage reduction: also minimise consumption")
    p.add_argument("--cvr-factor", type=float, default=0.8, help="CVR factor: consumption ~ U^factor (default 0.8)")
    p.add_argument("--no-taps", action="store_true", help="leave transformer taps as found")
    p.add_argument("--no-shunts", action="store_true", help="leave shunts as found")
    p.add_argument("--no-der-q", action="store_true", help="leave DER reactive power as found")
    p.add_argument("--no-powerflow", action="store_true", help="leave the final power flow out of the JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_vvo)
