"""The ``opendso forecast`` commands: train, predict and backtest OpenSTEF load and DER forecasts.

The measured history comes from the grid's year profiles with realistic noise
(:func:`opendso.planning.history.profile_history`, ``--noise``, ``--seed``), plus the net demand
of every feeder and substation (and node, with ``--levels node,feeder,substation``). Weather is
read from ``--weather FILE`` (see :mod:`opendso.planning.weather`; no internet at run time); with
weather, PV generators get pvlib's expected output as a feature (capacity from the grid, 30° tilt
facing south, at ``--site LAT,LON``).

- ``opendso forecast train GRID [--targets T ...] [--weather FILE] [--until TIME] --model-dir DIR``
  trains and saves the models (default until: 70 days after the profiles start).
- ``opendso forecast predict GRID --model-dir DIR [--issued TIME] [--weather FILE] [--json | --csv FILE]``
  prints or writes the quantiles: JSON ``{"grid", "issued", "quantiles", "times", "targets":
  [{"target", "kind", "values": [[per quantile, per time]]}]}``; CSV rows ``time,target,q...``.
- ``opendso forecast backtest GRID [--days N] [--start TIME] [--sample N] [--pvlib] [--json]``
  prints ``{"grid", "days", "start", "targets": [{"target", "kind", "model": {"rmae", "rcrps"},
  "persistence": {...}, "weekly_profile": {...}, "coverage_10_90", "beats_both"}], "summary":
  {kind: {"targets", "beats_both", "model": {"rmae", "rcrps"} (medians), "persistence", "weekly_profile"}}}``.
  ``--pvlib`` adds the PV plant on pvlib's real weather (kind ``pv``, forecast from perturbed weather).

Exit 0 on success, 2 for bad input (unknown grid or target, a grid without profiles, a malformed
weather file naming row and field, a time outside the profiles), 1 when a calculation fails.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opendso.cli._common import Subparsers, emit_json, load_valid_grid, parse_cli_time, progress
from opendso.errors import InputError
from opendso.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from opendso.grid.model import Grid
    from opendso.planning.forecast import ForecastSettings
    from opendso.planning.weather import PvPlant

__all__ = ["cmd_backtest", "cmd_predict", "cmd_train", "register"]

_WARMUP_DAYS = 70  # lag_days + train_days of the default settings: the first day a model can be trained for


def cmd_train(args: argparse.Namespace) -> int:
    """Train the forecasts of a grid and save them to ``--model-dir``."""
    from opendso.planning.forecast import OpenStefForecaster

    settings = _settings(args)
    grid = load_valid_grid(args.grid)
    until = _time_or(args.until, _first_time(grid), _WARMUP_DAYS, "--until")
    reach = timedelta(days=settings.train_days + max(settings.lag_days, 28) + 1)
    history, kinds = _history(grid, args, until - reach, until)
    targets = _targets(args.targets, history, kinds)
    weather = _weather(args)
    forecaster = OpenStefForecaster(
        settings=settings,
        plants=_plants(grid, targets, kinds, args, weather),
        metadata={
            "grid": args.grid,
            "noise": args.noise,
            "seed": args.seed,
            "levels": args.levels,
            "until": until.isoformat(),
        },
    )
    with progress(not args.quiet, "training forecasts (targets)") as update:
        done = [0]

        def step(_target: str) -> None:
            if update is not None:
                update(done[0], len(targets))
            done[0] += 1

        forecaster.fit(history, until=until, weather=weather, targets=targets, progress=step)
    forecaster.save(Path(args.model_dir))
    if args.json:
        emit_json({"grid": args.grid, "until": until.isoformat(), "model_dir": str(args.model_dir), "targets": targets})
    else:
        print(f"{args.grid}: trained {len(targets)} forecast target(s) until {until.isoformat()} -> {args.model_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Forecast every trained target of ``--model-dir`` from ``--issued`` and print or write the quantiles."""
    from opendso.planning.forecast import OpenStefForecaster

    forecaster = OpenStefForecaster.load(Path(args.model_dir))
    meta = forecaster.metadata
    args.noise = float(meta.get("noise", args.noise))
    args.seed = meta.get("seed", args.seed)
    args.levels = str(meta.get("levels", args.levels))
    grid = load_valid_grid(args.grid)
    from opendso.planning.history import profile_times

    times_all = profile_times(grid)
    default = datetime.fromisoformat(meta["until"]) if "until" in meta else times_all[-1].to_pydatetime()
    issued = parse_cli_time(args.issued, "--issued") if args.issued else default
    if not times_all[0] < issued <= times_all[-1] + (times_all[1] - times_all[0]):
        raise InputError(f"--issued {issued.isoformat()}: outside the profiles ({times_all[0]} to {times_all[-1]})")
    reach = timedelta(days=forecaster.settings.lag_days + 28 + 1)
    history, kinds = _history(grid, args, issued - reach, issued + timedelta(days=1))
    weather = _weather(args)
    forecast = forecaster.predict(history, issued, weather=weather)
    times = [f"{str(t)[:19]}Z" for t in forecast.time.astype("datetime64[s]")]
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["time", "target", *(f"q{q:g}" for q in forecast.quantiles)])
        for k, target in enumerate(forecast.targets):
            for t, when in enumerate(times):
                writer.writerow([when, target, *(f"{v:.3f}" for v in forecast.values[:, t, k])])
        from opendso.grid.io.atomic import write_atomically

        write_atomically(Path(args.csv), buffer.getvalue())
    if args.json:
        emit_json(
            {
                "grid": args.grid,
                "issued": issued.isoformat(),
                "quantiles": [float(q) for q in forecast.quantiles],
                "times": times,
                "targets": [
                    {
                        "target": target,
                        "kind": kinds.get(target, "unknown"),
                        "values": [[round(float(v), 3) for v in row] for row in forecast.values[:, :, k]],
                    }
                    for k, target in enumerate(forecast.targets)
                ],
            }
        )
    elif not args.csv:
        median = forecast.median()
        print(f"{args.grid}: forecast issued {issued.isoformat()}, {forecast.steps} quarter-hours from {times[0]}")
        for k, target in enumerate(forecast.targets):
            print(f"  {target:50s} median {median[:, k].min() / 1e3:10.2f} .. {median[:, k].max() / 1e3:10.2f} kW")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    """Backtest the forecasts against persistence and the weekly profile and print the scores."""
    import pandas as pd

    from opendso.planning.backtest import run_backtest

    settings = _settings(args)
    if args.days < 1 or args.days > 60:
        raise InputError(f"--days {args.days}: must be 1..60")
    grid = load_valid_grid(args.grid)
    start = _time_or(args.start, _first_time(grid), _WARMUP_DAYS, "--start")
    reach = timedelta(days=settings.train_days + max(settings.lag_days, 28) + 1)
    horizon = timedelta(days=args.days + 2)
    history, kinds = _history(grid, args, start - reach, start + horizon)
    targets = _targets(args.targets, history, kinds) if args.targets else _sample(history, kinds, args.sample)
    weather = _weather(args)
    with progress(not args.quiet, "backtest (targets)") as update:
        done = [0]

        def step(_target: str) -> None:
            if update is not None:
                update(done[0], len(targets))
            done[0] += 1

        result = run_backtest(
            history,
            start=start,
            days=args.days,
            kinds=kinds,
            settings=settings,
            weather=weather,
            plants=_plants(grid, targets, kinds, args, weather),
            targets=targets,
            progress=step,
        )
    payload = result.to_json(args.grid)
    if args.pvlib:
        from dataclasses import replace

        from opendso.planning.weather import pvlib_pv_case

        pv_history, pv_weather, plant = pvlib_pv_case(seed=args.seed)
        pv_settings = replace(settings, latitude=plant.latitude, longitude=plant.longitude, country="US")
        earliest = pv_history.index[0].ceil("D") + pd.Timedelta(days=settings.train_days + settings.lag_days)
        pv_start = max(pd.Timestamp(start).replace(year=pv_history.index[0].year), earliest).to_pydatetime()
        (target,) = pv_history.columns
        pv = run_backtest(
            pv_history,
            start=pv_start,
            days=args.days,
            kinds={target: "pv"},
            settings=pv_settings,
            weather=pv_weather,
            plants={target: plant},
        )
        payload["targets"].extend(t.to_json() for t in pv.targets)
        merged = type(result)(start=result.start, days=result.days, targets=result.targets + pv.targets)
        payload["summary"] = merged.summary()
    if args.json:
        emit_json(payload)
        return 0
    print(f"{args.grid}: backtest of {args.days} day(s) from {payload['start']} (rMAE / rCRPS; lower is better)")
    for t in payload["targets"]:
        cells = "  ".join(f"{m} {t[m]['rmae']} / {t[m]['rcrps']}" for m in ("model", "persistence", "weekly_profile"))
        print(f"  {t['target'][:48]:48s} {t['kind']:10s} {cells}  {'beats both' if t['beats_both'] else ''}")
    for kind, entry in payload["summary"].items():
        beat = f"{entry['beats_both']} of {entry['targets']}"
        print(f"  {kind}: {beat} beat both baselines; median model {entry['model']}")
    return 0


