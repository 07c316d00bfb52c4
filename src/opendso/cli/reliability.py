"""``opendso reliability``: IEEE 1366 reliability indices from an outage CSV or from the database's outage records.

The calculation is :mod:`opendso.operations.reliability`'s; this module is the command-line
glue. ``--json`` prints exactly the keys of the issue-10 contract. A malformed file exits 2
naming the file, the row and the field. Without ``--outages`` the same report comes from the
outage records in the database (``--data-dir`` / ``--database-url``, as every command that opens
it), with CAIFI and CTAIDI added where the records know the customers individually
(:func:`opendso.operations.outages.report_from_store`). ``--feeder`` (repeatable) keeps the rows of
those feeders only: the indices of a feeder or an area, with ``--customers-served`` its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opendso.cli._common import Subparsers, emit_json, parse_cli_time
from opendso.cli.database import add_database_arguments, database_of
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["cmd_reliability", "register"]


def cmd_reliability(args: argparse.Namespace) -> int:
    """Run ``opendso reliability``: read the outage CSV (or the database's records), print the indices."""
    import numpy as np

    from opendso.operations.reliability import read_outage_csv, reliability_report, zone_of

    start = parse_cli_time(args.start, "--from")
    end = parse_cli_time(args.end, "--to")
    if end <= start:
        raise InputError(f"--to {args.end} must be after --from {args.start}")
    served = _customers_served(args.customers_served)
    zone = zone_of(args.tz)
    feeders = [f.strip() for f in args.feeder or ()]
    if args.outages:
        table = read_outage_csv(Path(args.outages))
        if feeders:
            table = table.select(np.isin(table.feeder.astype(str), feeders))
        report = reliability_report(table, customers_served=served, start=start, end=end, tz=zone)
    else:
        from opendso.operations.outages import report_from_store
        from opendso.store import Historian
        from opendso.store.outages import OutageStore

        choice = database_of(args)
        historian = Historian.open(choice.url, key_path=choice.key_path, must_exist=True)
        try:
            report = report_from_store(
                OutageStore(historian.engine), customers_served=served, start=start, end=end, tz=zone, feeders=feeders
            )
        finally:
            historian.close()
    payload = report.to_json()
    if args.json:
        emit_json(payload)
        return 0
    for key, value in payload.items():
        if key == "without_med":
            print("without major event days:")
            for inner, number in value.items():
                print(f"  {inner}: {_text(number)}")
        elif key == "major_event_days":
            print(f"{key}: {', '.join(value) if value else 'none'}")
        else:
            print(f"{key}: {_text(value)}")
    return 0


def _text(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _customers_served(text: str) -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or int(stripped) <= 0:
        raise InputError(f"--customers-served: {text!r} is not a positive whole number of customers")
    return int(stripped)


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``reliability``."""
    p = sub.add_parser(
        "reliability",
        help="IEEE 1366 reliability indices (SAIDI, SAIFI, CAIDI, ASAI, MAIFI_E, major event days) "
        "from an outage CSV or the database's outage records",
        description=(
            "Indices over the events that began in [--from, --to), major event days by the 2.5 beta method "
            "on daily SAIDI of the five years before --from, and the indices without them."
        ),
    )
    p.add_argument(
        "--outages",
        default=None,
        metavar="FILE.csv",
        help=(
            "outage CSV with columns event,start,end,customers,feeder,cause (ISO 8601 UTC times; an event restored "
            "in steps is several rows with one event id). Without it: the outage records in the database "
            "(with CAIFI and CTAIDI where they know the customers individually)"
        ),
    )
    p.add_argument(
        "--feeder",
        action="append",
        metavar="NAME",
        help="only rows of this feeder (repeat for an area); --customers-served is then the feeder's or area's",
    )
    add_database_arguments(p)
    p.add_argument("--customers-served", required=True, metavar="N", help="total customers served (N_T)")
    p.add_argument(
        "--from", dest="start", required=True, metavar="T", help="start of the period (ISO 8601; UTC when no offset)"
    )
    p.add_argument(
        "--to",
        dest="end",
        required=True,
        metavar="T",
        help="end of the period, excluded (ISO 8601; UTC when no offset)",
    )
    p.add_argument(
        "--tz",
        default="UTC",
        metavar="ZONE",
        help="IANA time zone of the calendar days (major event days); default UTC",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_reliability)
