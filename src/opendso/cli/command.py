"""The parser and the entry point of the ``opendso`` command: :func:`build_parser` and :func:`main`.

Each command group adds its commands (``register(subparsers, settings)``); the defaults that
can be configured come from :func:`opendso.settings.get_settings`. :func:`main` maps errors to
exit statuses: 2 for bad input (:class:`~opendso.errors.InputError`, a wrong ``OPENDSO_*``
variable included), 1 for any other :class:`~opendso.errors.OpenDSOError`, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from opendso import __version__
from opendso.cli import (
    audit,
    calc,
    congestion,
    der,
    flex,
    flisr,
    forecast,
    grid,
    history,
    hosting,
    outages,
    realtime,
    reliability,
    run,
    trainer,
    users,
    vvo,
)
from opendso.errors import InputError, OpenDSOError
from opendso.settings import Settings, get_settings

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``opendso --help`` lists them.
GROUPS = (
    grid,
    calc,
    hosting,
    forecast,
    congestion,
    vvo,
    realtime,
    history,
    reliability,
    outages,
    der,
    flex,
    flisr,
    users,
    audit,
    run,
    trainer,
)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """Return the argument parser of the ``opendso`` command (defaults from ``settings``, else the environment's)."""
    settings = settings if settings is not None else get_settings()
    parser = argparse.ArgumentParser(prog="opendso", description="The ``opendso`` command.")
    parser.add_argument("--version", action="version", version=f"opendso {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``opendso`` command and return its exit status."""
    try:
        parser = build_parser()
    except InputError as exc:  # a wrong OPENDSO_* variable: before any argument is read
        print(f"opendso: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        warnings.simplefilter("ignore")
    try:
        status: int = args.func(args)
    except OpenDSOError as exc:
        print(f"opendso: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("opendso: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status
