"""The real-time commands without the web service: ``opendso points``, ``monitor`` and ``simulate-field``.

``monitor`` runs telemetry adapters, historian, real-time cycle and alarms headless (``--json``:
one JSON summary per cycle); ``simulate-field`` serves a grid's digital twin over Modbus, MQTT
or IEC 104. Both stop on Ctrl-C/SIGTERM or after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from opendso.cli._common import Subparsers, emit_json, load_valid_grid
from opendso.settings import Settings

__all__ = ["cmd_monitor", "cmd_points", "cmd_simulate_field", "register"]

_BROKER_HELP = "MQTT broker URL (default: OPENDSO_MQTT_URL or mqtt://127.0.0.1:1883)"


def cmd_points(args: argparse.Namespace) -> int:
    """Write the point map of a grid's measurement placements and switches."""
    from opendso.telemetry import point_map_for_grid, write_point_map

    grid = load_valid_grid(args.grid)
    point_map = point_map_for_grid(grid, protocol=args.protocol, host=args.host, port=args.port)
    path = write_point_map(point_map, args.out)
    print(f"{grid.name}: {len(point_map)} points ({args.protocol}) written to {path}", file=sys.stderr)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run adapters, historian, real-time cycle and alarms headless, printing the live summary."""
    from opendso.operations.cycle import CycleResult, CycleSettings
    from opendso.operations.monitor import Monitor
    from opendso.store import Historian
    from opendso.telemetry import assert_valid_against_grid, modbus_pollers, mqtt_subscribers, read_point_map

    grid = load_valid_grid(args.grid)
    point_map = read_point_map(args.points)
    assert_valid_against_grid(point_map, grid)
    historian = Historian.open(args.database_url)
    adapters: list[Any] = [*modbus_pollers(point_map), *mqtt_subscribers(point_map, broker_url=args.broker)]
    if point_map.sources_of("iec104"):
        from opendso.telemetry.iec104 import iec104_clients

        adapters += iec104_clients(point_map)

    def show(result: CycleResult) -> None:
        summary = result.summary()
        if args.json:
            emit_json(summary)
            sys.stdout.flush()
            return
        from opendso.operations.alarms import count_alarms

        counts = count_alarms(monitor.cycle.monitors)  # one definition, as the status bar and /api/status
        u = (
            f"{summary['u_min_pu']:.4f}..{summary['u_max_pu']:.4f} p.u."
            if summary["u_min_pu"] is not None
            else "no estimate"
        )
        print(
            f"{summary['time'][11:19]} cycle {summary['timings_ms'].get('cycle', 0):7.1f} ms  "
            f"observable {'yes' if summary['observable'] else 'NO '}  U {u}  points {summary['used_points']} "
            f"(bad {summary['bad_points']})  alarms {counts.standing} standing, {counts.unacknowledged} "
            f"unacknowledged (+{summary['alarm_transitions']})",
            flush=True,
        )

    monitor = Monitor(grid, point_map, historian, adapters, settings=CycleSettings(period_s=args.period), on_cycle=show)

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, monitor.stop)
        await monitor.run(duration_s=args.duration)

    try:
        asyncio.run(main_loop())
    finally:
        historian.close()
    return 0


def cmd_simulate_field(args: argparse.Namespace) -> int:
    """Run the field simulator: a digital twin of a grid serving telemetry over the real protocols."""
    from opendso.telemetry import (
        FieldSimulator,
        point_map_for_grid,
        read_point_map,
        read_scenario,
        with_fault_indicators,
        write_point_map,
    )

    grid = load_valid_grid(args.grid)
    if args.points:
        point_map = read_point_map(args.points)
    else:
        point_map = with_fault_indicators(
            point_map_for_grid(grid, protocol=args.protocol, host=args.host, port=args.port), grid
        )
    if args.write_points:
        write_point_map(point_map, args.write_points)
        print(f"{grid.name}: point map written to {args.write_points}", file=sys.stderr)
    scenario = read_scenario(args.scenario) if args.scenario else None
    options = {s.name: {"broker_url": args.broker} for s in point_map.sources_of("mqtt")} if args.broker else None
    simulator = FieldSimulator(
        grid,
        point_map,
        speed=args.speed,
        start_step=args.start_step,
        noise=args.noise,
        seed=args.seed,
        scenario=scenario,
        server_options=options,
    )

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with simulator:
            print(
                f"{grid.name}: serving {len(point_map)} points at {args.speed:g}x, simulated time "
                f"{simulator.simulated_clock().isoformat()}",
                file=sys.stderr,
                flush=True,
            )
            if args.duration is None:
                await stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=args.duration)

    asyncio.run(main_loop())
    return 0


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``points``, ``monitor`` and ``simulate-field`` (cycle period and speed default from ``settings``)."""
    p = sub.add_parser("points", help="write the point map of a grid's measurement placements and switches")
    p.add_argument("grid", help="grid source")
    p.add_argument("--protocol", choices=["modbus", "mqtt", "iec104"], default="modbus")
    p.add_argument("--host", default="127.0.0.1", help="field device host (modbus, iec104)")
    p.add_argument("--port", type=int, default=5020, help="field device port (modbus, iec104)")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.set_defaults(func=cmd_points)

    period = settings.run.period_s
    p = sub.add_parser("monitor", help="telemetry, historian, state estimation and alarms, headless")
    p.add_argument("--grid", required=True, help="grid source")
    p.add_argument("--points", required=True, help="point map (TOML)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--broker", help=_BROKER_HELP)
    p.add_argument(
        "--period",
        type=float,
        default=period,
        help=f"cycle period in seconds (default {period:g}; OPENDSO_RUN_PERIOD_S)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON summary per cycle")
    p.set_defaults(func=cmd_monitor)

    speed = settings.run.speed
    p = sub.add_parser("simulate-field", help="a digital twin of a grid serving telemetry (Modbus, MQTT, IEC 104)")
    p.add_argument("grid", help="grid source with profiles (e.g. a SimBench grid)")
    p.add_argument("--points", help="point map to serve (default: the grid's placements and switches)")
    p.add_argument(
        "--protocol", choices=["modbus", "mqtt", "iec104"], default="modbus", help="protocol of the generated point map"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (modbus, iec104)")
    p.add_argument("--port", type=int, default=5020, help="port to serve on (modbus, iec104)")
    p.add_argument("--broker", help=_BROKER_HELP)
    p.add_argument("--write-points", help="write the point map served to this TOML file")
    p.add_argument("--scenario", help="scripted events (TOML)")
    p.add_argument(
        "--speed",
        type=float,
        default=speed,
        help=f"simulated seconds per real second (default {speed:g}; OPENDSO_RUN_SPEED)",
    )
    p.add_argument("--start-step", type=int, default=0, help="first profile step")
    p.add_argument("--noise", type=float, default=1.0, help="measurement noise scale (0: exact values)")
    p.add_argument("--seed", type=int, help="random seed of the noise")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=cmd_simulate_field)
