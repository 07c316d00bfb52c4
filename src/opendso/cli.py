"""The ``opendso`` command.

Grid sources are named as everywhere in OpenDSO: ``simbench:<code>``, ``pandapower:<file.json>``,
``opendss:<master.dss>``, ``pgm:<file.json>`` or ``demo``. Results go to stdout (``--json`` for
one JSON object), progress and errors to stderr. Bad input exits with status 2 and one message
naming the file, element and field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opendso import __version__
from opendso.errors import InputError, OpenDSOError


def _emit_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, allow_nan=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@contextmanager
def _progress(enabled: bool, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr (nothing when disabled or stderr is not a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _load(source: str, *, validate: bool = True, symmetric: bool = True) -> Any:
    from opendso.grid.sources import load_grid
    from opendso.grid.validation import assert_valid

    grid = load_grid(source)
    if validate:
        assert_valid(grid, symmetric=symmetric)
    return grid


# -- grid ----------------------------------------------------------------------------------------
def cmd_grid_info(args: argparse.Namespace) -> int:
    """Print what a grid holds."""
    import numpy as np

    from opendso.grid.sources import load_grid
    from opendso.grid.topology import analyse_topology

    grid = load_grid(args.grid)
    u_rated = grid.component("node")["u_rated"]
    info: dict[str, Any] = {
        "grid": grid.name,
        "elements": grid.summary(),
        "voltage_levels_kv": sorted({round(float(u) / 1e3, 3) for u in np.unique(u_rated)}),
        "coordinates": int(np.isfinite(grid.node_xy).all(axis=1).sum()) if grid.node_xy.size else 0,
        "open_switches": int((grid.switches["closed"] == 0).sum()) if grid.switches.size else 0,
        "profile_steps": grid.profiles.steps if grid.profiles is not None else 0,
    }
    topo = analyse_topology(grid)
    info["topology"] = {
        "islands": int(topo.n_components),
        "islands_without_source": len(topo.islands_without_source),
        "de_energised_nodes": int((~topo.node_energised).sum()),
        "radial": bool(topo.radial),
        "substations": int(topo.substations.id.size),
        "feeders": int(topo.feeders.id.size),
        "meshed_feeders": int((topo.feeders.cycles > 0).sum()),
        "normally_open_points": sorted(str(n) for n in topo.normally_open.switch_name),
    }
    if grid.profiles is not None and grid.profiles.steps:
        info["profile_start"] = str(np.datetime_as_string(grid.profiles.time[0], unit="s")) + "Z"
        info["profile_end"] = str(np.datetime_as_string(grid.profiles.time[-1], unit="s")) + "Z"
    if args.json:
        _emit_json(info)
        return 0
    print(f"grid {info['grid']}")
    for key, count in info["elements"].items():
        print(f"  {key:28s} {count:>8d}")
    print(f"  voltage levels (kV)          {', '.join(str(v) for v in info['voltage_levels_kv'])}")
    print(f"  nodes with coordinates       {info['coordinates']:>8d}")
    print(f"  open switches                {info['open_switches']:>8d}")
    print(f"  profile steps                {info['profile_steps']:>8d}")
    topology = info["topology"]
    print(
        f"  islands                      {topology['islands']:>8d}"
        f" ({topology['islands_without_source']} without source)"
    )
    print(f"  de-energised nodes           {topology['de_energised_nodes']:>8d}")
    print(
        f"  substations / feeders        {topology['substations']:>8d} / {topology['feeders']}"
        f" ({topology['meshed_feeders']} meshed)"
    )
    print(f"  normally-open points         {len(topology['normally_open_points']):>8d}")
    return 0


def cmd_grid_validate(args: argparse.Namespace) -> int:
    """Validate a grid; exit 2 listing every finding when it is not valid."""
    from opendso.grid.sources import load_grid
    from opendso.grid.validation import validate_grid

    grid = load_grid(args.grid)
    findings = validate_grid(grid, symmetric=not args.asym)
    if args.json:
        _emit_json(
            {
                "grid": grid.name,
                "valid": not findings,
                "findings": [
                    {
                        "component": f.component,
                        "field": f.field,
                        "ids": list(f.ids),
                        "names": list(f.names),
                        "message": f.message,
                    }
                    for f in findings
                ],
            }
        )
    elif findings:
        for finding in findings:
            print(f"{grid.name}: {finding}", file=sys.stderr)
    else:
        print(f"{grid.name}: valid ({sum(grid.summary().values())} elements)")
    return 2 if findings else 0


def cmd_grid_export(args: argparse.Namespace) -> int:
    """Export a grid to power-grid-model JSON or pandapower JSON."""
    target: str = args.to
    scheme, _, path = target.partition(":")
    if scheme not in ("pgm", "pandapower") or not path:
        raise InputError(f"--to {target}: expected pgm:<file.json> or pandapower:<file.json>")
    grid = _load(args.grid)
    if scheme == "pgm":
        from opendso.grid.pgm_io import write_pgm_json

        write_pgm_json(grid, Path(path))
    else:
        from opendso.grid.pandapower_export import write_pandapower_json

        write_pandapower_json(grid, Path(path))
    print(f"{grid.name}: written to {target}", file=sys.stderr)
    return 0


def cmd_grid_list(args: argparse.Namespace) -> int:
    """List the SimBench codes the installed simbench package ships."""
    from opendso.grid.sources import simbench_codes

    for code in sorted(simbench_codes()):
        print(f"simbench:{code}")
    return 0


# -- calculations ----------------------------------------------------------------------------------
def cmd_powerflow(args: argparse.Namespace) -> int:
    """Run one power flow."""
    from opendso.calc.powerflow import run_power_flow

    grid = _load(args.grid, symmetric=not args.asym)
    result = run_power_flow(grid, symmetric=not args.asym, method=args.method, fallback_linear=args.fallback_linear)
    if args.json:
        _emit_json(result.to_dict())
    else:
        _print_powerflow(result)
    return 0 if result.converged else 1


def _print_powerflow(result: Any) -> None:
    import numpy as np

    data = result.to_dict()
    status = "converged" if result.converged else f"did not converge: {result.error}"
    if result.fallback:
        status = f"linear fallback ({result.error})"
    print(f"{data['grid']}: power flow {status} ({data['method']}, {'balanced' if result.symmetric else 'unbalanced'})")
    if not data["nodes"]:
        return
    u = np.array([n["u_pu"] for n in data["nodes"] if n["energized"]])
    loading = [b for b in data["branches"] if b["loading"] is not None]
    print(f"  nodes {len(data['nodes'])}, energised {u.size}, voltage {u.min():.4f} .. {u.max():.4f} p.u.")
    if loading:
        worst = max(loading, key=lambda b: b["loading"])
        print(f"  max loading {worst['loading'] * 100:.1f} % on {worst['kind']} {worst['name']}")


def cmd_timeseries(args: argparse.Namespace) -> int:
    """Run the grid's profiles as a time series."""
    import numpy as np

    from opendso.calc.timeseries import Limits, ParquetWriter, run_time_series

    grid = _load(args.grid)
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    start, stop = 0, grid.profiles.steps
    if args.steps is not None:
        if args.steps <= 0:
            raise InputError(f"--steps {args.steps}: must be positive")
        stop = min(args.steps, stop)
    if args.start or args.end:
        times = grid.profiles.time
        if args.start:
            start = int(np.searchsorted(times, _parse_time(args.start, "--start")))
        if args.end:
            stop = int(np.searchsorted(times, _parse_time(args.end, "--end")))
        if stop <= start:
            raise InputError(
                f"--start {args.start} / --end {args.end}: no profile steps in that range "
                f"({np.datetime_as_string(times[0])} .. {np.datetime_as_string(times[-1])})"
            )
    writer = ParquetWriter(Path(args.out), grid) if args.out else None
    limits = Limits(u_min_pu=args.u_min, u_max_pu=args.u_max, loading_max=args.loading_max)
    with _progress(not args.quiet, "time series") as progress:
        result = run_time_series(
            grid,
            start=start,
            stop=stop,
            method=args.method,
            limits=limits,
            fallback_linear=args.fallback_linear,
            writer=writer,
            progress=progress,
            threading=args.threads,
        )
    if args.json:
        _emit_json(result.to_dict(with_steps=not args.no_steps))
    else:
        summary = result.to_dict(with_steps=False)
        print(
            f"{summary['grid']}: {summary['steps']} steps, {summary['converged_steps']} converged, "
            f"{summary['failed_steps']} failed, {summary['fallback_steps']} linear fallback"
        )
        if summary["u_min_pu"] is not None:
            print(
                f"  voltage {summary['u_min_pu']:.4f} .. {summary['u_max_pu']:.4f} p.u., "
                f"max loading {summary['max_loading'] * 100:.1f} %"
            )
        print(
            f"  steps with voltage violations {summary['steps_with_voltage_violations']}, "
            f"with overloads {summary['steps_with_overloads']}"
        )
        for step, reason in list(result.errors.items())[:10]:
            print(f"  step {start + step}: {reason}", file=sys.stderr)
        if args.out:
            print(f"  full results in {args.out}")
    return 0 if result.converged.all() else 1


