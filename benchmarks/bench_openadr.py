"""Benchmark: one OpenADR 2.0b event to N VENs over loopback with mutual TLS, until every VEN has opted in.

Two sides, each with its VTN in a process of its own and the VENs (real openleadr
``OpenADRClient`` s, each with its own client certificate from one ``trustme`` CA) in a few
child processes:

- *OpenDSO*: :class:`opendso.der.openadr.DemandResponseVtn`: mutual TLS, every VEN enrolled
  against the DER registry (SQLite), registration checked against the enrollment, one
  :class:`~opendso.der.openadr.DrEvent` fanned out to every VEN, opt-ins recorded per VEN;
- *openleadr plain*: ``OpenADRServer`` with the same TLS files and fingerprint lookup from a
  dict, ``add_event`` per VEN with an opt callback: the comparison (the ratio is printed).

After every VEN has registered, the VTN creates one event to all of them and polls its own
state until every VEN's ``optIn`` has arrived; the time from creating the event to the last
opt-in is one run (median of ``--repeats``, each a new event). VENs poll every ``--poll``
seconds (the pull model of simple HTTP), so a run takes up to about one poll interval plus the
time the VTN needs to answer every VEN once. openleadr answers a few tens of messages per second
on one core (XML schema validation and signatures on every message), so 1,000 VENs need a poll
interval of a minute (the default) for the VTN to keep up; at 10 s it falls behind.

Options: ``--vens N`` (default 1,000), ``--quick`` (50 VENs, 2 repeats, 10 s polls), ``--poll S``,
``--procs P`` (VEN processes), ``--json`` (for run_all.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _util import BENCH_DIR, Target, emit, fmt_ratio, fmt_s, print_table, quiet_warnings, run_child, write_report

VTN_ID = "BENCH-VTN"
#: Registrations in flight at once per VEN process (keeps the VTN's accept queue sane).
REGISTER_BATCH = 25


# -- certificates ---------------------------------------------------------------------------------------------
def make_pki(folder: Path, n: int) -> None:
    """A CA, the VTN's certificate for 127.0.0.1 and one client certificate per VEN, as PEM files."""
    import trustme
    from openleadr import utils

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(folder / "vtn.pem"))
    server.private_key_pem.write_to_path(str(folder / "vtn.key"))
    lines = []
    for k in range(n):
        leaf = ca.issue_cert(f"ven{k}.bench.example")
        leaf.cert_chain_pems[0].write_to_path(str(folder / f"ven{k}.pem"))
        leaf.private_key_pem.write_to_path(str(folder / f"ven{k}.key"))
        lines.append(utils.certificate_fingerprint(leaf.cert_chain_pems[0].bytes()))
    (folder / "fingerprints.txt").write_text("\n".join(lines) + "\n")
    (folder / "vtn.fingerprint").write_text(utils.certificate_fingerprint(server.cert_chain_pems[0].bytes()))


# -- VEN processes --------------------------------------------------------------------------------------------
async def run_vens(url: str, folder: Path, first: int, last: int) -> None:
    """Register VENs ``first..last-1``, answer every event with optIn, print READY, run until stdin closes."""
    from openleadr import OpenADRClient

    vtn_fp = (folder / "vtn.fingerprint").read_text().strip()

    async def opt_in(event: dict[str, Any]) -> str:
        return "optIn"

    clients = []
    for k in range(first, last):
        client = OpenADRClient(
            ven_name=f"ven{k}",
            vtn_url=url,
            cert=str(folder / f"ven{k}.pem"),
            key=str(folder / f"ven{k}.key"),
            ca_file=str(folder / "ca.pem"),
            vtn_fingerprint=vtn_fp,
            show_fingerprint=False,
        )
        client.add_handler("on_event", opt_in)
        clients.append(client)
    t0 = time.perf_counter()
    for start in range(0, len(clients), REGISTER_BATCH):
        await asyncio.gather(*(c.run() for c in clients[start : start + REGISTER_BATCH]))
        done = start + REGISTER_BATCH
        sys.stderr.write(f"VENs {first}..{last}: {done} registering done after {time.perf_counter() - t0:.1f} s\n")
        sys.stderr.flush()
    missing = [c.ven_name for c in clients if not c.registration_id]
    sys.stdout.write(f"READY {len(clients) - len(missing)} {len(missing)}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for client in clients:
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)
        if client.client_session is not None:
            await client.client_session.close()


