"""Benchmark: end-to-end ingest through the real protocols, and latency from a field change to its alarm.

**Ingest** (target from issue 3: >= 10,000 points/s on 2 cores). The field simulator
(:class:`~opendso.telemetry.simulator.FieldSimulator`) serves SimBench's 1-MVLV-urban-all
(10,458 nodes) in one process, publishing as fast as it can (publish period 0.05 s, fresh noise
and a fresh timestamp every publish). A second process runs the :class:`~opendso.operations.monitor.Monitor`
ingest path unchanged: the adapters (:class:`ModbusPoller` over Modbus TCP on loopback,
:class:`MqttSubscriber` through Mosquitto on 127.0.0.1:1883, QoS 1, or :class:`Iec104Client`
on c104 over IEC 60870-5-104 on loopback from the simulator's RTU) hand batches to the monitor,
which keeps the latest readings and writes every batch to the historian in a worker thread. The
monitor's cycle is set to a long period so the figure is ingest alone (the cycle is measured
below and by ``bench_realtime.py``). The figure is the growth of the historian's row count over a
fixed wall-clock window after a warm-up: rows stored per second. Every stored row is distinct
(the historian is idempotent on (point, timestamp), and every publish and poll carries a new
timestamp). Backends: SQLite (a file in a temporary folder) and PostgreSQL
(``OPENDSO_TEST_POSTGRES_URL``, a database created for the run and dropped afterwards) when
reachable.

The point map has 31,427 points: the grid's 36 measurement placements, a voltage point on every
node (10,458, noisy: they change at every publish) and the 20,933 switch positions. Modbus: one
device, float32 holding registers (switches uint16), polled every 0.05 s in blocks of up to 125
registers; as the poller hands out only values that moved beyond the point's deadband (0), the
switch positions are stored once and the voltages at every poll that sees a new publish. MQTT:
the points grouped by 100 into one JSON message per topic (a gateway's view; the simulator's own
``point_map_for_grid`` puts one element per topic, one point or two per message, which caps MQTT
at the broker's message rate: run ``--per-topic 1`` to see it). IEC 104: one RTU (common
address 1), voltages as short floats (M_ME_NC_1), switches as double points (M_DP_NA_1), sent
spontaneously (COT 3) when they change, as many objects per ASDU as fit (30 short floats), with
the standard link parameters (k 12, w 8); the switch positions arrive once with the GI.

**Latency** (target: p99 < 1 s plus the cycle period). One process runs the simulator on
SimBench's 1-MV-urban (144 nodes; publish period 0.25 s; Modbus polled every 0.25 s) and a
monitor fed by the adapters over the real protocol, cycle period 0.5 s, SQLite historian. A
feeder breaker is opened in the simulator (``set_switch``); the latency is the wall-clock time
until the monitor's ``on_cycle`` callback receives the cycle whose alarm transitions raise the
breaker's switch alarm or the loss of supply behind it. The breaker is closed again, the alarm
clears, a random pause de-phases the next trip from the cycle. Chattering suppression is turned
off for the benchmark (the same breaker trips many times a minute on purpose; a suppressed
alarm is still raised, but not shown).

Run standalone: ``.venv/bin/python benchmarks/bench_ingest.py`` (``--quick``: SQLite only,
shorter windows, fewer trips; ``--protocols iec104``: one protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _util import BENCH_DIR, RESULT_MARK, Target, emit, print_table, quiet_warnings, write_report

INGEST_GRID = "simbench:1-MVLV-urban-all-0-sw"
LATENCY_GRID = "simbench:1-MV-urban--0-sw"
INGEST_TARGET = 10_000.0  # points/s
LATENCY_BUDGET_S = 1.0  # plus the cycle period
LATENCY_PERIOD_S = 0.5
LATENCY_FIELD_PERIOD_S = 0.25  # simulator publish period and Modbus poll period in the latency run
INGEST_PUBLISH_PERIOD_S = 0.05
PROTOCOLS = ("mqtt", "modbus", "iec104")


# -- the point map both processes build ----------------------------------------------------------------
def bench_point_map(
    grid: Any,
    protocol: str,
    *,
    port: int = 0,
    topic_prefix: str = "",
    per_topic: int = 100,
    poll_period_s: float = INGEST_PUBLISH_PERIOD_S,
    node_voltages: bool = True,
) -> Any:
    """Return a point map of the grid's placements, (optionally) every node's voltage, and its switches.

    Modbus: one device, registers in point order. MQTT: ``per_topic`` points per topic (keys are
    the point names; ``per_topic=1`` puts every element on its own topic like ``point_map_for_grid``).
    IEC 104: one station (common address 1), values M_ME_NC_1 (short float) from IOA 200,001 and
    switches M_DP_NA_1 (double point) from IOA 1, so that no command object (IOA + 100,000)
    meets a monitored one.
    """
    from opendso.telemetry.points import QUANTITIES, Connection, Point, PointMap, point_map_for_grid

    base = point_map_for_grid(grid, protocol="modbus", switches=False)
    plain: list[tuple[str, str, str]] = [(p.name, p.element, p.quantity) for p in base.points]
    taken = {name for name, _, _ in plain}
    if node_voltages:
        for node in grid.names_of("node"):
            name = f"{node}/u"
            if name not in taken:
                plain.append((name, str(node), "u"))
                taken.add(name)
    plain += [(f"{s}/switch", str(s), "switch") for s in grid.switch_names]
    source = Connection(
        name="field",
        protocol=protocol,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        topic_prefix=topic_prefix,
        stale_after_s=30.0,
        poll_groups={"default": poll_period_s} if protocol == "modbus" else {},
    )
    points = []
    register = value_count = switch_count = 0
    by_element: dict[str, str] = {}
    for k, (name, element, quantity) in enumerate(plain):
        kw: dict[str, Any]
        if protocol == "modbus":
            data_type = "uint16" if quantity == "switch" else "float32"
            kw = {"register": register, "data_type": data_type, "poll_group": "default"}
            register += 2 if data_type == "float32" else 1
        elif protocol == "iec104":
            if quantity == "switch":
                kw = {"common_address": 1, "ioa": 1 + switch_count, "type": "M_DP_NA_1"}
                switch_count += 1
            else:
                kw = {"common_address": 1, "ioa": 200_001 + value_count, "type": "M_ME_NC_1"}
                value_count += 1
        elif per_topic <= 1:
            topic = by_element.setdefault(element, f"e{len(by_element):05d}")
            kw = {"topic": topic, "key": quantity}
        else:
            kw = {"topic": f"g{k // per_topic:04d}", "key": name}
        points.append(Point(name, element, quantity, QUANTITIES[quantity], "field", **kw))
    return PointMap(file=f"<benchmark point map of {grid.name}>", sources={"field": source}, points=tuple(points))


def field_adapters(protocol: str, point_map: Any) -> list[Any]:
    """Return the adapters that read ``point_map`` over ``protocol`` (modbus, mqtt or iec104)."""
    if protocol == "modbus":
        from opendso.telemetry.modbus import modbus_pollers

        return list(modbus_pollers(point_map))
    if protocol == "iec104":
        from opendso.telemetry.iec104 import iec104_clients

        return list(iec104_clients(point_map))
    from opendso.telemetry.mqtt import mqtt_subscribers

    return list(mqtt_subscribers(point_map))


def free_port() -> int:
    """Return a TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- child: the simulator ----------------------------------------------------------------------------------
