"""Benchmark: historian write throughput (measurements/s) on SQLite and PostgreSQL, side by side.

Each run writes fresh measurements (100 points, distinct timestamps) through the full public
write path, ``Historian.write`` with :class:`Measurement` objects in batches (default 10,000):
validation, conversion, and the idempotent insert (SQLite: ``executemany`` of
``INSERT ... ON CONFLICT DO NOTHING`` in one transaction; PostgreSQL: binary ``COPY`` into a
temporary table then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``). The figure is the median
over several runs. A second figure writes the same batches again (all duplicates: the cost of a
replayed buffer). Targets from issue 3: >= 50,000/s on SQLite, >= 100,000/s on PostgreSQL.

The SQLite database is a file in a temporary folder (WAL, ``synchronous=NORMAL``); PostgreSQL
is ``OPENDSO_TEST_POSTGRES_URL`` (default the local server), in a database created for the run
and dropped afterwards. Run standalone: ``.venv/bin/python benchmarks/bench_historian.py``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _util import Target, print_table, quiet_warnings, write_report

TARGETS = {"sqlite": 50_000.0, "postgresql": 100_000.0}
N_POINTS = 100


def _batches(n_batches: int, batch_size: int, offset_s: int) -> list[list[Any]]:
    from opendso.store import Measurement

    t0 = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=offset_s)
    out = []
    k = 0
    for _ in range(n_batches):
        batch = []
        for _ in range(batch_size):
            batch.append(
                Measurement(
                    f"pt{k % N_POINTS:03d}", t0 + timedelta(milliseconds=10 * (k // N_POINTS)), 230.0 + k % 7, 0, k
                )
            )
            k += 1
        out.append(batch)
    return out


def measure(url: str, folder: Path, *, batch_size: int, batches_per_run: int, runs: int) -> dict[str, float]:
    """Return median and best throughput (new rows and duplicates) for one database."""
    from opendso.store import Historian

    h = Historian.open(url, buffer_path=folder / "bench.buffer")
    try:
        h.register_points([f"pt{i:03d}" for i in range(N_POINTS)])
        h.write(_batches(1, batch_size, offset_s=-(10**6))[0])  # warm-up: connections, temp table, caches
        fresh: list[float] = []
        dup: list[float] = []
        for run in range(runs):
            batches = _batches(batches_per_run, batch_size, offset_s=run * 10**6)
            n = batch_size * batches_per_run
            t = time.perf_counter()
            inserted = sum(h.write(b).inserted or 0 for b in batches)
            fresh.append(n / (time.perf_counter() - t))
            if inserted != n:
                raise RuntimeError(f"expected {n} new rows, the database took {inserted}")
            t = time.perf_counter()
            again = sum(h.write(b).inserted or 0 for b in batches)
            dup.append(n / (time.perf_counter() - t))
            if again != 0:
                raise RuntimeError(f"duplicates were stored: {again}")
        stored = h.count()
        expected = batch_size * (batches_per_run * runs + 1)
        if stored != expected:
            raise RuntimeError(f"stored {stored} rows, expected {expected}")
        return {
            "median": statistics.median(fresh),
            "best": max(fresh),
            "dup_median": statistics.median(dup),
            "rows": float(stored),
        }
    finally:
        h.close()


def main(argv: list[str] | None = None) -> int:
    """Measure both backends, print the table and PASS/FAIL; exit 1 when a backend could not be measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke run)")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    logging.disable(logging.WARNING)

    from opendso.store.testing import fresh_postgres_database, postgres_test_url, postgres_unreachable_reason

    runs = 3 if args.quick else 7
    per_run = 5 if args.quick else 10
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="opendso-bench-historian-") as tmp:
        folder = Path(tmp)
        results["sqlite"] = measure(
            f"sqlite:///{folder / 'opendso.db'}", folder, batch_size=args.batch_size, batches_per_run=per_run, runs=runs
        )
        reason = postgres_unreachable_reason()
        if reason is None:
            with fresh_postgres_database(postgres_test_url()) as url:
                results["postgresql"] = measure(
                    url, folder, batch_size=args.batch_size, batches_per_run=per_run, runs=runs
                )
        else:
            results["postgresql"] = reason

    rows = []
    targets = []
    for backend, limit in TARGETS.items():
        got = results[backend]
        if isinstance(got, str):
            rows.append([backend, "-", "-", "-", f">= {limit:,.0f}", "n/a", got[:60]])
            targets.append(Target(f"historian write {backend} (meas/s)", None, limit, "min", "meas/s", got[:80]))
            continue
        verdict = "PASS" if got["median"] >= limit else "FAIL"
        rows.append(
            [
                backend,
                f"{got['median']:,.0f}",
                f"{got['best']:,.0f}",
                f"{got['dup_median']:,.0f}",
                f">= {limit:,.0f}",
                verdict,
                f"{int(got['rows']):,} rows stored",
            ]
        )
        targets.append(
            Target(
                f"historian write {backend} (meas/s)",
                got["median"],
                limit,
                "min",
                "meas/s",
                f"batches of {args.batch_size:,}, median of {runs}",
            )
        )
    print_table(
        f"Historian write throughput, batches of {args.batch_size:,} measurements (median of {runs} runs "
        f"of {per_run} batches)",
        ["backend", "new meas/s", "best", "duplicates meas/s", "target", "verdict", "note"],
        rows,
    )
    write_report(args.json, "historian", targets, [])
    return 0 if all(not isinstance(r, str) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