# -- helpers ------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> ForecastSettings:
    from opendso.planning.forecast import ForecastSettings

    latitude, longitude = args.site
    return ForecastSettings(
        train_days=args.train_days,
        n_estimators=args.n_estimators,
        intraday_steps=args.intraday_steps,
        country=args.country,
        latitude=latitude,
        longitude=longitude,
    )


def _first_time(grid: Grid) -> datetime:
    from opendso.planning.history import profile_times

    return profile_times(grid)[0].to_pydatetime()


def _history(
    grid: Grid, args: argparse.Namespace, first: datetime, last: datetime
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Element history from ``first`` to ``last`` (clipped to the profiles), the ``--levels`` aggregates, the kinds.

    Only that window is built (a year of a large grid would not fit in memory); the noise of a
    step does not depend on the window (see :func:`~opendso.planning.history.profile_history`).
    """
    import pandas as pd

    from opendso.planning.history import aggregate_history, profile_history, profile_times, target_kinds

    if not 0 <= args.noise <= 1:
        raise InputError(f"--noise {args.noise}: must be within 0..1")
    if args.seed is not None and args.seed < 0:
        raise InputError(f"--seed {args.seed}: must be >= 0")
    levels = [level.strip() for level in str(args.levels).split(",") if level.strip()]
    times = profile_times(grid)
    start = int(times.searchsorted(pd.Timestamp(first)))
    stop = int(times.searchsorted(pd.Timestamp(last)))
    if stop <= start:
        raise InputError(f"{grid.name}: no profile steps between {first.isoformat()} and {last.isoformat()}")
    elements = profile_history(grid, noise=args.noise, seed=args.seed, start=start, stop=stop)
    history = pd.concat([elements, aggregate_history(grid, elements, levels=levels)], axis=1) if levels else elements
    return history, target_kinds(grid, list(history.columns))


def _targets(wanted: Sequence[str] | None, history: pd.DataFrame, kinds: dict[str, str]) -> list[str]:
    if not wanted:
        return list(history.columns)
    unknown = [t for t in wanted if t not in history.columns]
    if unknown:
        raise InputError(
            f"unknown forecast target(s) {', '.join(map(repr, unknown[:5]))}; targets are "
            "sym_load:NAME, sym_gen:NAME, node:NAME, feeder:NAME, substation:NAME"
        )
    return list(dict.fromkeys(wanted))


def _sample(history: pd.DataFrame, kinds: dict[str, str], per_kind: int) -> list[str]:
    """Up to ``per_kind`` targets of each kind, spread evenly over the columns of that kind."""
    if per_kind < 1:
        raise InputError(f"--sample {per_kind}: must be >= 1")
    chosen: list[str] = []
    for kind in dict.fromkeys(kinds.values()):
        columns = [c for c in history.columns if kinds[c] == kind]
        step = max(1, len(columns) // per_kind)
        chosen.extend(columns[::step][:per_kind])
    return chosen


def _time_or(text: str | None, first: datetime, days: int, flag: str) -> datetime:
    if text:
        return parse_cli_time(text, flag)
    return (first + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def _weather(args: argparse.Namespace) -> pd.DataFrame | None:
    if not args.weather:
        return None
    from opendso.planning.weather import read_weather

    return read_weather(Path(args.weather))


def _plants(
    grid: Grid, targets: Sequence[str], kinds: dict[str, str], args: argparse.Namespace, weather: Any
) -> dict[str, PvPlant]:
    """A PV plant per PV generator target when weather with irradiance is given (capacity from the grid)."""
    if weather is None or "ghi" not in weather.columns:
        return {}
    import numpy as np

    from opendso.planning.weather import PvPlant

    latitude, longitude = args.site
    names = [str(n) for n in grid.names_of("sym_gen")] if grid.count("sym_gen") else []
    sn = grid.extra.get("sym_gen", {}).get("sn_va")
    p = np.asarray(grid.component("sym_gen")["p_specified"], dtype=float) if names else np.zeros(0)
    plants: dict[str, PvPlant] = {}
    for target in targets:
        if kinds.get(target) != "pv":
            continue
        name = target.partition(":")[2]
        if name not in names:
            continue
        row = names.index(name)
        capacity = float(sn[row]) if sn is not None and np.isfinite(sn[row]) and sn[row] > 0 else float(abs(p[row]))
        if capacity > 0:
            plants[target] = PvPlant(capacity_w=capacity, latitude=latitude, longitude=longitude)
    return plants


def _site(text: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        latitude, longitude = float(lat_text), float(lon_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON") from None
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise argparse.ArgumentTypeError(f"{text!r}: latitude within -90..90, longitude within -180..180")
    return latitude, longitude


def _common(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    p.add_argument("grid", help="grid source with profiles (simbench:CODE, ...)")
    p.add_argument("--weather", help="weather CSV: time, ghi/dni/dhi, temperature, wind_speed (see the README)")
    p.add_argument("--noise", type=float, default=0.1, help="relative noise of the measured history (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the history's noise (default 0)")
    p.add_argument(
        "--levels",
        default="feeder,substation",
        help="aggregates to forecast besides loads and generators: node,feeder,substation (default feeder,substation)",
    )
    p.add_argument("--site", type=_site, default=(51.0, 10.0), help="LAT,LON of the grid (default 51,10)")
    p.add_argument("--country", default="DE", help="holidays of this country (ISO 3166 alpha-2, default DE)")
    if model:
        p.add_argument("--train-days", type=int, default=56, help="days of history each model trains on (default 56)")
        p.add_argument("--n-estimators", type=int, default=60, help="LightGBM trees per quantile (default 60)")
        p.add_argument(
            "--intraday-steps", type=int, default=24, help="first quarter-hours from the intraday model (default 24)"
        )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub: Subparsers, settings: Settings) -> None:
    """Add ``forecast`` (train, predict, backtest) to the ``opendso`` command."""
    del settings
    p = sub.add_parser(
        "forecast",
        help="load and DER forecasts with OpenSTEF (LightGBM): train, predict, backtest",
        description=(
            "Day-ahead and intraday quantile forecasts (15 min, 48 h) per load, generator, feeder and substation."
        ),
    )
    forecast_sub = p.add_subparsers(dest="forecast_command", required=True, metavar="COMMAND")
    train = forecast_sub.add_parser("train", help="train the forecasts of a grid and save them")
    _common(train)
    train.add_argument("--targets", nargs="+", help="targets to train (default: all)")
    train.add_argument("--until", help="train on the history before this time (default: 70 days into the profiles)")
    train.add_argument("--model-dir", required=True, help="folder the models are saved to")
    train.set_defaults(func=cmd_train)
    predict = forecast_sub.add_parser("predict", help="forecast with saved models")
    _common(predict, model=False)
    predict.add_argument("--model-dir", required=True, help="folder of models saved by 'opendso forecast train'")
    predict.add_argument("--issued", help="issue time (default: the end of the training history)")
    predict.add_argument("--csv", help="write the quantiles to this CSV file")
    predict.set_defaults(func=cmd_predict)
    backtest = forecast_sub.add_parser("backtest", help="score the forecasts against persistence and weekly profile")
    _common(backtest)
    backtest.add_argument("--days", type=int, default=7, help="held-out days, one forecast issued each (default 7)")
    backtest.add_argument("--start", help="first held-out day (default: 70 days into the profiles)")
    backtest.add_argument("--targets", nargs="+", help="targets to score (default: a sample of each kind)")
    backtest.add_argument(
        "--sample", type=int, default=3, help="targets per kind when --targets is not given (default 3)"
    )
    backtest.add_argument("--pvlib", action="store_true", help="also backtest a PV plant on pvlib's real weather data")
    backtest.set_defaults(func=cmd_backtest)
