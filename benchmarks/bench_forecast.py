"""Benchmark: OpenSTEF load and PV forecasts against the persistence and weekly-profile baselines.

- ``SimBench``: 1-LV-rural1's loads, PV, feeders and substation (profiles with AR(1) noise of
  10 %), models trained on the 56 days before each of four held-out weeks spread over the year
  (March, May, September, November), a 48 h forecast issued every midnight; rMAE and rCRPS
  (openstef-beam) of the model and of both baselines, per kind, and how many targets beat both.
- ``pvlib``: a 100 kW PV plant on pvlib's real weather (TMY3 Greensboro), forecast from a
  perturbed copy of that weather, the same four weeks.
- timings: training seconds per target (day-ahead + intraday model) and prediction seconds per
  target and issue.

Run ``python benchmarks/bench_forecast.py`` (``--quick``: one week, fewer targets). A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from _util import Target, print_table, quiet_warnings, write_report

WEEKS = ("2016-03-11", "2016-05-16", "2016-09-05", "2016-11-14")
GRID = "simbench:1-LV-rural1--0-sw"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one week, a sample of targets")
    parser.add_argument("--json", help="write the targets to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()

    import pandas as pd

    from opendso.grid import load_grid
    from opendso.planning import ForecastSettings, OpenStefForecaster, aggregate_history, profile_history, target_kinds
    from opendso.planning.backtest import run_backtest
    from opendso.planning.weather import pvlib_pv_case

    grid = load_grid(GRID)
    elements = profile_history(grid)
    history = pd.concat([elements, aggregate_history(grid, elements, levels=("feeder", "substation"))], axis=1)
    kinds = target_kinds(grid, list(history.columns))
    targets = list(history.columns)
    weeks = WEEKS[:1] if args.quick else WEEKS
    if args.quick:
        targets = [t for t in targets if kinds[t] in ("feeder", "substation")] + targets[:2]
    settings = ForecastSettings()
    results: list[tuple[str, Any]] = []
    for week in weeks:
        start = pd.Timestamp(week, tz="UTC").to_pydatetime()
        results.append(
            (week, run_backtest(history, start=start, days=7, kinds=kinds, settings=settings, targets=targets))
        )
    pv_history, pv_weather, plant = pvlib_pv_case()
    (pv_target,) = pv_history.columns
    pv_settings = ForecastSettings(latitude=plant.latitude, longitude=plant.longitude, country="US")
    for week in weeks:
        earliest = pv_history.index[0].ceil("D") + pd.Timedelta(days=settings.train_days + settings.lag_days)
        start = max(pd.Timestamp(week, tz="UTC").replace(year=2015), earliest).to_pydatetime()
        result = run_backtest(
            pv_history,
            start=start,
            days=7,
            kinds={pv_target: "pv (real weather)"},
            settings=pv_settings,
            weather=pv_weather,
            plants={pv_target: plant},
        )
        results.append((week, result))

    rows: list[list[str]] = []
    by_kind: dict[str, list[Any]] = {}
    for _, result in results:
        for t in result.targets:
            by_kind.setdefault(t.kind, []).append(t)
    for kind, group in by_kind.items():
        cells = [kind, f"{sum(t.beats_both for t in group)} / {len(group)}"]
        for method in ("model", "persistence", "weekly_profile"):
            rmae = np.median([getattr(t, method).rmae for t in group])
            rcrps = np.median([getattr(t, method).rcrps for t in group])
            cells.append(f"{rmae:.3f} / {rcrps:.3f}")
        cells.append(f"{np.mean([t.coverage_10_90 for t in group]):.2f}")
        rows.append(cells)
    print_table(
        f"Forecast skill over {len(weeks)} held-out week(s), 48 h issued daily (median rMAE / rCRPS; lower is better)",
        ["kind", "beats both", "OpenSTEF", "persistence", "weekly profile", "10-90 % coverage"],
        rows,
    )

    # timings: one target, training and prediction
    target = next(t for t in history.columns if kinds[t] == "feeder")
    start = pd.Timestamp(WEEKS[1], tz="UTC").to_pydatetime()
    t0 = time.perf_counter()
    forecaster = OpenStefForecaster(settings=settings).fit(history, until=start, targets=[target])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for day in range(5):
        forecaster.predict(history, start + pd.Timedelta(days=day).to_pytimedelta())
    predict_s = (time.perf_counter() - t0) / 5
    info = [
        ["training per target (day-ahead + intraday)", f"{train_s:.2f} s", "56 days of quarter-hours, 7 quantiles"],
        ["forecast per target and issue (48 h, 7 quantiles)", f"{predict_s:.3f} s", ""],
    ]
    print_table("Timings (2 cores)", ["what", "time", "note"], info)
    load_group = by_kind.get("load", [])
    pv_group = by_kind.get("pv (real weather)", [])
    targets_out = [
        Target(
            "load targets beating both baselines (share)",
            float(np.mean([t.beats_both for t in load_group])) if load_group else None,
            0.5,
            "min",
            "x",
        ),
        Target(
            "PV on real weather beating both baselines (share)",
            float(np.mean([t.beats_both for t in pv_group])) if pv_group else None,
            1.0,
            "min",
            "x",
        ),
    ]
    print_table("Targets", ["target", "measured", "limit", "verdict", "note"], [t.cells() for t in targets_out])
    write_report(args.json, "forecast", targets_out, info + [[r[0], r[1], "beats both"] for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
