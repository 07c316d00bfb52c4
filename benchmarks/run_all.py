"""Run every OpenDSO benchmark, each in its own process, and print the targets with PASS/FAIL.

``make bench`` runs this file. Options: ``--quick`` (small step counts and one feeder size: a
smoke run of a minute or two), ``--full`` (the full year on 1-MVLV-urban-all too instead of a
quarter scaled up), ``--only NAME`` (one benchmark). The peak memory of each benchmark is the
largest resident set of its process tree (``ru_maxrss`` from ``wait4``).

Exit status: 0 when every benchmark ran (whatever its targets say), 1 when one crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import Target, fmt_mb, fmt_s, print_table

BENCH_DIR = Path(__file__).resolve().parent

#: name -> (script, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "year": ("bench_year.py", "a year of quarter-hours on SimBench MV-urban and MVLV-urban-all"),
    "feeders": ("bench_feeders.py", "power flow, state estimation and conversion on 1k/10k/100k-node feeders"),
    "overhead": ("bench_overhead.py", "OpenDSO against power-grid-model called directly, small grid"),
    "historian": ("bench_historian.py", "historian write throughput, SQLite and PostgreSQL"),
    "realtime": ("bench_realtime.py", "real-time cycle on the demo grid and a 10,000-node grid"),
    "ingest": (
        "bench_ingest.py",
        "end-to-end ingest through MQTT/Modbus/IEC 104 from the field simulator, trip-to-alarm latency",
    ),
    "switch_latency": (
        "bench_switch_latency.py",
        "switch change in the field to the screen over IEC 104 and Modbus, event-driven cycle off (before) and on",
    ),
    "ui": (
        "bench_ui.py",
        "the control room through Chromium: page load, state-to-screen latency, /api/state throughput",
    ),
    "flisr": (
        "bench_flisr.py",
        "FLISR planning on a 10,000-node grid and SimBench MV grids, beside exhaustive search",
    ),
    "flisr_e2e": (
        "bench_flisr_e2e.py",
        "FLISR end to end over IEC 104 with a slow link: trip in the field to the last restored customer",
    ),
    "hosting": (
        "bench_hosting.py",
        "time-series hosting capacity on Dask (1, 2, 4 workers) beside a pandapower loop",
    ),
    "forecast": (
        "bench_forecast.py",
        "OpenSTEF forecasts against persistence and weekly-profile baselines: rMAE, rCRPS, train and predict time",
    ),
    "congestion": (
        "bench_congestion.py",
        "congestion forecast: scenario x interval batch power flows per second beside a pandapower loop",
    ),
    "vvo": (
        "bench_vvo.py",
        "Volt/VAR optimisation (taps, DER Q; HiGHS) on SimBench MV grids beside a brute-force tap search",
    ),
    "anm": ("bench_anm.py", "active network management: decision time per cycle on SimBench MV grids"),
    "uftp_selection": (
        "bench_uftp_selection.py",
        "UFTP day-ahead round, 10,000-node grid: sensitivities (vs pandapower), MILP selection of 1,000 offers",
    ),
    "openadr": (
        "bench_openadr.py",
        "one OpenADR 2.0b event to 1,000 VENs over mutual TLS until all opted in, beside plain openleadr",
    ),
    "login_flood": (
        "bench_login_flood.py",
        "200 concurrent logins against opendso run: status latency, cycle time and memory, idle vs flood",
    ),
}


def run_benchmark(name: str, quick: bool, full: bool) -> tuple[dict[str, Any] | None, float, float, int]:
    """Run one benchmark script; return its JSON report, seconds, peak memory (MB) and exit status."""
    script, _ = BENCHMARKS[name]
    with tempfile.TemporaryDirectory(prefix="opendso-bench-") as folder:
        report = Path(folder) / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / script), "--json", str(report)]
        if quick:
            cmd.append("--quick")
        if full and name == "year":
            cmd.append("--full")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        data = json.loads(report.read_text()) if report.is_file() else None
    return data, seconds, usage.ru_maxrss / 1024.0, proc.returncode


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: small step counts, 1k-node feeder only")
    parser.add_argument("--full", action="store_true", help="full year on MVLV-urban-all (adds about 10 minutes)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    args = parser.parse_args(argv)

    names = [args.only] if args.only else list(BENCHMARKS)
    print(f"OpenDSO benchmarks on {os.cpu_count()} cores: {', '.join(names)}" + (" (quick)" if args.quick else ""))
    print("Times are medians of repeated runs (repeat counts are printed per benchmark); other load on the")
    print("machine makes them noisy, so read ratios near a limit with that in mind.", flush=True)
    reports: dict[str, dict[str, Any] | None] = {}
    runs: list[list[str]] = []
    crashed = False
    t_start = time.perf_counter()
    for name in names:
        print(f"\n######## {name}: {BENCHMARKS[name][1]}", flush=True)
        data, seconds, peak_mb, status = run_benchmark(name, args.quick, args.full)
        reports[name] = data
        ok = status == 0 and data is not None
        crashed |= not ok
        runs.append([name, fmt_s(seconds), fmt_mb(peak_mb), "ok" if ok else f"crashed (exit status {status})"])

    targets: list[Target] = []
    info: list[list[str]] = []
    for data in reports.values():
        if data is None:
            continue
        targets += [Target(**t) for t in data["targets"]]
        info += [list(r) for r in data["info"]]

    print("\n######## summary")
    print_table("benchmarks run", ["benchmark", "wall time", "peak memory (process tree)", "status"], runs)
    if info:
        print_table("measured figures and ratios", ["what", "value", "detail"], info)
    print_table(
        "targets",
        ["target", "measured", "limit", "result", "note"],
        [t.cells() for t in targets] or [["(no targets in the benchmarks run)", "", "", "", ""]],
    )
    passed = sum(t.passed is True for t in targets)
    failed = sum(t.passed is False for t in targets)
    unknown = sum(t.passed is None for t in targets)
    print(f"{passed} PASS, {failed} FAIL, {unknown} not measured; total {fmt_s(time.perf_counter() - t_start)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
