"""Benchmark: the control room as an operator sees it, through `opendso run`'s process and Chromium.

The whole control room runs as `opendso run` starts it (field simulator, Modbus on loopback,
historian, real-time cycle, alarms, web service) on the demo grid and on SimBench's
1-MVLV-urban-all (10,458 nodes); Debian's Chromium, driven by Playwright, is the operator's
screen. Measured:

- page load to a drawn network: from the navigation start of a signed-in page to the first
  frame with the network on the canvas (the page's own clock); median of repeated reloads.
  Targets from issue 4: < 2 s for the demo grid, < 3 s for 10,000 nodes (2 s is the usual SCADA
  display call-up target);
- state-change-to-screen latency over the WebSocket: from the moment the service publishes a
  cycle's state to the end of the frame that draws it (``published_at`` in each state message
  against the page's clock; same machine, same system clock); p50/p99 over every state of the
  run. Target: p99 < 1 s;
- field-to-screen latency (demo grid): from a breaker opening in the simulated field to the
  frame that greys the de-energised feeder: protocol, poll, cycle period, estimation, WebSocket
  and drawing together, so it is bounded by the cycle period (reported, no target);
- API throughput of ``GET /api/state`` (bearer token, keep-alive, several concurrent clients in
  a separate process, so the load generator does not share the service's interpreter), next to
  ``GET /api/status`` as the floor of the framework's per-request cost.

Run standalone: ``.venv/bin/python benchmarks/bench_ui.py`` (``--quick``: the demo grid only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import RESULT_MARK, Target, emit, print_table, quiet_warnings, write_report

GRIDS = {"demo": "demo", "10k nodes": "simbench:1-MVLV-urban-all-0-sw"}
PASSWORD = "benchmark admin password"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("OPENDSO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the load generator (a child process) ------------------------------------------------------------------
async def _load(url: str, token: str, path: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        await client.get(path)  # warm-up: connections open
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.get(path)
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                sizes.append(len(response.content))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * _percentile(latencies, 50) if latencies else None,
        "p99_ms": 1000 * _percentile(latencies, 99) if latencies else None,
        "bytes": statistics.median(sizes) if sizes else 0,
        "errors": errors,
    }


def load_child(url: str, token: str, path: str, clients: int, seconds: float) -> None:
    """Child process: load ``path`` and print the figures as the JSON result line."""
    emit(asyncio.run(_load(url, token, path, clients, seconds)))


def _run_load(url: str, token: str, path: str, clients: int, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--load", url, token, path, str(clients), str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120).stdout
    line = next(x for x in reversed(out.splitlines()) if x.startswith(RESULT_MARK))
    result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
    return result


# -- the operator's screen -----------------------------------------------------------------------------------
def _token(url: str) -> str:
    import httpx

    response = httpx.post(f"{url}/api/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _signed_in_page(browser: Any, url: str) -> tuple[Any, float]:
    """A page signed in as the administrator, and the seconds from 'Sign in' to the drawn network."""
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    page.goto(url + "/")
    page.fill("#login-user", "admin")
    page.fill("#login-password", PASSWORD)
    t0 = time.perf_counter()
    page.click("button[type=submit]")
    page.wait_for_function("window.opendso.stats().nodesDrawn > 0", timeout=60_000, polling="raf")
    seconds = time.perf_counter() - t0
    page.wait_for_function("document.getElementById('st-link').textContent === 'live'", timeout=30_000)
    return page, seconds


def page_loads(page: Any, reloads: int) -> list[float]:
    """Seconds from navigation start to the first drawn network, for ``reloads`` reloads of a signed-in page."""
    out = []
    for _ in range(reloads):
        page.reload()
        page.wait_for_function("window.opendso.stats().timing.firstDraw !== null", timeout=60_000, polling="raf")
        out.append(page.evaluate("window.opendso.stats().timing.firstDraw") / 1000.0)
    return out


def ws_latencies(page: Any, seconds: float) -> list[float]:
    """Milliseconds from publish to drawn for every state pushed during ``seconds``."""
    page.evaluate("window.opendso.latencies().length")  # page is live
    before = len(page.evaluate("window.opendso.latencies()"))
    time.sleep(seconds)
    samples: list[float] = page.evaluate("window.opendso.latencies()")[before:]
    return samples


def field_to_screen(page: Any, process: Any, breaker: str, toggles: int) -> list[float]:
    """Seconds from a breaker opening (or closing) in the simulated field to the frame that shows it."""
    page.evaluate(
        """() => {
        window.__dead = [];
        let last = window.opendso.stats().deadNodes;
        document.getElementById('network-canvas').addEventListener('drawn', () => {
            const dead = window.opendso.stats().deadNodes;
            if (dead !== last) { window.__dead.push([Date.now() / 1000, dead]); last = dead; }
        });
    }"""
    )
    out = []
    for k in range(toggles):
        opening = k % 2 == 0
        seen = len(page.evaluate("window.__dead"))
        t0 = time.time()
        process.set_switch(breaker, not opening)
        page.wait_for_function(f"window.__dead.length > {seen}", timeout=30_000)
        at, dead = page.evaluate(f"window.__dead[{seen}]")
        assert (dead > 0) == opening, (dead, opening)
        out.append(at - t0)
        time.sleep(0.3)
    return out


def measure(name: str, source: str, *, quick: bool) -> dict[str, Any]:
    """Every figure of one grid: page loads, WebSocket latency, field-to-screen latency, API throughput."""
    from playwright.sync_api import sync_playwright

    from opendso.demo import feeder_breaker as _feeder_breaker
    from opendso.grid.sources import load_grid
    from opendso.runtime import ControlRoomProcess

    grid = load_grid(source)
    big = grid.count("node") > 5000
    period = 0.5 if big else 0.25  # many states in a short run; the 10k cycle itself takes ~0.25 s
    folder = Path(tempfile.mkdtemp(prefix="opendso-bench-ui-"))
    process = ControlRoomProcess(grid, folder, port=0, period_s=period, admin_password=PASSWORD)
    figures: dict[str, Any] = {"grid": name, "nodes": grid.count("node"), "period_s": period}
    executable = _chromium()
    try:
        with process.in_thread(timeout_s=300), sync_playwright() as pw:
            url = process.url
            assert url is not None
            time.sleep(3 * period + 1)  # a few cycles: an estimated state to show
            if executable is None:
                figures["browser"] = "Chromium not found: page and latency figures not measured"
            else:
                browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                page, figures["first_login_s"] = _signed_in_page(browser, url)
                loads = page_loads(page, 3 if quick else 7)
                figures["page_load_s"] = statistics.median(loads)
                figures["page_load_runs_s"] = loads
                figures["frame_ms"] = page.evaluate("window.opendso.stats().lastFrameMs")
                samples = ws_latencies(page, 10 if quick else 40)
                figures["ws_states"] = len(samples)
                figures["ws_p50_ms"] = _percentile(samples, 50) if samples else None
                figures["ws_p99_ms"] = _percentile(samples, 99) if samples else None
                breaker = _feeder_breaker(grid)
                if not big and breaker is not None:
                    # the whole path from the field; bounded by the cycle period used here
                    f2s = field_to_screen(page, process, breaker, 6 if quick else 20)
                    figures["field_to_screen_p50_s"] = _percentile(f2s, 50)
                    figures["field_to_screen_p99_s"] = _percentile(f2s, 99)
                browser.close()
            token = _token(url)
            seconds = 3.0 if quick else 10.0
            for path in ("/api/state", "/api/status"):
                figures[path] = _run_load(url, token, path, clients=8, seconds=seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures (and the JSON report for run_all.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the demo grid only, short runs")
    parser.add_argument("--json", help="write the report here (for run_all.py)")
    parser.add_argument("--grid", choices=sorted(GRIDS), action="append", help="only these grids (repeatable)")
    parser.add_argument(
        "--load", nargs=5, metavar=("URL", "TOKEN", "PATH", "CLIENTS", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    quiet_warnings()
    if args.load:
        url, token, path, clients, seconds = args.load
        load_child(url, token, path, int(clients), float(seconds))
        return 0

    names = args.grid or (["demo"] if args.quick else list(GRIDS))
    grids = {name: GRIDS[name] for name in names}
    results = [measure(name, source, quick=args.quick) for name, source in grids.items()]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    rows = []
    for r in results:
        rows.append(
            [
                f"{r['grid']} ({r['nodes']:,} nodes)",
                ms(1000 * r["page_load_s"]) if "page_load_s" in r else "-",
                ms(1000 * r["first_login_s"]) if "first_login_s" in r else "-",
                ms(r.get("frame_ms")),
                f"{ms(r.get('ws_p50_ms'))} / {ms(r.get('ws_p99_ms'))} ({r.get('ws_states', 0)} states)",
                f"{r['/api/state']['requests_per_s']:,.0f}/s, {r['/api/state']['bytes'] / 1e3:,.0f} kB, "
                f"p99 {ms(r['/api/state']['p99_ms'])}",
                f"{r['/api/status']['requests_per_s']:,.0f}/s",
            ]
        )
    print_table(
        "control room through Chromium (medians; latency p50 / p99)",
        [
            "grid",
            "page load to drawn network",
            "sign-in to drawn",
            "one frame",
            "state to screen (WebSocket)",
            "GET /api/state, 8 clients",
            "GET /api/status",
        ],
        rows,
    )
    demo = results[0]
    if "field_to_screen_p50_s" in demo:  # measured on the demo grid only
        print(
            f"field to screen (demo, breaker opened in the simulated field, cycle {demo['period_s']} s): "
            f"p50 {demo['field_to_screen_p50_s'] * 1000:.0f} ms, p99 {demo['field_to_screen_p99_s'] * 1000:.0f} ms"
        )
    targets: list[Target] = []
    for r in results:
        limit = 3.0 if r["nodes"] > 5000 else 2.0
        targets.append(Target(f"page load to drawn network, {r['grid']}", r.get("page_load_s"), limit, "max", "s"))
        p99 = r.get("ws_p99_ms")
        targets.append(
            Target(
                f"state-change-to-screen p99 over the WebSocket, {r['grid']}",
                p99 / 1000 if p99 is not None else None,
                1.0,
                "max",
                "s",
                f"{r.get('ws_states', 0)} states",
            )
        )
    info = [
        [
            f"GET /api/state throughput, {r['grid']}",
            f"{r['/api/state']['requests_per_s']:,.0f} requests/s",
            f"8 clients; {r['/api/state']['bytes'] / 1e3:,.0f} kB each; "
            f"/api/status {r['/api/status']['requests_per_s']:,.0f}/s",
        ]
        for r in results
    ]
    if "field_to_screen_p50_s" in demo:
        info.append(
            [
                "field to screen, demo",
                f"p50 {demo['field_to_screen_p50_s']:.2f} s, p99 {demo['field_to_screen_p99_s']:.2f} s",
                f"breaker opened/closed in the simulated field; cycle {demo['period_s']} s",
            ]
        )
    write_report(args.json, "ui", targets, info)
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