async def run_simulator(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the ingest grid until SIGTERM; return what the simulator did."""
    from opendso.grid.sources import load_grid
    from opendso.telemetry.simulator import FieldSimulator

    grid = load_grid(INGEST_GRID)
    point_map = bench_point_map(
        grid, args.protocol, port=args.port, topic_prefix=args.topic_prefix, per_topic=args.per_topic
    )
    sim = FieldSimulator(grid, point_map, speed=60.0, noise=1.0, seed=1, publish_period_s=args.publish_period)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await sim.start()
    Path(args.ready_file).write_text("ready")
    t0, p0 = time.perf_counter(), sim.counters.publishes
    try:
        await stop.wait()
    finally:
        seconds = time.perf_counter() - t0
        publishes = sim.counters.publishes - p0
        await sim.stop()
    messages = sum(getattr(s, "messages", 0) for s in sim.servers)
    return {
        "points": len(point_map),
        "publishes": publishes,
        "publishes_per_s": publishes / seconds if seconds > 0 else 0.0,
        "points_published_per_s": publishes * len(point_map) / seconds if seconds > 0 else 0.0,
        "messages": messages,
        "power_flows": sim.counters.power_flows,
    }


# -- child: the consumer (monitor ingest path) -------------------------------------------------------------
async def run_consumer(args: argparse.Namespace) -> dict[str, Any]:
    """Run the monitor's ingest on the simulator's points; return stored rows per second over the window."""
    from opendso.grid.sources import load_grid
    from opendso.operations.cycle import CycleSettings
    from opendso.operations.monitor import Monitor
    from opendso.store.historian import Historian

    grid = load_grid(INGEST_GRID)
    point_map = bench_point_map(
        grid, args.protocol, port=args.port, topic_prefix=args.topic_prefix, per_topic=args.per_topic
    )
    folder = Path(args.folder)
    historian = Historian.open(args.database_url, buffer_path=folder / f"consumer-{os.getpid()}.buffer")
    adapters = field_adapters(args.protocol, point_map)
    # a long period: the figure is ingest alone (the cycle runs once, at the start, during the warm-up)
    monitor = Monitor(grid, point_map, historian, adapters, settings=CycleSettings(period_s=3600.0))
    ready = Path(args.ready_file)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the simulator did not come up within 60 s")
        await asyncio.sleep(0.05)
    task = asyncio.create_task(monitor.run())
    try:
        while await asyncio.to_thread(historian.count) == 0:
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.warmup)
        c0, r0, t0 = (
            await asyncio.to_thread(historian.count),
            sum(a.counters.received for a in adapters),
            time.perf_counter(),
        )
        await asyncio.sleep(args.window)
        c1, r1, t1 = (
            await asyncio.to_thread(historian.count),
            sum(a.counters.received for a in adapters),
            time.perf_counter(),
        )
    finally:
        monitor.stop()
        await task
    errors = {k: sum(getattr(a.counters, k) for a in adapters) for k in ("errors", "invalid", "gaps", "reconnects")}
    trips = [t for a in adapters for t in getattr(a, "round_trips_s", [])]
    stored = historian.count()
    received = sum(a.counters.received for a in adapters)
    historian.close()
    seconds = t1 - t0
    return {
        "points": len(point_map),
        "rows_per_s": (c1 - c0) / seconds,
        "received_per_s": (r1 - r0) / seconds,
        "window_s": seconds,
        "rows_in_window": c1 - c0,
        "stored_total": stored,
        "received_total": received,
        "messages": sum(a.counters.messages for a in adapters),
        "modbus_round_trip_ms": statistics.median(trips) * 1e3 if trips else None,
        **errors,
    }


# -- child: latency ----------------------------------------------------------------------------------------
def feeder_breakers(grid: Any, limit: int = 4) -> list[str]:
    """Closed switches whose opening de-energises more than 5 nodes, all on one feeder."""
    from opendso.grid.topology import analyse_topology

    feeders = analyse_topology(grid).node_feeder
    found = []
    for row in np.flatnonzero(grid.switches["closed"] == 1):
        closed = grid.switches["closed"].copy()
        closed[row] = 0
        dead = ~analyse_topology(grid.with_switch_states(closed)).node_energised
        if dead.sum() > 5 and len(set(feeders[dead].tolist())) == 1:
            found.append(str(grid.switch_names[row]))
            if len(found) >= limit:
                break
    if not found:
        raise RuntimeError(f"{grid.name}: no feeder breaker found")
    return found


@dataclass
class _Watch:
    breaker: str = ""
    want: str = ""  # "raised" or "cleared"
    seen: asyncio.Event | None = None
    at: float = 0.0


async def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Trip and close feeder breakers in a running simulator; return the trip-to-alarm latencies."""
    from opendso.grid.sources import load_grid
    from opendso.operations.cycle import CycleResult, CycleSettings
    from opendso.operations.monitor import Monitor
    from opendso.store.historian import Historian
    from opendso.telemetry.simulator import FieldSimulator

    grid = load_grid(LATENCY_GRID)
    breakers = feeder_breakers(grid)
    port = free_port()
    prefix = f"opendso-bench-latency-{os.getpid()}/"
    point_map = bench_point_map(
        grid,
        args.protocol,
        port=port,
        topic_prefix=prefix,
        per_topic=1,  # the simulator's own layout: one element per topic
        poll_period_s=LATENCY_FIELD_PERIOD_S,
        node_voltages=False,
    )
    sim = FieldSimulator(grid, point_map, speed=60.0, noise=1.0, seed=2, publish_period_s=LATENCY_FIELD_PERIOD_S)
    folder = Path(args.folder)
    historian = Historian.open(f"sqlite:///{folder / 'latency.db'}", buffer_path=folder / "latency.buffer")
    adapters = field_adapters(args.protocol, point_map)
    watch = _Watch()
    cycle_ms: list[float] = []

    def on_cycle(result: CycleResult) -> None:
        cycle_ms.append(result.timings_ms.get("cycle", float("nan")))
        if watch.seen is None or watch.seen.is_set():
            return
        for event in result.alarm_events:
            mine = (event.monitor == "switch" and event.channel == watch.breaker) or event.monitor == "supply"
            if mine and event.transition.value == watch.want:
                watch.at = time.perf_counter()
                watch.seen.set()
                return

    settings = CycleSettings(period_s=LATENCY_PERIOD_S)
    monitor = Monitor(grid, point_map, historian, adapters, settings=settings, on_cycle=on_cycle)
    for alarm_monitor in monitor.cycle.monitors:
        alarm_monitor.chatter_count = 10**9  # the benchmark trips the same breakers many times a minute
    rng = random.Random(3)
    latencies: list[float] = []
    clear_latencies: list[float] = []
    misses = 0
    await sim.start()
    task = asyncio.create_task(monitor.run())
    try:
        if args.protocol == "mqtt":
            for adapter in adapters:
                await adapter.wait_subscribed(10.0)
        elif args.protocol == "iec104":  # connected and the GI done (c104 may need a second session)
            async with asyncio.timeout(60.0):
                while not all(adapter.connected for adapter in adapters):
                    await asyncio.sleep(0.05)
        # warm-up: the monitor has seen every point and the alarms of the start have settled
        await asyncio.sleep(2 * LATENCY_PERIOD_S + 2 * LATENCY_FIELD_PERIOD_S)
        for k in range(args.trips):
            breaker = breakers[k % len(breakers)]
            for closed, bucket in ((False, latencies), (True, clear_latencies)):
                watch.breaker, watch.want, watch.seen = breaker, "cleared" if closed else "raised", asyncio.Event()
                await asyncio.sleep(rng.uniform(0.0, LATENCY_PERIOD_S))  # de-phase from the cycle
                t0 = time.perf_counter()
                sim.set_switch(breaker, closed)
                try:
                    await asyncio.wait_for(watch.seen.wait(), timeout=10.0)
                    bucket.append(watch.at - t0)
                except TimeoutError:
                    misses += 1
    finally:
        monitor.stop()
        await task
        await sim.stop()
        historian.close()
    return {
        "latencies_s": latencies,
        "clear_latencies_s": clear_latencies,
        "misses": misses,
        "cycle_ms": cycle_ms,
        "overruns": monitor.stats.overruns,
        "points": len(point_map),
        "nodes": grid.count("node"),
        "breakers": len(breakers),
    }


# -- the parent --------------------------------------------------------------------------------------------
def _child_cmd(role: str, *extra: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "bench_ingest.py"), "--role", role, *extra]


