"""``opendso audit verify`` and ``opendso audit reseal``: check the keyed chains, or start a new key.

The checks are :func:`opendso.service.audit.integrity_report`'s (the API's ``/api/audit/verify``
uses the same); this module is the command-line glue. ``verify`` exits 0 when everything is
intact and 1 when a problem was found; a database that does not exist or has no audit trail is
bad input (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opendso.cli._common import Subparsers
from opendso.cli.database import add_database_arguments, cli_actor, database_of
from opendso.errors import InputError
from opendso.settings import Settings

__all__ = ["add_audit_parser", "audit_reseal_command", "audit_verify_command", "register"]


def add_audit_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``audit verify`` and ``audit reseal`` to an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser("audit", help="check the audit trail and the event log")
    sub = parser.add_subparsers(dest="audit_action", required=True)
    verify = sub.add_parser(
        "verify",
        help="check the keyed hash chains (audit trail, event log), their anchors and the sealed user rows",
    )
    add_database_arguments(verify)
    verify.add_argument(
        "--syslog-copy",
        default=None,
        help="the syslog collector's copy of the audit records (a file of RFC 5424 messages) to compare with",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    reseal = sub.add_parser(
        "reseal",
        help="make a new integrity key when the old one is lost, accepting the database as it is now (audited)",
    )
    add_database_arguments(reseal)
    reseal.add_argument("--yes", action="store_true", help="really do it")
    verify.set_defaults(func=audit_verify_command)
    reseal.set_defaults(func=audit_reseal_command)
    return parser


def audit_verify_command(args: argparse.Namespace) -> int:
    """Run ``opendso audit verify``: check the database's chains and seals and print the outcome.

    The database checked is named first. Returns the exit status: 0 when everything is intact,
    1 when a problem was found; a database that does not exist or has no audit trail is bad
    input (:class:`InputError`, exit 2).
    """
    from opendso.service.audit import AuditTrail, integrity_report
    from opendso.store import Historian

    choice = database_of(args)
    historian = Historian.open(choice.url, must_exist=True, key_path=choice.key_path)
    try:
        if not AuditTrail(historian.engine).last_seq():
            raise InputError(f"database {historian.url} has no audit trail (is this OpenDSO's database?)")
        copy = getattr(args, "syslog_copy", None)
        report = integrity_report(historian.engine, syslog_copy=Path(copy) if copy else None)
    finally:
        historian.close()
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report) + "\n")
        return 0 if report["ok"] else 1
    sys.stdout.write(f"database: {report['database']}\n")
    for name, label in (("audit", "audit trail"), ("events", "event log")):
        r = report[name]
        state = "intact" if r["ok"] else f"BROKEN ({len(r['problems'])} problem(s))"
        unkeyed = f", {r['unkeyed']} from before the integrity key" if r["unkeyed"] else ""
        sys.stdout.write(
            f"{label} {state}: {r['records']} record(s){unkeyed}, last seq {r['last_seq']}, head {r['head_hash']}\n"
        )
        for p in r["problems"]:
            sys.stdout.write(f"  seq {p['seq']}: {p['kind']}: {p['message']}\n")
    if report["rows"]:
        sys.stdout.write(f"users and sessions: {len(report['rows'])} TAMPERED row(s)\n")
        for p in report["rows"]:
            sys.stdout.write(f"  {p['table']} {p['key']}: {p['message']}\n")
    else:
        sys.stdout.write("users and sessions: every row matches its seal\n")
    if "syslog" in report:
        c = report["syslog"]
        state = "matches" if c["ok"] else f"DIFFERS ({len(c['problems'])} problem(s))"
        sys.stdout.write(f"collector's copy {c['copy']} {state}: {c['records']} record(s), last seq {c['last_seq']}\n")
        for p in c["problems"]:
            sys.stdout.write(f"  seq {p['seq']}: {p['kind']}: {p['message']}\n")
    return 0 if report["ok"] else 1


def audit_reseal_command(args: argparse.Namespace) -> int:
    """Run ``opendso audit reseal``: start a new integrity key on a database whose key is lost.

    Everything the database holds now is sealed with the new key and both chains are anchored
    where they stand; the first record of the new key says so (``integrity.reseal``). Exit 2
    without ``--yes``, or when the key file is still there.
    """
    from opendso.service.audit import AuditTrail
    from opendso.store import Historian
    from opendso.store.engine import create_engine
    from opendso.store.integrity import default_key_path, reseal

    if not getattr(args, "yes", False):
        raise InputError("reseal accepts the database as it is now, including any change made to it: add --yes")
    choice = database_of(args)
    url = choice.url
    key_path = choice.key_path or default_key_path(url)
    if key_path.exists():
        raise InputError(f"the integrity key {key_path} exists: nothing to reseal")
    engine = create_engine(url)
    try:
        counts = reseal(engine, url, key_path)
    finally:
        engine.dispose()
    with Historian.open(url, key_path=key_path) as historian:
        AuditTrail(historian.engine).append(
            "integrity.reseal",
            actor=cli_actor(),
            reason="integrity key lost: the database's present state was accepted and sealed with a new key",
            details=counts,
        )
    sys.stdout.write(f"new integrity key {key_path}; sealed {counts}\n")
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``audit``."""
    add_audit_parser(sub)
