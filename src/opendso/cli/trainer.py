"""``opendso trainer``: steer the simulated clock of a running control room over its API.

The command signs in with a bearer token for this one call (``POST /api/auth/token``), does
its action and revokes the token. The password comes from ``OPENDSO_PASSWORD``, else it is
asked for on a terminal. A refusal of the control room exits 1 (2 for bad input).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from opendso.cli._common import Subparsers, emit_json
from opendso.errors import InputError, OpenDSOError, RemoteError
from opendso.settings import Settings, get_settings, reveal

__all__ = ["RemoteError", "cmd_trainer", "describe_clock", "register"]


def _call(url: str, method: str, path: str, body: Any = None, token: str | None = None, timeout_s: float = 30.0) -> Any:
    """One JSON request to a control room; return the decoded answer or raise naming what went wrong."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        error = InputError if exc.code in (400, 422) else RemoteError
        raise error(f"{method} {url}{path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach the control room at {url}: {reason}") from None
    return json.loads(text) if text else None


def describe_clock(state: dict[str, Any]) -> str:
    """The trainer's clock in one line: simulated time, speed, paused, the next scripted event."""
    clock = state["simulated_time"].replace("T", " ")[:19]
    line = f"simulated {clock}, {state['speed']:g}x" + (", PAUSED" if state["paused"] else "")
    following = state.get("next_event")
    if following is None:
        return line + "; no scripted event left"
    at = following["at"].replace("T", " ")[11:16]
    when = f"in {state['next_in_s'] / 60:.0f} simulated min"
    if state.get("next_in_real_s") is not None:
        when += f", {state['next_in_real_s']:.0f} s real"
    return line + f"; next {at} {following['what']} ({when})"


def cmd_trainer(args: argparse.Namespace) -> int:
    """Steer the simulated clock of a running control room: status, pause, resume, speed N, next."""
    import getpass

    url = args.url.rstrip("/")
    password = reveal(get_settings().passwords.password)
    if not password:
        if not sys.stdin.isatty():
            raise InputError("no password: set OPENDSO_PASSWORD or run in a terminal to be asked for it")
        password = getpass.getpass(f"Password of {args.user} at {url}: ")
    login = _call(url, "POST", "/api/auth/token", {"username": args.user, "password": password})
    token = login["access_token"]
    try:
        if args.action == "status":
            state = _call(url, "GET", "/api/trainer", token=token)
        elif args.action == "speed":
            if args.value is None:
                raise InputError("opendso trainer speed needs a value: simulated seconds per real second, e.g. 600")
            try:
                speed = float(args.value)
            except ValueError:
                raise InputError(f"speed must be a number, got {args.value!r}") from None
            state = _call(url, "POST", "/api/trainer/speed", {"speed": speed}, token=token)
        else:
            if args.value is not None:
                raise InputError(f"opendso trainer {args.action} takes no value, got {args.value!r}")
            state = _call(url, "POST", f"/api/trainer/{args.action}", token=token)
    finally:
        # the token is for this one command: revoke it
        with contextlib.suppress(OpenDSOError):
            _call(url, "POST", "/api/auth/logout", token=token)
    if args.json:
        emit_json(state)
    else:
        print(describe_clock(state))
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``trainer``; the control room's URL defaults to ``opendso run``'s (``settings.run``)."""
    url = settings.run.url()
    p = sub.add_parser(
        "trainer",
        help="steer the simulated clock of a running control room: pause, resume, speed, next event",
        description="Steer the field simulator's clock of a running 'opendso run' (engineer role). Every action "
        "is in the audit trail and the event log.",
        epilog="actions: status (the clock and the next scripted event), pause, resume, speed N (N simulated "
        "seconds per real second, 0 < N <= 3600), next (jump to the next scripted event, which runs at once). "
        "The password comes from OPENDSO_PASSWORD, else it is asked for.",
    )
    p.add_argument("action", choices=["status", "pause", "resume", "speed", "next"], help="what to do")
    p.add_argument("value", nargs="?", help="for speed: simulated seconds per real second")
    p.add_argument("--url", default=url, help=f"the control room (default: {url})")
    p.add_argument("--user", required=True, help="your user name in the control room (an engineer)")
    p.add_argument("--json", action="store_true", help="print the clock as one JSON object")
    p.set_defaults(func=cmd_trainer)
