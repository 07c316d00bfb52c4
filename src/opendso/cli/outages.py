"""``opendso outages import FILE.csv`` and ``opendso outages list``: the outage records in the database.

``import`` reads an outage CSV of the ``opendso reliability`` contract (columns
``event,start,end,customers,feeder,cause``) and stores one restored outage per event, every row
a restoration step, in one transaction: a malformed file, or an event id imported before, exits 2
naming the file and the row, and the database is untouched. ``list`` prints the outages, newest
first. Both take ``--data-dir`` / ``--database-url`` as every command that opens the database.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from opendso.cli._common import Subparsers, emit_json
from opendso.cli.database import add_database_arguments, cli_actor, database_of
from opendso.errors import OutageFileError
from opendso.settings import Settings

__all__ = ["cmd_outages_import", "cmd_outages_list", "register"]


def cmd_outages_import(args: argparse.Namespace) -> int:
    """Run ``opendso outages import``: store the CSV's events as restored outages (all or nothing)."""
    from opendso.operations.outages import OutageSource, import_outage_table
    from opendso.operations.reliability import read_outage_csv
    from opendso.service.audit import AuditTrail
    from opendso.store import Historian
    from opendso.store.outages import OutageStore

    path = Path(args.file)
    table = read_outage_csv(path)  # a malformed file names its row before the database is opened
    actor = cli_actor()
    records = import_outage_table(table, actor=actor)
    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path)
    try:
        store = OutageStore(historian.engine)
        stored = store.external_ids(str(OutageSource.IMPORT), (r.external_id or "" for r in records))
        if stored:
            first = min(
                (int(table.row[k]) if table.row is not None else k + 1, str(e))
                for k, e in enumerate(table.event.tolist())
                if str(e) in stored
            )
            raise OutageFileError(
                str(path),
                f"event {first[1]!r} is in the database already (imported before)",
                row=first[0],
                field="event",
            )
        saved = store.save_many(records, now=datetime.now(UTC))
        AuditTrail(historian.engine).append(
            "outage.import",
            actor=actor,
            element=f"outages:{saved[0].id}-{saved[-1].id}" if saved else "outages",
            details={"file": path.name, "events": len(saved), "rows": len(table)},
        )
    finally:
        historian.close()
    payload = {"imported": len(saved), "rows": len(table), "database": historian.url}
    if args.json:
        emit_json(payload)
    else:
        print(f"imported {len(saved)} outage(s) from {len(table)} row(s) into {historian.url}")
    return 0


def cmd_outages_list(args: argparse.Namespace) -> int:
    """Run ``opendso outages list``: the outages newest first (JSON or one line each)."""
    from opendso.store import Historian
    from opendso.store.outages import OutageStore

    choice = database_of(args)
    historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
    try:
        records = OutageStore(historian.engine).select(states=args.state or (), limit=args.limit)
    finally:
        historian.close()
    if args.json:
        emit_json([r.to_dict() for r in records])
        return 0
    if not records:
        print("no outages")
    for r in records:
        end = r.end.isoformat() if r.end else "-"
        print(
            f"{r.id:>6} {r.state:<10} {r.source:<8} {r.start.isoformat()} .. {end} customers {r.customers} "
            f"off {r.customers_off} device {r.device or '-'} feeder {r.feeder or '-'} cause {r.cause or '-'}"
        )
    return 0


def _limit(text: str) -> int:
    from opendso.errors import InputError

    if not text.strip().isdigit() or not 1 <= int(text) <= 100_000:
        raise InputError(f"--limit: {text!r} is not a whole number from 1 to 100000")
    return int(text)


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``outages import`` and ``outages list``."""
    parser: argparse.ArgumentParser = sub.add_parser("outages", help="outage records: import a history, list them")
    actions = parser.add_subparsers(dest="outages_action", required=True)
    imp = actions.add_parser(
        "import",
        help="store an outage CSV (event,start,end,customers,feeder,cause) as restored outages, all or nothing",
    )
    imp.add_argument("file", metavar="FILE.csv", help="the outage CSV of the `opendso reliability` contract")
    add_database_arguments(imp)
    imp.add_argument("--json", action="store_true", help="print one JSON object")
    imp.set_defaults(func=cmd_outages_import)
    lst = actions.add_parser("list", help="the outages, newest first")
    add_database_arguments(lst)
    lst.add_argument(
        "--state",
        action="append",
        choices=("predicted", "confirmed", "restoring", "restored", "cancelled"),
        help="only outages in this state (repeat for several)",
    )
    lst.add_argument("--limit", type=_limit, default=100, help="at most this many (default 100)")
    lst.add_argument("--json", action="store_true", help="print a JSON list")
    lst.set_defaults(func=cmd_outages_list)
