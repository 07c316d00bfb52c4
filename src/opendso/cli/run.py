"""``opendso run``: the whole control room on embedded defaults (:mod:`opendso.runtime`), with live status lines.

The host, port and speed default to :class:`opendso.settings.RunConfig` (``OPENDSO_RUN_*``);
the scripted day's timetable is :mod:`opendso.demo`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opendso import __version__
from opendso.cli._common import Subparsers, load_valid_grid
from opendso.settings import Settings, get_settings

if TYPE_CHECKING:
    from opendso.service import ServiceSettings

__all__ = ["cmd_run", "register"]


def _service_settings(trusted_proxies: Sequence[str]) -> ServiceSettings:
    """The web service's settings from the environment, with ``--trusted-proxy`` addresses added."""
    from opendso.service import ServiceSettings

    settings = ServiceSettings.from_env()
    if trusted_proxies:
        proxies = tuple(dict.fromkeys([*settings.trusted_proxies, *trusted_proxies]))
        settings = dataclasses.replace(settings, trusted_proxies=proxies)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    """Start the control room on embedded defaults: simulated field, telemetry, historian, cycle, alarms."""
    import asyncio

    from opendso.demo import describe_demo_day
    from opendso.operations.cycle import CycleResult
    from opendso.runtime import ControlRoomProcess
    from opendso.store import data_dir

    grid = load_valid_grid(args.grid)
    folder = Path(args.data_dir) if args.data_dir else data_dir()
    last_alarms = {"count": -1}

    def show(result: CycleResult) -> None:
        summary = result.summary()
        # the same counts as the status bar and /api/status (one definition: count_alarms)
        counts = process.room.alarm_counts()
        active = counts["standing"]
        if result.alarm_events or active != last_alarms["count"]:
            last_alarms["count"] = active
            sim = process.simulator.simulated_clock().strftime("%H:%M")
            u = (
                f"{summary['u_min_pu']:.3f}..{summary['u_max_pu']:.3f} p.u."
                if summary["u_min_pu"] is not None
                else "no estimate"
            )
            print(
                f"  simulated {sim}  cycle {summary['timings_ms'].get('cycle', 0):6.1f} ms  U {u}  "
                f"alarms {active} standing, {counts['unacknowledged']} unacknowledged "
                f"(+{len(result.alarm_events)} transitions)",
                flush=True,
            )

    process = ControlRoomProcess(
        grid,
        folder,
        database_url=args.database_url,
        broker_url=args.broker,
        speed=args.speed,
        on_cycle=show,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        service_settings=_service_settings(args.trusted_proxy),
        on_ready=lambda: print(
            f"Control room: {process.url}/  (API documentation {process.url}/api/docs). Ctrl-C stops.", flush=True
        ),
    )
    protocol = "MQTT via " + args.broker if args.broker else "Modbus TCP on loopback"
    print(
        f"OpenDSO {__version__}: control room on grid {grid.name} ({grid.count('node')} nodes, "
        f"{len(process.point_map)} points over {protocol}), data folder {folder}, "
        f"simulated clock {args.speed:g}x from {process.simulator.simulated_clock():%Y-%m-%d %H:%M}.",
        flush=True,
    )
    if args.grid == "demo":
        print(describe_demo_day(args.speed), flush=True)
    if process.created_admin_password is not None:
        if get_settings().passwords.admin_password is not None:
            how = "with the password in OPENDSO_ADMIN_PASSWORD"
        else:
            how = (
                f"with the one-time password {process.created_admin_password} "
                "(you choose your own at the first sign-in)"
            )
        print(
            f"First start: created user 'admin' (security administrator, operator, engineer); sign in {how}. "
            "Add users with 'opendso users add NAME --roles operator --temporary'.",
            flush=True,
        )
    asyncio.run(process.run(duration_s=args.duration))
    print("OpenDSO stopped cleanly.", flush=True)
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``run``; its host, port and speed default to ``settings.run``."""
    from opendso.demo import describe_demo_day

    run = settings.run
    p = sub.add_parser(
        "run",
        help="start the control room on embedded defaults (simulated field, SQLite)",
        description="Start the control room on embedded defaults: the field simulator on the grid with a "
        "scripted day, telemetry over Modbus TCP (or MQTT), historian, real-time cycle, alarms and the "
        "web service. A trainer pauses, speeds up or fast-forwards the simulated clock with 'opendso trainer'.",
        epilog=describe_demo_day(run.speed),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", default="demo", help="grid source (default: demo)")
    p.add_argument("--data-dir", help="data folder (default: OPENDSO_DATA_DIR or ~/.local/share/opendso)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--broker", help="MQTT broker URL: simulated field over MQTT instead of Modbus TCP")
    p.add_argument(
        "--speed",
        type=float,
        default=run.speed,
        help=f"simulated seconds per real second (default {run.speed:g}: a simulated day in "
        f"{24 * 3600 / run.speed / 60:g} real minutes; the timetable below)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--host", default=run.host, help=f"address the web service listens on (default: {run.host})")
    p.add_argument(
        "--port", type=int, default=run.port, help=f"port of the web service (default: {run.port}; 0: any free port)"
    )
    p.add_argument("--tls-cert", type=Path, help="serve https with this certificate (PEM; with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM)")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a reverse proxy whose X-Forwarded-For/-Proto headers are believed (repeatable; default: none; "
        "also OPENDSO_TRUSTED_PROXIES)",
    )
    p.set_defaults(func=cmd_run)
