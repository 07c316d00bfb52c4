"""``opendso users``: add users, set their passwords and roles, disable and enable them, list them.

The logic is :class:`opendso.service.security.Security`'s (the API's user management uses the
same); this module is the command-line glue. Changes are audited as ``cli:<account>``
(:func:`~opendso.cli.database.cli_actor`); the database used is named on stderr. A password
comes from ``OPENDSO_PASSWORD``, else it is asked for twice.
"""

from __future__ import annotations

import argparse
import sys

from opendso.cli._common import Subparsers
from opendso.cli.database import add_database_arguments, cli_actor, database_of
from opendso.errors import InputError
from opendso.settings import Settings, get_settings, reveal

__all__ = ["add_users_parser", "register", "users_command"]


def add_users_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``users`` (add, set-password, set-roles, disable, enable, list) to an argparse subparsers object."""
    from opendso.service.security import Role

    parser: argparse.ArgumentParser = subparsers.add_parser("users", help="manage the users of the control room")
    add_database_arguments(parser)
    sub = parser.add_subparsers(dest="users_action", required=True)
    add = sub.add_parser("add", help="create a user (the password is asked for, or read from OPENDSO_PASSWORD)")
    add.add_argument("username")
    add.add_argument("--roles", required=True, help=f"comma-separated roles: {', '.join(r.value for r in Role)}")
    pw = sub.add_parser("set-password", help="set a user's password (asked for, or OPENDSO_PASSWORD)")
    pw.add_argument("username")
    temporary = "a temporary password: the user must choose a new one at the next login"
    add.add_argument("--temporary", action="store_true", help=temporary)
    pw.add_argument("--temporary", action="store_true", help=temporary)
    roles = sub.add_parser("set-roles", help="replace a user's roles")
    roles.add_argument("username")
    roles.add_argument("--roles", required=True, help="comma-separated roles")
    dis = sub.add_parser("disable", help="disable a user and close their sessions")
    dis.add_argument("username")
    ena = sub.add_parser("enable", help="enable a disabled user and lift the throttles on its logins")
    ena.add_argument("username")
    sub.add_parser("list", help="list the users, their roles and the throttles on their logins")
    return parser


def _read_password() -> str:
    given = reveal(get_settings().passwords.password)
    if given:
        return given
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise InputError("the two passwords differ")
    return first


def users_command(args: argparse.Namespace) -> int:
    """Run ``opendso users ACTION``; bad input raises :class:`InputError` (exit status 2).

    The database used is named on stderr. Only ``add`` may start from a database that does
    not exist yet (for installing the first users before the first start).
    """
    from opendso.service.security import Security
    from opendso.service.syslog import start_forwarding
    from opendso.store import Historian

    choice = database_of(args)
    action = args.users_action
    historian = Historian.open(choice.url, must_exist=action != "add", key_path=choice.key_path)
    sys.stderr.write(f"database: {historian.url}\n")
    actor = cli_actor()
    forwarder = start_forwarding(historian.engine)
    try:
        security = Security(historian.engine)
        if action == "add":
            user = security.add_user(
                args.username, _read_password(), args.roles.split(","), actor=actor, must_change_password=args.temporary
            )
            sys.stdout.write(f"added {user.username} ({', '.join(user.roles)})\n")
        elif action == "set-password":
            security.set_password(args.username, _read_password(), actor=actor, must_change_password=args.temporary)
            sys.stdout.write(f"password of {args.username} set\n")
        elif action == "set-roles":
            user = security.set_roles(args.username, args.roles.split(","), actor=actor)
            sys.stdout.write(f"roles of {user.username}: {', '.join(user.roles)}\n")
        elif action == "disable":
            security.set_disabled(args.username, True, actor=actor)
            sys.stdout.write(f"{args.username} disabled\n")
        elif action == "enable":
            lifted = security.set_disabled(args.username, False, actor=actor)
            extra = f"; login throttle lifted for {', '.join(t.source_ip for t in lifted)}" if lifted else ""
            sys.stdout.write(f"{args.username} enabled{extra}\n")
        elif action == "list":
            for info in security.list_users():
                u = info.user
                state = (
                    (" (disabled)" if u.disabled else "")
                    + (" (temporary password)" if u.must_change_password else "")
                    + ("" if info.intact else " (TAMPERED: changed outside OpenDSO; reset the password)")
                )
                sys.stdout.write(f"{u.username}\t{','.join(u.roles)}{state}\n")
                for t in info.throttles:
                    until = (
                        f"blocked until {t.blocked_until:%Y-%m-%d %H:%M:%S} UTC"
                        if t.blocked_until is not None
                        else "not blocked"
                    )
                    sys.stdout.write(f"\tlogin throttle: {t.failures} failed from {t.source_ip}, {until}\n")
        else:  # pragma: no cover - argparse restricts the choices
            raise InputError(f"unknown users action {action!r}")
    finally:
        if forwarder is not None:
            forwarder.stop()
        historian.close()
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``users``."""
    add_users_parser(sub).set_defaults(func=users_command)