def _parse_time(text: str, flag: str) -> Any:
    import numpy as np

    try:
        return np.datetime64(text.rstrip("Z"), "s")
    except ValueError:
        raise InputError(f"{flag} {text}: not a time (use ISO 8601, e.g. 2016-01-01T00:00)") from None


def cmd_estimate(args: argparse.Namespace) -> int:
    """Run state estimation from a measurement file or from the source's placements."""
    import numpy as np

    from opendso.calc import estimation
    from opendso.calc.powerflow import run_power_flow

    grid = _load(args.grid)
    if args.measurements:
        measurements = estimation.read_measurements(Path(args.measurements), grid)
    else:
        truth = run_power_flow(grid)
        if not truth.converged:
            raise OpenDSOError(
                f"{grid.name}: the power flow that feeds the simulated measurements failed: {truth.error}"
            )
        measurements = estimation.measurements_from_power_flow(
            grid, truth, noise=args.noise, rng=np.random.default_rng(args.seed)
        )
    result = estimation.run_state_estimation(grid, measurements, method=args.method)
    if args.json:
        _emit_json(result.to_dict())
    else:
        data = result.to_dict()
        print(
            f"{grid.name}: state estimation {'converged' if data['converged'] else 'failed'}"
            f" ({data.get('method')}); observable: {data.get('observable')}"
        )
        if data.get("error"):
            print(f"  {data['error']}")
        for key in ("max_normalised_residual", "suspect_sensors"):
            if key in data:
                print(f"  {key.replace('_', ' ')}: {data[key]}")
    return 0 if result.converged else 1


