"""``opendso history``: raw values of a point from the historian, or aggregates per interval."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from opendso.cli._common import Subparsers, emit_json, parse_cli_time
from opendso.settings import Settings

__all__ = ["cmd_history", "register"]


def cmd_history(args: argparse.Namespace) -> int:
    """Query the historian: raw values of a point, or aggregates per interval."""
    from opendso.store import Historian

    start = parse_cli_time(args.start, "--from")
    end = parse_cli_time(args.end, "--to") if args.end else datetime.now(UTC)
    historian = Historian.open(args.database_url)
    try:
        if args.interval:
            frame = historian.aggregate(args.point, start, end, timedelta(seconds=args.interval))
        else:
            frame = historian.read_range(args.point, start, end)
    finally:
        historian.close()
    if args.json:
        emit_json(json.loads(frame.to_json(orient="records", date_format="iso")))
    else:
        print(frame.to_string(index=False) if len(frame) else f"{args.point}: no values in that range")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``history``."""
    p = sub.add_parser("history", help="query the historian")
    p.add_argument("point", help="point name")
    p.add_argument("--from", dest="start", required=True, help="start time (ISO 8601; UTC when no offset)")
    p.add_argument("--to", dest="end", help="end time, exclusive (default: now)")
    p.add_argument("--interval", type=float, help="aggregate per this many seconds (min/max/mean/count)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.set_defaults(func=cmd_history)