# -- VTN processes --------------------------------------------------------------------------------------------
class PlainVtn:
    """openleadr's OpenADRServer as its documentation sets it up: TLS files, lookups from dicts, opt callbacks."""

    def __init__(self, folder: Path, n: int, poll: timedelta) -> None:
        from openleadr import OpenADRServer

        fingerprints = (folder / "fingerprints.txt").read_text().split()
        self.by_name = {f"ven{k}": (f"id{k}", fingerprints[k]) for k in range(n)}
        self.by_id = dict(self.by_name.values())
        self.registered: dict[str, str] = {}
        self.opts: dict[str, set[str]] = {}
        self.server = OpenADRServer(
            vtn_id=VTN_ID,
            cert=str(folder / "vtn.pem"),
            key=str(folder / "vtn.key"),
            http_cert=str(folder / "vtn.pem"),
            http_key=str(folder / "vtn.key"),
            http_ca_file=str(folder / "ca.pem"),
            http_host="127.0.0.1",
            http_port=0,
            requested_poll_freq=poll,
            show_fingerprint=False,
            ven_lookup=self.ven_lookup,
        )
        self.server.add_handler("on_create_party_registration", self.on_register)
        self.runner: Any = None

    def ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        fp = self.by_id.get(ven_id)
        if fp is None:
            return None
        return {"ven_id": ven_id, "fingerprint": fp, "registration_id": self.registered.get(ven_id)}

    def on_register(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        found = self.by_name.get(payload.get("ven_name", ""))
        if found is None or payload.get("fingerprint") != found[1]:
            return False
        self.registered[found[0]] = f"reg-{found[0]}"
        return found[0], f"reg-{found[0]}"

    async def start(self) -> int:
        from aiohttp import web

        self.runner = web.AppRunner(self.server.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.server.ssl_context)
        await site.start()
        return int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        await self.runner.cleanup()

    def send(self, run: int, start: datetime) -> None:
        opts = self.opts.setdefault(f"run{run}", set())

        def record(ven_id: str, event_id: str, opt_type: str) -> None:
            if opt_type == "optIn":
                opts.add(ven_id)

        for _, (ven_id, _) in self.by_name.items():
            self.server.add_event(
                ven_id=ven_id,
                signal_name="SIMPLE",
                signal_type="level",
                intervals=[{"dtstart": start, "duration": timedelta(minutes=15), "signal_payload": 1.0}],
                callback=record,
                market_context="oadr://bench/dr",
            )

    def acknowledged(self, run: int) -> int:
        return len(self.opts.get(f"run{run}", ()))


class OpenDsoVtn:
    """OpenDSO's DemandResponseVtn with every VEN enrolled against a DER registry in SQLite."""

    def __init__(self, folder: Path, n: int, poll: timedelta) -> None:
        from opendso.der import AssetKind, Control, ControlProtocol, DerAsset, DerRegistry
        from opendso.der.openadr import DemandResponseVtn, VtnTls
        from opendso.store import migrate
        from opendso.store.der import DerStore
        from opendso.store.engine import create_engine

        engine = create_engine(f"sqlite:///{folder / 'der.db'}")
        migrate.upgrade(engine)
        store = DerStore(engine)
        assets = [
            DerAsset(
                f"A{k}",
                f"Battery {k}",
                AssetKind.BATTERY,
                f"node {k % 100}",
                f"Owner {k}",
                export_kw=10.0,
                import_kw=10.0,
                storage_kwh=20.0,
                control=Control(ControlProtocol.OPENADR, f"ven{k}"),
            ).to_json()
            for k in range(n)
        ]
        store.add_many(assets, [], datetime.now(UTC))
        registry = DerRegistry(store, None)  # read-only: the assets were stored above
        tls = VtnTls(folder / "vtn.pem", folder / "vtn.key", folder / "ca.pem")
        self.vtn = DemandResponseVtn(VTN_ID, registry, tls=tls, poll_interval=poll)
        fingerprints = (folder / "fingerprints.txt").read_text().split()
        for k in range(n):
            self.vtn.enroll(f"ven{k}", fingerprints[k], [f"A{k}"], party=f"Owner {k}")
        self.names = tuple(f"ven{k}" for k in range(n))

    async def start(self) -> int:
        await self.vtn.start()
        return self.vtn.port

    async def stop(self) -> None:
        await self.vtn.stop()

    def send(self, run: int, start: datetime) -> None:
        from opendso.der.openadr import DrEvent, DrInterval, DrSignal
        from opendso.operations.setpoints.model import SetpointSource

        interval = DrInterval(start, timedelta(minutes=15), 1)
        event = DrEvent(f"run{run}", DrSignal.LEVEL, (interval,), SetpointSource.OPERATOR, vens=self.names)
        self.vtn.create_event(event)

    def acknowledged(self, run: int) -> int:
        return sum(1 for r in self.vtn.opts(f"run{run}").values() if r.opt_type == "optIn")


async def run_vtn(side: str, folder: Path, n: int, procs: int, poll: timedelta, repeats: int) -> dict[str, Any]:
    """Start the VTN of ``side``, the VEN processes, then time ``repeats`` events until all opted in."""
    t0 = time.perf_counter()
    vtn: PlainVtn | OpenDsoVtn = PlainVtn(folder, n, poll) if side == "plain" else OpenDsoVtn(folder, n, poll)
    port = await vtn.start()
    url = f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
    setup_s = time.perf_counter() - t0
    children = []
    bounds = [round(k * n / procs) for k in range(procs + 1)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    logs = [(folder / f"{side}-vens{k}.log").open("w") for k in range(procs)]
    for k in range(procs):
        cmd = [sys.executable, str(BENCH_DIR / "bench_openadr.py"), "--role", "vens", "--url", url]
        cmd += ["--folder", str(folder), "--first", str(bounds[k]), "--last", str(bounds[k + 1])]
        children.append(
            await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[k], env=env
            )
        )
    t_reg = time.perf_counter()
    failed = 0
    try:
        for child in children:
            assert child.stdout is not None
            line = (await asyncio.wait_for(child.stdout.readline(), timeout=60 + n)).decode().split()
            if not line or line[0] != "READY":
                raise RuntimeError(f"a VEN process did not start: {line}")
            failed += int(line[2])
        register_s = time.perf_counter() - t_reg
        runs: list[float] = []
        deadline_s = 30 * poll.total_seconds() + n * 0.2
        for run in range(repeats):
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
            t1 = time.perf_counter()
            vtn.send(run, start)
            while vtn.acknowledged(run) < n - failed:
                if time.perf_counter() - t1 > deadline_s:
                    raise RuntimeError(
                        f"run {run}: {vtn.acknowledged(run)} of {n} VENs opted in after {deadline_s:.0f} s"
                    )
                await asyncio.sleep(0.01)
            runs.append(time.perf_counter() - t1)
            print(f"{side}: run {run}: {n - failed} VENs opted in after {runs[-1]:.2f} s", flush=True)
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), timeout=30)
            except TimeoutError:
                child.kill()
                await child.wait()
        await vtn.stop()
        for handle in logs:
            handle.close()
    return {
        "side": side,
        "vens": n,
        "failed_registrations": failed,
        "setup_s": setup_s,
        "register_s": register_s,
        "runs": runs,
        "median_s": statistics.median(runs),
    }