def cmd_shortcircuit(args: argparse.Namespace) -> int:
    """Run short-circuit calculations (IEC 60909) at every node or the named ones."""
    from opendso.calc.shortcircuit import run_short_circuit

    grid = _load(args.grid)
    result = run_short_circuit(grid, fault_type=args.fault_type, case=args.case, nodes=args.node or None)
    data = result.to_dict()
    if args.json:
        _emit_json(data)
    else:
        print(f"{grid.name}: {data.get('fault_type')} short circuit, {data.get('case')} case (IEC 60909)")
        for node in data.get("nodes", [])[: args.limit]:
            print(f"  {node['name']:40s} Ik'' = {node['ik_ka']:.3f} kA")
    return 0


def _service_settings(trusted_proxies: Sequence[str]) -> Any:
    """The web service's settings from the environment, with ``--trusted-proxy`` addresses added."""
    import dataclasses

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

    grid = _load(args.grid)
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
        if os.environ.get("OPENDSO_ADMIN_PASSWORD"):
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


class _RemoteError(OpenDSOError):
    """The control room refused a request or could not be reached (exit status 1; 2 for bad input)."""


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
        error = InputError if exc.code in (400, 422) else _RemoteError
        raise error(f"{method} {url}{path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _RemoteError(f"cannot reach the control room at {url}: {reason}") from None
    return json.loads(text) if text else None


def _describe_clock(state: dict[str, Any]) -> str:
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
    password = os.environ.get("OPENDSO_PASSWORD")
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
        _emit_json(state)
    else:
        print(_describe_clock(state))
    return 0


# -- real time ------------------------------------------------------------------------------------
def cmd_points(args: argparse.Namespace) -> int:
    """Write the point map of a grid's measurement placements and switches."""
    from opendso.telemetry.points import point_map_for_grid, write_point_map

    grid = _load(args.grid)
    point_map = point_map_for_grid(grid, protocol=args.protocol, host=args.host, port=args.port)
    path = write_point_map(point_map, args.out)
    print(f"{grid.name}: {len(point_map)} points ({args.protocol}) written to {path}", file=sys.stderr)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run adapters, historian, real-time cycle and alarms headless, printing the live summary."""
    import asyncio
    import signal

    from opendso.operations.cycle import CycleResult, CycleSettings
    from opendso.operations.monitor import Monitor
    from opendso.store import Historian
    from opendso.telemetry import modbus_pollers, mqtt_subscribers
    from opendso.telemetry.points import assert_valid_against_grid, read_point_map

    grid = _load(args.grid)
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
            _emit_json(summary)
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
    import asyncio
    import contextlib
    import signal

    from opendso.telemetry import FieldSimulator, read_point_map, read_scenario, with_fault_indicators
    from opendso.telemetry.points import point_map_for_grid, write_point_map

    grid = _load(args.grid)
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


def cmd_history(args: argparse.Namespace) -> int:
    """Query the historian: raw values of a point, or aggregates per interval."""
    from datetime import UTC, datetime, timedelta

    from opendso.store import Historian

    def when(text: str, flag: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InputError(f"{flag} {text}: not a time (use ISO 8601, e.g. 2026-11-23T08:00Z)") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    start = when(args.start, "--from")
    end = when(args.end, "--to") if args.end else datetime.now(UTC)
    historian = Historian.open(args.database_url)
    try:
        if args.interval:
            frame = historian.aggregate(args.point, start, end, timedelta(seconds=args.interval))
        else:
            frame = historian.read_range(args.point, start, end)
    finally:
        historian.close()
    if args.json:
        _emit_json(json.loads(frame.to_json(orient="records", date_format="iso")))
    else:
        print(frame.to_string(index=False) if len(frame) else f"{args.point}: no values in that range")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``opendso`` command."""
    from opendso.calc.powerflow import Method

    parser = argparse.ArgumentParser(prog="opendso", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"opendso {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grid = sub.add_parser("grid", help="inspect, validate and export grids")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True, metavar="ACTION")
    p = grid_sub.add_parser("info", help="what a grid holds")
    p.add_argument("grid", help="grid source, e.g. simbench:1-MV-urban--0-sw, pandapower:net.json, demo")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grid_info)
    p = grid_sub.add_parser("validate", help="check a grid's data; exit 2 listing every problem")
    p.add_argument("grid", help="grid source")
    p.add_argument("--asym", action="store_true", help="validate for unbalanced calculations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grid_validate)
    p = grid_sub.add_parser("export", help="write a grid as power-grid-model or pandapower JSON")
    p.add_argument("grid", help="grid source")
    p.add_argument("--to", required=True, help="pgm:<file.json> or pandapower:<file.json>")
    p.set_defaults(func=cmd_grid_export)
    p = grid_sub.add_parser("list-simbench", help="list the SimBench grid codes available")
    p.set_defaults(func=cmd_grid_list)

    methods = [m.value for m in Method]
    p = sub.add_parser("powerflow", help="run one power flow")
    p.add_argument("grid", help="grid source")
    p.add_argument("--asym", action="store_true", help="unbalanced (three-phase) power flow")
    p.add_argument("--method", choices=methods, default="newton_raphson", help="calculation method")
    p.add_argument("--fallback-linear", action="store_true", help="re-run with the linear method if not converged")
    p.add_argument("--json", action="store_true", help="print one JSON object (see DESIGN.md)")
    p.set_defaults(func=cmd_powerflow)

    p = sub.add_parser("timeseries", help="run the grid's profiles as a time series")
    p.add_argument("grid", help="grid source with profiles (e.g. a SimBench grid)")
    p.add_argument("--steps", type=int, help="number of steps from the start")
    p.add_argument("--start", help="first time (ISO 8601, UTC)")
    p.add_argument("--end", help="end time, exclusive (ISO 8601, UTC)")
    p.add_argument("--method", choices=methods, default="iterative_current", help="calculation method")
    p.add_argument("--threads", type=int, default=0, help="threads (0: all hardware threads, -1: sequential)")
    p.add_argument("--fallback-linear", action="store_true", help="linear fallback for steps that do not converge")
    p.add_argument("--u-min", type=float, default=0.9, help="lower voltage limit (p.u.)")
    p.add_argument("--u-max", type=float, default=1.1, help="upper voltage limit (p.u.)")
    p.add_argument("--loading-max", type=float, default=1.0, help="loading limit (fraction)")
    p.add_argument("--out", help="write full node voltages and branch loadings to this Parquet file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-steps", action="store_true", help="with --json: totals only, no per-step records")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_timeseries)

    p = sub.add_parser("estimate", help="state estimation")
    p.add_argument("grid", help="grid source")
    p.add_argument(
        "--measurements",
        help="measurement file (CSV or JSON); default: the source's placements "
        "fed from a power flow with realistic noise",
    )
    p.add_argument("--noise", type=float, default=1.0, help="noise scale for simulated measurements (0: exact)")
    p.add_argument("--seed", type=int, default=0, help="random seed for simulated noise")
    p.add_argument("--method", choices=["iterative_linear", "newton_raphson"], default="iterative_linear")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("shortcircuit", help="short-circuit currents (IEC 60909)")
    p.add_argument("grid", help="grid source")
    p.add_argument(
        "--fault-type",
        default="three_phase",
        choices=["three_phase", "single_phase_to_ground", "phase_to_phase", "two_phase_to_ground"],
    )
    p.add_argument("--case", choices=["max", "min"], default="max", help="maximum or minimum currents")
    p.add_argument("--node", action="append", help="faulted node by name (repeatable; default: every node)")
    p.add_argument("--limit", type=int, default=50, help="rows to print without --json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_shortcircuit)

    p = sub.add_parser("points", help="write the point map of a grid's measurement placements and switches")
    p.add_argument("grid", help="grid source")
    p.add_argument("--protocol", choices=["modbus", "mqtt", "iec104"], default="modbus")
    p.add_argument("--host", default="127.0.0.1", help="field device host (modbus, iec104)")
    p.add_argument("--port", type=int, default=5020, help="field device port (modbus, iec104)")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.set_defaults(func=cmd_points)

    p = sub.add_parser("monitor", help="telemetry, historian, state estimation and alarms, headless")
    p.add_argument("--grid", required=True, help="grid source")
    p.add_argument("--points", required=True, help="point map (TOML)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--broker", help="MQTT broker URL (default: OPENDSO_MQTT_URL or mqtt://127.0.0.1:1883)")
    p.add_argument("--period", type=float, default=2.0, help="cycle period in seconds")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON summary per cycle")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("simulate-field", help="a digital twin of a grid serving telemetry (Modbus, MQTT, IEC 104)")
    p.add_argument("grid", help="grid source with profiles (e.g. a SimBench grid)")
    p.add_argument("--points", help="point map to serve (default: the grid's placements and switches)")
    p.add_argument(
        "--protocol", choices=["modbus", "mqtt", "iec104"], default="modbus", help="protocol of the generated point map"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (modbus, iec104)")
    p.add_argument("--port", type=int, default=5020, help="port to serve on (modbus, iec104)")
    p.add_argument("--broker", help="MQTT broker URL (default: OPENDSO_MQTT_URL or mqtt://127.0.0.1:1883)")
    p.add_argument("--write-points", help="write the point map served to this TOML file")
    p.add_argument("--scenario", help="scripted events (TOML)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--start-step", type=int, default=0, help="first profile step")
    p.add_argument("--noise", type=float, default=1.0, help="measurement noise scale (0: exact values)")
    p.add_argument("--seed", type=int, help="random seed of the noise")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=cmd_simulate_field)

    p = sub.add_parser("history", help="query the historian")
    p.add_argument("point", help="point name")
    p.add_argument("--from", dest="start", required=True, help="start time (ISO 8601; UTC when no offset)")
    p.add_argument("--to", dest="end", help="end time, exclusive (default: now)")
    p.add_argument("--interval", type=float, help="aggregate per this many seconds (min/max/mean/count)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.set_defaults(func=cmd_history)

    from opendso.service.audit import add_audit_parser
    from opendso.service.security import add_users_parser, users_command

    add_users_parser(sub).set_defaults(func=users_command)
    add_audit_parser(sub)

    from opendso.demo import DEFAULT_SPEED, describe_demo_day

    p = sub.add_parser(
        "run",
        help="start the control room on embedded defaults (simulated field, SQLite)",
        description="Start the control room on embedded defaults: the field simulator on the grid with a "
        "scripted day, telemetry over Modbus TCP (or MQTT), historian, real-time cycle, alarms and the "
        "web service. A trainer pauses, speeds up or fast-forwards the simulated clock with 'opendso trainer'.",
        epilog=describe_demo_day(DEFAULT_SPEED),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", default="demo", help="grid source (default: demo)")
    p.add_argument("--data-dir", help="data folder (default: OPENDSO_DATA_DIR or ~/.local/share/opendso)")
    p.add_argument("--database-url", help="historian database (default: SQLite in the data folder)")
    p.add_argument("--broker", help="MQTT broker URL: simulated field over MQTT instead of Modbus TCP")
    p.add_argument(
        "--speed",
        type=float,
        default=DEFAULT_SPEED,
        help=f"simulated seconds per real second (default {DEFAULT_SPEED:g}: a simulated day in "
        f"{24 * 3600 / DEFAULT_SPEED / 60:g} real minutes; the timetable below)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--host", default="127.0.0.1", help="address the web service listens on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port of the web service (default: 8000; 0: any free port)")
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
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the control room (default: http://127.0.0.1:8000)")
    p.add_argument("--user", required=True, help="your user name in the control room (an engineer)")
    p.add_argument("--json", action="store_true", help="print the clock as one JSON object")
    p.set_defaults(func=cmd_trainer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``opendso`` command and return its exit status."""
    parser = build_parser()
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
    except InputError as exc:
        print(f"opendso: error: {exc}", file=sys.stderr)
        return exc.exit_code
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


if __name__ == "__main__":
    sys.exit(main())
