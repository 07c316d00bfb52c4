"""``opendso der import FILE.csv``, ``opendso der list`` and ``opendso der queue``: the DER registry.

``import`` reads a registry CSV (the columns of :mod:`opendso.der.csv`: one row per asset, with
its connection request when it has one), checks every row against the grid's node names and the
ids already stored, and stores it all in one transaction; a malformed file exits 2 naming the
file and, for every problem, the row and the field, and nothing is stored. ``list`` prints the
assets, ``queue`` the connection queue (received time order, with positions), ``study REQUEST_ID
--grid SRC [--steps N]`` the connection study of :mod:`opendso.der.studies` (an unknown request
exits 2). All take
``--data-dir`` / ``--database-url`` as every command that opens the database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opendso.cli._common import Subparsers, emit_json, load_valid_grid
from opendso.cli.database import add_database_arguments, cli_actor, database_of
from opendso.settings import Settings

__all__ = ["cmd_der_import", "cmd_der_list", "cmd_der_queue", "cmd_der_study", "register"]


def cmd_der_import(args: argparse.Namespace) -> int:
    """Run ``opendso der import``: store the CSV's assets and requests (all or nothing)."""
    from opendso.der import DerRegistry, read_der_csv
    from opendso.service.audit import AuditTrail
    from opendso.store import Historian
    from opendso.store.der import DerStore

    path = Path(args.file)
    grid = load_valid_grid(args.grid, validate=False)
    nodes = {str(n) for n in grid.names_of("node").tolist()}
    read_der_csv(path, nodes=nodes)  # a malformed file names its rows before the database is opened
    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path)
    try:
        store = DerStore(historian.engine)
        actor = cli_actor()
        table = read_der_csv(
            path,
            nodes=nodes,
            stored_assets={r.id for r in store.assets()},
            stored_requests={r.id for r in store.requests()},
            actor=actor,
        )
        registry = DerRegistry(store, grid, events=historian.events.append, audit=AuditTrail(historian.engine).append)
        summary = registry.import_records(table.assets, table.requests, actor=actor, source=path.name)
    finally:
        historian.close()
    payload = {"assets": summary.assets, "requests": summary.requests, "database": historian.url}
    if args.json:
        emit_json(payload)
    else:
        print(f"imported {summary.assets} asset(s) and {summary.requests} request(s) into {historian.url}")
    return 0


def cmd_der_list(args: argparse.Namespace) -> int:
    """Run ``opendso der list``: the assets by id (JSON or one line each)."""
    from opendso.der import DerRegistry
    from opendso.store import Historian
    from opendso.store.der import DerStore

    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
    try:
        assets = DerRegistry(DerStore(historian.engine), None).assets(kind=args.kind, node=args.node)
    finally:
        historian.close()
    if args.json:
        emit_json([{**a.to_json(), "version": v} for a, v in assets])
        return 0
    if not assets:
        print("no DER assets")
    for a, _ in assets:
        agreement = a.agreement.kind.value
        if a.agreement.flexible and a.agreement.principle is not None:
            agreement += f" {a.agreement.principle.value} cap {a.agreement.curtailment_cap_pct:g}%"
            agreement += f" limit {a.agreement.export_limit_kw:g} kW"
        print(
            f"{a.id:<16} {a.kind.value:<13} node {a.node:<20} export {a.export_kw:>9g} kW "
            f"import {a.import_kw:>9g} kW  {agreement}  {a.owner}"
        )
    return 0


def cmd_der_queue(args: argparse.Namespace) -> int:
    """Run ``opendso der queue``: the connection queue, first come first (JSON or one line each)."""
    from opendso.der import DerRegistry
    from opendso.store import Historian
    from opendso.store.der import DerStore

    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
    try:
        queue = DerRegistry(DerStore(historian.engine), None).queue()
    finally:
        historian.close()
    if args.json:
        emit_json([e.to_json() for e in queue])
        return 0
    if not queue:
        print("the connection queue is empty")
    for e in queue:
        print(
            f"{e.position:>4} {e.request.id:<16} {e.request.status.value:<9} {e.request.received_at.isoformat()} "
            f"asset {e.asset.id} ({e.asset.kind.value}, {e.asset.export_kw:g} kW export) node {e.asset.node}"
        )
    return 0


def cmd_der_study(args: argparse.Namespace) -> int:
    """Run ``opendso der study``: firm capacity and curtailment per principle of access for one request."""
    from opendso.der import DerRegistry
    from opendso.der.studies import connection_study
    from opendso.store import Historian
    from opendso.store.der import DerStore

    grid = load_valid_grid(args.grid)
    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
    try:
        study = connection_study(DerRegistry(DerStore(historian.engine), grid), args.request_id, steps=args.steps)
    finally:
        historian.close()
    if args.json:
        emit_json(study.to_dict())
        return 0
    print(
        f"{study.request_id} (asset {study.asset_id} at {study.node}) on {study.grid}, {study.steps} steps: "
        f"firm export {study.firm_export_kw:g} kW of generation hosting capacity {study.firm.generation_mw * 1e3:g} kW"
    )
    for p in study.principles:
        print(
            f"  {p.principle.value:<15} request curtailed {p.request.curtailed_mwh:.3f} MWh "
            f"({p.request.curtailed_pct:.2f} %), others {sum(o.curtailed_mwh for o in p.others):.3f} MWh, "
            f"{'verified' if p.verified else 'NOT verified'}"
        )
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``der import``, ``der list`` and ``der queue``."""
    parser: argparse.ArgumentParser = sub.add_parser("der", help="DER registry and connection queue")
    actions = parser.add_subparsers(dest="der_action", required=True)
    imp = actions.add_parser(
        "import", help="store a registry CSV (one row per asset, with its request), all or nothing"
    )
    imp.add_argument("file", metavar="FILE.csv", help="the registry CSV (columns in the README)")
    imp.add_argument("--grid", required=True, help="the grid source whose nodes are the connection points")
    add_database_arguments(imp)
    imp.add_argument("--json", action="store_true", help="print one JSON object")
    imp.set_defaults(func=cmd_der_import)
    lst = actions.add_parser("list", help="the DER assets by id")
    add_database_arguments(lst)
    lst.add_argument("--kind", choices=("pv", "wind", "battery", "ev_hub", "heat_pumps", "flexible_load"))
    lst.add_argument("--node", help="only assets at this node")
    lst.add_argument("--json", action="store_true", help="print a JSON list")
    lst.set_defaults(func=cmd_der_list)
    que = actions.add_parser("queue", help="the connection queue, first come first")
    add_database_arguments(que)
    que.add_argument("--json", action="store_true", help="print a JSON list")
    que.set_defaults(func=cmd_der_queue)
    stu = actions.add_parser(
        "study", help="firm capacity now and expected curtailment per principle of access for one request"
    )
    stu.add_argument("request_id", metavar="REQUEST_ID", help="the connection request to study")
    stu.add_argument("--grid", required=True, help="the grid source, with profiles")
    stu.add_argument("--steps", type=int, help="first N steps of the profiles (default: all)")
    add_database_arguments(stu)
    stu.add_argument("--json", action="store_true", help="print one JSON object")
    stu.set_defaults(func=cmd_der_study)
