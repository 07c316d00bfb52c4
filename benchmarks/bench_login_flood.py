"""Benchmark: a login flood against `opendso run`, and what the rest of the control room feels of it.

`opendso run` on the demo grid runs in its own process with production password hashing
(argon2id, 64 MiB, time cost 3). An attacker process sends 200 concurrent logins with unknown
user names from 50 loopback addresses (127.0.0.2-51); meanwhile a reader polls ``GET
/api/status`` every 50 ms with a bearer token, and a real user logs in from another address.
Measured, idle and during the flood, side by side in one run:

- ``/api/status`` latency: median, p99 and max;
- the real-time cycle: its duration as the status reports it, and the cycle overruns the
  service logs (``event=cycle_overrun``);
- the service's peak resident memory (``VmHWM``) and its memory before the flood;
- how long the real user's login took, and its answer (200, or 429 with ``Retry-After``);
- the flood's answers (401 for a checked login, 429 refused before any hashing) and duration.

``--src FOLDER`` runs another checkout's code (its ``src``) with this venv, e.g. the main branch
before the login gate, for the "before" figures. Targets (issue "A control room operators can
trust", item 1): status p99 during the flood <= 1 s, no cycle overrun, a real login within 5 s.

Run standalone: ``.venv/bin/python benchmarks/bench_login_flood.py`` (``--quick``: 100 logins).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _util import Target, fmt_s, print_table, write_report

ADMIN_PASSWORD = "benchmark admin password"
RUN = [sys.executable, "-c", "import sys; from opendso.cli import main; sys.exit(main())", "run"]

#: The attacker: N concurrent logins with unknown names from M loopback addresses; prints [[status, retry], ...].
FLOOD = """
import asyncio, json, sys
import httpx