# -- the parent -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run both sides (or one role, when called as a child) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50 VENs, 2 repeats (smoke run)")
    parser.add_argument("--vens", type=int, help="number of VENs (default 1000; 50 with --quick)")
    parser.add_argument("--repeats", type=int, help="events timed per side (default 3; 2 with --quick)")
    parser.add_argument(
        "--poll", type=int, help="VEN poll interval the VTN asks for, s (default: 60 s, 10 s with --quick)"
    )
    parser.add_argument("--procs", type=int, default=2, help="VEN processes per side (default 2)")
    parser.add_argument("--json", help="write the figures to this file (for run_all.py)")
    parser.add_argument("--role", choices=["vtn", "vens"], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["opendso", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--last", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_warnings()
    # openleadr warns per VEN and event (e.g. on a SIMPLE event's current value): thousands of lines
    logging.disable(logging.WARNING)
    n = args.vens or (50 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    args.poll = args.poll or (10 if args.quick else 60)
    poll = timedelta(seconds=args.poll)

    if args.role == "vens":
        asyncio.run(run_vens(args.url, Path(args.folder), args.first, args.last))
        return 0
    if args.role == "vtn":
        emit(asyncio.run(run_vtn(args.side, Path(args.folder), n, args.procs, poll, repeats)))
        return 0

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="opendso-bench-openadr-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        make_pki(folder, n)
        print(f"{n} VEN certificates in {time.perf_counter() - t0:.1f} s", flush=True)
        for side in ("opendso", "plain"):
            child_args = ["--role", "vtn", "--side", side, "--folder", str(folder), "--vens", str(n)]
            child_args += ["--repeats", str(repeats), "--poll", str(args.poll), "--procs", str(args.procs)]
            (folder / "der.db").unlink(missing_ok=True)
            result = run_child("bench_openadr.py", child_args, timeout=600 + 2 * n)
            if not result.ok:
                print(f"{side}: {result.error}", flush=True)
                continue
            results[side] = result.data

    rows = []
    for side, label in (("opendso", "OpenDSO DemandResponseVtn"), ("plain", "openleadr OpenADRServer")):
        data = results.get(side)
        if data is None:
            rows.append([label, "-", "-", "-", "failed"])
            continue
        runs = ", ".join(fmt_s(r) for r in data["runs"])
        rows.append(
            [label, fmt_s(data["median_s"]), runs, fmt_s(data["register_s"]), str(data["failed_registrations"])]
        )
    ratio = None
    if "opendso" in results and "plain" in results:
        ratio = results["opendso"]["median_s"] / results["plain"]["median_s"]
    print_table(
        f"One event to {n} VENs (poll {args.poll} s, {args.procs} VEN processes, mutual TLS): time until all opted in",
        ["VTN", "median", "runs", "all registered in", "refused"],
        rows,
    )
    print(f"OpenDSO / plain openleadr: {fmt_ratio(ratio)}", flush=True)
    measured = results.get("opendso", {}).get("median_s")
    targets = [
        Target(
            f"OpenADR event to {n} VENs, all opted in",
            measured,
            3.0 * args.poll,
            "max",
            "s",
            note="limit: three poll intervals (our own; the issue asks for the figure)",
        )
    ]
    info = [["OpenADR: OpenDSO VTN / plain openleadr, time to all opt-ins", fmt_ratio(ratio)]]
    write_report(args.json, "openadr", targets, info)
    return 0 if len(results) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