def _result_of(output: str) -> dict[str, Any] | None:
    data = None
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK) :])
    return data


def measure_ingest(
    protocol: str, url: str, folder: Path, *, warmup: float, window: float, per_topic: int
) -> dict[str, Any]:
    """Run simulator and consumer in two processes; return the consumer's and the simulator's figures."""
    port = free_port() if protocol in ("modbus", "iec104") else 0
    tag = f"{protocol}-{time.monotonic_ns()}"
    ready = folder / f"ready-{tag}"
    common = [
        "--protocol",
        protocol,
        "--port",
        str(port),
        "--topic-prefix",
        f"opendso-bench-{os.getpid()}-{tag}/" if protocol == "mqtt" else "",
        "--per-topic",
        str(per_topic),
        "--ready-file",
        str(ready),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    sim = subprocess.Popen(
        _child_cmd("sim", *common, "--publish-period", str(INGEST_PUBLISH_PERIOD_S)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        consumer = subprocess.run(
            _child_cmd(
                "consume",
                *common,
                "--database-url",
                url,
                "--folder",
                str(folder),
                "--warmup",
                str(warmup),
                "--window",
                str(window),
            ),
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120 + warmup + window,
        )
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim_out, _ = sim.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim_out, _ = sim.communicate()
    data = _result_of(consumer.stdout)
    if consumer.returncode != 0 or data is None:
        tail = "\n".join((consumer.stdout + consumer.stderr).splitlines()[-15:])
        raise RuntimeError(f"ingest consumer ({protocol}) failed, exit status {consumer.returncode}:\n{tail}")
    data["sim"] = _result_of(sim_out) or {}
    return data


def measure_latency(protocol: str, folder: Path, trips: int) -> dict[str, Any]:
    """Run the latency child for one protocol and return its figures."""
    proc = subprocess.run(
        _child_cmd("latency", "--protocol", protocol, "--folder", str(folder), "--trips", str(trips)),
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        timeout=60 + 8 * trips,
    )
    data = _result_of(proc.stdout)
    if proc.returncode != 0 or data is None:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"latency ({protocol}) failed, exit status {proc.returncode}:\n{tail}")
    return data


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation), NaN when empty."""
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Measure ingest and latency; print the tables and PASS/FAIL; exit 1 when something could not be measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="SQLite only, 2 s window, 3 trips (< 40 s)")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    parser.add_argument("--window", type=float, help="ingest measuring window in seconds (default 10, quick 2)")
    parser.add_argument("--trips", type=int, help="breaker trips per protocol (default 20, quick 3)")
    parser.add_argument("--per-topic", type=int, default=100, help="MQTT points per message in the ingest run")
    parser.add_argument("--only", choices=("ingest", "latency"), help="run one part")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help=f"comma-separated, of {', '.join(PROTOCOLS)} (default all)"
    )
    # child roles (internal)
    parser.add_argument("--role", choices=("sim", "consume", "latency"), help=argparse.SUPPRESS)
    parser.add_argument("--protocol", default="modbus", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--topic-prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", default="", help=argparse.SUPPRESS)
    parser.add_argument("--publish-period", type=float, default=INGEST_PUBLISH_PERIOD_S, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_warnings()
    logging.disable(logging.WARNING)

    if args.role == "sim":
        emit(asyncio.run(run_simulator(args)))
        return 0
    if args.role == "consume":
        args.window = args.window or 10.0
        emit(asyncio.run(run_consumer(args)))
        return 0
    if args.role == "latency":
        emit(asyncio.run(run_latency(args)))
        return 0

    from opendso.store.testing import fresh_postgres_database, postgres_test_url, postgres_unreachable_reason

    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"--protocols: unknown {', '.join(unknown)} (choose from {', '.join(PROTOCOLS)})")
    window = args.window or (2.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 3.0
    trips = args.trips or (3 if args.quick else 20)
    targets: list[Target] = []
    info: list[list[str]] = []
    complete = True
    print(f"Ingest and latency on {os.cpu_count()} cores" + (" (quick)" if args.quick else ""), flush=True)

    with tempfile.TemporaryDirectory(prefix="opendso-bench-ingest-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "ingest"):
            rows = []
            backends: list[tuple[str, str | None]] = [("sqlite", None)]
            if not args.quick:
                backends.append(("postgresql", postgres_unreachable_reason()))
            for backend, unreachable in backends:
                for protocol in protocols:
                    label = f"{protocol} -> {backend}"
                    if unreachable:
                        rows.append([label, "-", "-", "-", "-", "-", "n/a", unreachable[:60]])
                        targets.append(Target(f"ingest {label} (points/s)", None, INGEST_TARGET, "min", "points/s"))
                        complete = False
                        continue
                    print(f"  ingest {label} ...", flush=True)
                    with contextlib.ExitStack() as stack:
                        if backend == "sqlite":
                            url = f"sqlite:///{folder / f'ingest-{protocol}.db'}"
                        else:
                            url = stack.enter_context(fresh_postgres_database(postgres_test_url()))
                        try:
                            got = measure_ingest(
                                protocol, url, folder, warmup=warmup, window=window, per_topic=args.per_topic
                            )
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            print(f"    {exc}", flush=True)
                            rows.append([label, "-", "-", "-", "-", "-", "n/a", str(exc).splitlines()[0][:60]])
                            targets.append(Target(f"ingest {label} (points/s)", None, INGEST_TARGET, "min", "points/s"))
                            complete = False
                            continue
                    sim = got["sim"]
                    if protocol == "mqtt":
                        layout = f"{args.per_topic} points/message, QoS 1"
                    elif protocol == "iec104":
                        layout = "spontaneous (COT 3), k 12, w 8"
                    else:
                        layout = (
                            f"poll every {INGEST_PUBLISH_PERIOD_S} s, read round trip "
                            f"{got['modbus_round_trip_ms'] or float('nan'):.2f} ms"
                        )
                    rows.append(
                        [
                            label,
                            f"{got['points']:,}",
                            f"{sim.get('publishes_per_s', float('nan')):.1f}",
                            f"{sim.get('points_published_per_s', float('nan')):,.0f}",
                            f"{got['received_per_s']:,.0f}",
                            f"{got['rows_per_s']:,.0f}",
                            "PASS" if got["rows_per_s"] >= INGEST_TARGET else "FAIL",
                            f"{layout}; errors {got['errors']}, gaps {got['gaps']}",
                        ]
                    )
                    targets.append(
                        Target(
                            f"ingest {label} (points/s)",
                            got["rows_per_s"],
                            INGEST_TARGET,
                            "min",
                            "points/s",
                            f"rows stored over {got['window_s']:.0f} s; sim and consumer in 2 processes",
                        )
                    )
            print_table(
                f"End-to-end ingest from the field simulator ({INGEST_GRID}), simulator and monitor ingest in "
                f"separate processes, rows stored in the historian over {window:.0f} s after {warmup:.0f} s warm-up",
                [
                    "protocol -> historian",
                    "points",
                    "sim publishes/s",
                    "sim points/s",
                    "adapter points/s",
                    "stored rows/s",
                    "verdict",
                    "note",
                ],
                rows,
            )

        if args.only in (None, "latency"):
            rows = []
            cycle_all: list[float] = []
            for protocol in protocols:
                print(f"  latency {protocol}: {trips} breaker trips ...", flush=True)
                limit = LATENCY_BUDGET_S + LATENCY_PERIOD_S
                try:
                    got = measure_latency(protocol, folder, trips)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"    {exc}", flush=True)
                    rows.append([protocol, "-", "-", "-", "-", "-", "n/a", str(exc).splitlines()[0][:60]])
                    targets.append(Target(f"trip -> alarm p99, {protocol}", None, limit, "max", "s"))
                    complete = False
                    continue
                lat = got["latencies_s"]
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                clear = got["clear_latencies_s"]
                cycle_all += got["cycle_ms"]
                verdict = "n/a" if not lat else "PASS" if p99 <= limit and not got["misses"] else "FAIL"
                rows.append(
                    [
                        protocol,
                        f"{len(lat)}",
                        f"{p50 * 1e3:.0f}",
                        f"{p99 * 1e3:.0f}",
                        f"{max(lat) * 1e3:.0f}" if lat else "-",
                        f"{percentile(clear, 50) * 1e3:.0f}",
                        verdict,
                        f"missed {got['misses']}, overruns {got['overruns']}, "
                        f"{got['nodes']} nodes / {got['points']} points",
                    ]
                )
                targets.append(
                    Target(
                        f"trip -> alarm p99, {protocol}",
                        p99 if lat and not got["misses"] else None,
                        limit,
                        "max",
                        "s",
                        f"{len(lat)} trips; p50 {p50 * 1e3:.0f} ms; cycle {LATENCY_PERIOD_S} s",
                    )
                )
                info.append([f"trip -> alarm p50, {protocol}", f"{p50 * 1e3:.0f} ms", f"p99 {p99 * 1e3:.0f} ms"])
            print_table(
                f"Latency from a breaker opened in the simulator to the raised alarm in a monitor cycle "
                f"({LATENCY_GRID}; cycle period {LATENCY_PERIOD_S} s; simulator publishes and Modbus polls "
                f"every {LATENCY_FIELD_PERIOD_S} s; limit {LATENCY_BUDGET_S + LATENCY_PERIOD_S} s)",
                ["protocol", "trips", "p50 ms", "p99 ms", "max ms", "clear p50 ms", "verdict", "note"],
                rows,
            )
            if cycle_all:
                median_ms = statistics.median(cycle_all)
                print(
                    f"Cycle time during the latency runs ({LATENCY_GRID}): median {median_ms:.1f} ms, "
                    f"max {max(cycle_all):.1f} ms over {len(cycle_all)} cycles (10k nodes: see bench_realtime.py)",
                    flush=True,
                )
                info.append(
                    [
                        "cycle time during latency runs",
                        f"{statistics.median(cycle_all):.1f} ms",
                        f"{LATENCY_GRID}, max {max(cycle_all):.1f} ms",
                    ]
                )

    if targets:
        print_table("targets", ["target", "measured", "limit", "result", "note"], [t.cells() for t in targets])
    write_report(args.json, "ingest", targets, info)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