async def main(url, n, sources):
    transports = [httpx.AsyncHTTPTransport(local_address=f"127.0.0.{k + 2}") for k in range(sources)]
    clients = [httpx.AsyncClient(base_url=url, timeout=600, transport=t) for t in transports]
    async def one(k):
        try:
            r = await clients[k % sources].post(
                "/api/auth/login", json={"username": f"nobody{k}", "password": "guess guess guess"}
            )
            return [r.status_code, r.headers.get("retry-after")]
        except httpx.HTTPError as exc:
            return [0, type(exc).__name__]
    out = await asyncio.gather(*(one(k) for k in range(n)))
    for c in clients:
        await c.aclose()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return max(values) if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def measure(src: Path | None, logins: int, sources: int, idle_s: float) -> dict[str, Any]:
    """Start `opendso run`, measure idle, flood it, measure again; return the figures."""
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="opendso-flood-"))
    env = dict(os.environ, OPENDSO_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONWARNINGS="ignore")
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    server = subprocess.Popen(
        [*RUN, "--data-dir", str(folder), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(server.stderr or []), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("opendso run did not start:\n" + "".join(log_lines[-20:]))
            time.sleep(0.2)
        token = httpx.post(f"{url}/api/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=60)
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        reader = httpx.Client(base_url=url, headers=headers, timeout=600)

        def sample(stop: threading.Event, latencies: list[float], cycles: list[float]) -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                status = reader.get("/api/status").json()
                latencies.append(time.perf_counter() - t0)
                if status.get("cycle_ms") is not None:
                    cycles.append(float(status["cycle_ms"]))
                time.sleep(0.05)

        time.sleep(3.0)  # let the cycle settle after start-up
        idle_lat: list[float] = []
        idle_cycles: list[float] = []
        overruns_before = sum("event=cycle_overrun" in line for line in log_lines)
        stop = threading.Event()
        watcher = threading.Thread(target=sample, args=(stop, idle_lat, idle_cycles))
        watcher.start()
        time.sleep(idle_s)
        stop.set()
        watcher.join()
        idle_overruns = sum("event=cycle_overrun" in line for line in log_lines) - overruns_before
        rss_idle = _memory_kb(server.pid, "VmRSS") / 1024

        flood_lat: list[float] = []
        flood_cycles: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=sample, args=(stop, flood_lat, flood_cycles))
        overruns_before = sum("event=cycle_overrun" in line for line in log_lines)
        watcher.start()
        started = time.perf_counter()
        attacker = subprocess.Popen(
            [sys.executable, "-c", FLOOD, url, str(logins), str(sources)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5)
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.1.1"), timeout=600) as console:
            t0 = time.perf_counter()
            real = console.post(f"{url}/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            real_s = time.perf_counter() - t0
        out, _ = attacker.communicate(timeout=900)
        flood_s = time.perf_counter() - started
        time.sleep(1.0)
        stop.set()
        watcher.join()
        flood_overruns = sum("event=cycle_overrun" in line for line in log_lines) - overruns_before
        peak_mb = _memory_kb(server.pid, "VmHWM") / 1024
        answers = json.loads(out)
        reader.close()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    codes: dict[str, int] = {}
    for status, _retry in answers:
        codes[str(status)] = codes.get(str(status), 0) + 1
    return {
        "idle": {
            "status_p50_s": statistics.median(idle_lat),
            "status_p99_s": _quantile(idle_lat, 0.99),
            "status_max_s": max(idle_lat),
            "cycle_ms_median": statistics.median(idle_cycles) if idle_cycles else None,
            "cycle_ms_max": max(idle_cycles) if idle_cycles else None,
            "overruns": idle_overruns,
            "rss_mb": rss_idle,
        },
        "flood": {
            "status_p50_s": statistics.median(flood_lat),
            "status_p99_s": _quantile(flood_lat, 0.99),
            "status_max_s": max(flood_lat),
            "cycle_ms_median": statistics.median(flood_cycles) if flood_cycles else None,
            "cycle_ms_max": max(flood_cycles) if flood_cycles else None,
            "overruns": flood_overruns,
            "peak_rss_mb": peak_mb,
            "duration_s": flood_s,
            "answers": codes,
            "real_login_s": real_s,
            "real_login_status": real.status_code,
            "real_login_retry_after": real.headers.get("retry-after"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the flood once and print idle and flood figures side by side, with PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 logins instead of 200")
    parser.add_argument("--src", type=Path, help="run this checkout's code (its src folder) instead")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    logins = 100 if args.quick else 200
    got = measure(args.src, logins, 50, idle_s=5.0 if args.quick else 10.0)
    idle, flood = got["idle"], got["flood"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f} ms"

    rows = [
        ["GET /api/status p50", fmt_s(idle["status_p50_s"]), fmt_s(flood["status_p50_s"])],
        ["GET /api/status p99", fmt_s(idle["status_p99_s"]), fmt_s(flood["status_p99_s"])],
        ["GET /api/status max", fmt_s(idle["status_max_s"]), fmt_s(flood["status_max_s"])],
        ["cycle time median", ms(idle["cycle_ms_median"]), ms(flood["cycle_ms_median"])],
        ["cycle time max", ms(idle["cycle_ms_max"]), ms(flood["cycle_ms_max"])],
        ["cycle overruns", str(idle["overruns"]), str(flood["overruns"])],
        ["service memory", f"{idle['rss_mb']:,.0f} MB", f"{flood['peak_rss_mb']:,.0f} MB (peak)"],
        ["real login", "", f"{fmt_s(flood['real_login_s'])} -> {flood['real_login_status']}"],
        ["flood answers", "", ", ".join(f"{k}: {v}" for k, v in sorted(flood["answers"].items()))],
        ["flood duration", "", fmt_s(flood["duration_s"])],
    ]
    title = f"Login flood: {logins} concurrent logins from 50 addresses against opendso run (demo grid)"
    if args.src:
        title += f" [code of {args.src}]"
    print_table(title, ["", "idle", "during the flood"], rows)
    targets = [
        Target(
            "status p99 during a login flood",
            flood["status_p99_s"],
            1.0,
            "max",
            "s",
            f"idle p99 {fmt_s(idle['status_p99_s'])}",
        ),
        Target(
            "cycle overruns during the flood", float(flood["overruns"]), 0.0, "max", "x", "the cycle keeps its period"
        ),
        Target(
            "a real login during the flood",
            flood["real_login_s"],
            5.0,
            "max",
            "s",
            f"answer {flood['real_login_status']}",
        ),
    ]
    print_table("Targets", ["target", "measured", "limit", "verdict", "note"], [t.cells() for t in targets])
    print(json.dumps(got))
    write_report(args.json, "login_flood", targets, [[r[0], r[1], r[2]] for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
