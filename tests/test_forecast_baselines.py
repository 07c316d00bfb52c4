"""The measured-like history and the two baselines: shape, noise, causality, calibration, bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.planning import (
    QuantileForecast,
    parse_target,
    persistence_forecast,
    profile_history,
    profile_times,
    weekly_profile_forecast,
)
from opendso.planning.history import NOISE_AR1
from opendso.quality import Quality

LV = "simbench:1-LV-rural1--0-sw"
ISSUED = datetime(2016, 3, 10, 6, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def lv(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(LV)


@pytest.fixture(scope="module")
def history(lv: Grid) -> pd.DataFrame:
    return profile_history(lv, stop=96 * 120)


def truth_of(history: pd.DataFrame, forecast: QuantileForecast) -> np.ndarray:
    return history.reindex(pd.DatetimeIndex(forecast.time).tz_localize("UTC")).to_numpy()


def test_history_columns_units_and_noise(lv: Grid) -> None:
    clean = profile_history(lv, noise=0.0)
    noisy = profile_history(lv, noise=0.1, seed=1)
    assert clean.shape == (lv.profiles.steps, lv.count("sym_load") + lv.count("sym_gen"))  # type: ignore[union-attr]
    assert clean.index.tz is not None
    assert clean.index.is_monotonic_increasing
    assert clean.index.is_unique
    assert (np.diff(clean.index.asi8) == 900 * 10**9).all()
    assert {parse_target(c)[0] for c in clean.columns} == {"sym_load", "sym_gen"}
    # the noise-free history is the profile times the element's rated P (independent evaluation per element)
    profiles = lv.profiles
    assert profiles is not None
    for assignment in profiles.assignments:
        if assignment.attribute != "p_specified":
            continue
        rows = np.searchsorted(lv.component(assignment.component)["id"], assignment.ids)
        names = lv.names_of(assignment.component)[rows]
        for k in range(len(names)):
            column = f"{assignment.component}:{names[k]}"
            expected = profiles.values[:, assignment.column[k]] * assignment.scale[k]
            np.testing.assert_allclose(clean[column].to_numpy(), expected, rtol=1e-12)
    # relative noise: about the stated std, autocorrelated, generation clipped and dark at night
    loads = [c for c in clean.columns if c.startswith("sym_load")]
    ratio = (noisy[loads] / clean[loads]).to_numpy() - 1.0
    assert 0.08 < np.nanstd(ratio) < 0.12  # NaN where the profile is zero
    col = ratio[:, np.all(np.isfinite(ratio), axis=0)][:, 0]
    lag1 = np.corrcoef(col[1:], col[:-1])[0, 1]
    assert abs(lag1 - NOISE_AR1) < 0.05
    gens = [c for c in clean.columns if c.startswith("sym_gen")]
    assert (noisy[gens] >= 0).all().all()
    assert ((clean[gens] == 0) == (noisy[gens] == 0)).all().all()
    assert profile_times(lv)[0] == clean.index[0]


def test_history_of_grid_without_profiles_names_it(lv: Grid) -> None:
    from dataclasses import replace

    bare = replace(lv, profiles=None, name="bare-grid")
    with pytest.raises(InputError, match="bare-grid"):
        profile_history(bare)
    with pytest.raises(InputError, match="noise"):
        profile_history(lv, noise=-1.0)
    with pytest.raises(InputError, match="component"):
        profile_history(lv, components=("line",))


@pytest.mark.parametrize("baseline", [persistence_forecast, weekly_profile_forecast])
def test_baselines_read_only_the_past(history: pd.DataFrame, baseline: Callable[..., QuantileForecast]) -> None:
    forecast = baseline(history, ISSUED)
    poisoned = history.copy()
    poisoned.loc[poisoned.index >= ISSUED] = 1e12  # the future, and the issue time's own row on
    again = baseline(poisoned, ISSUED)
    np.testing.assert_array_equal(forecast.values, again.values)
    # the intervals start at the issue time rounded up to the quarter-hour, 48 h of them
    assert forecast.steps == 192
    assert pd.Timestamp(forecast.time[0]) == pd.Timestamp("2016-03-10 06:15")
    assert forecast.targets == tuple(history.columns)
    # changing the past does change the forecast (the test above is not vacuous)
    touched = history.copy()
    touched.loc[(touched.index < ISSUED) & (touched.index >= ISSUED - timedelta(days=1))] *= 2.0
    assert not np.array_equal(baseline(touched, ISSUED).values, forecast.values)


def test_persistence_repeats_the_last_day(history: pd.DataFrame) -> None:
    forecast = persistence_forecast(history, ISSUED, horizon_steps=192)
    start = pd.Timestamp(forecast.time[0], tz="UTC")
    # step h uses the value whole days back, the fewest that fall before the issue time
    for h in (0, 50, 95, 96, 191):
        t = start + h * pd.Timedelta(minutes=15)
        k = h // 96 + 1
        reference = history.loc[t - pd.Timedelta(days=k)].to_numpy()
        median = forecast.median()[h]
        spread = forecast.quantile(0.95)[h] - forecast.quantile(0.05)[h]
        assert np.all(np.abs(median - reference) <= spread + 1e-9)
    # with a flat target, persistence and its residuals are exact
    flat = pd.DataFrame({"sym_load:x": 5.0}, index=history.index)
    f = persistence_forecast(flat, ISSUED)
    np.testing.assert_allclose(f.values, 5.0)


def test_weekly_profile_is_the_mean_of_past_weeks(history: pd.DataFrame) -> None:
    forecast = weekly_profile_forecast(history, ISSUED, weeks=3, quantiles=(0.5,))
    start = pd.Timestamp(forecast.time[0], tz="UTC")
    column = history.columns[0]
    for h in (0, 77, 191):
        t = start + h * pd.Timedelta(minutes=15)
        mean = np.mean([history.loc[t - pd.Timedelta(weeks=w), column] for w in (1, 2, 3)])
        residual_median = forecast.values[0, h, 0] - mean
        # the point is the weekly mean; the median residual shifts it by less than the target's spread
        assert abs(residual_median) < history[column].std()
    zero_q = weekly_profile_forecast(history, ISSUED, weeks=3, quantiles=(0.5,), residual_days=1)
    assert zero_q.steps == 192


@pytest.mark.parametrize("baseline", [persistence_forecast, weekly_profile_forecast])
def test_baseline_quantiles_cover_held_out_days(
    history: pd.DataFrame, baseline: Callable[..., QuantileForecast]
) -> None:
    """Over ten issue days, the 10-90 % band holds 80 % of the outcomes within 12 points."""
    inside = []
    for day in range(10):
        issued = datetime(2016, 3, 1, tzinfo=UTC) + timedelta(days=day)
        forecast = baseline(history, issued, horizon_steps=96)
        truth = truth_of(history, forecast)
        inside.append((truth >= forecast.quantile(0.1)) & (truth <= forecast.quantile(0.9)))
    coverage = float(np.mean(inside))
    assert abs(coverage - 0.8) < 0.12, coverage


def test_baselines_refuse_bad_input(history: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="timezone"):
        persistence_forecast(history, datetime(2016, 3, 10))
    with pytest.raises(InputError, match="one day"):
        persistence_forecast(history, history.index[10].to_pydatetime())
    with pytest.raises(InputError, match="one week"):
        weekly_profile_forecast(history, history.index[96 * 3].to_pydatetime())
    with pytest.raises(InputError, match="nothing before"):
        persistence_forecast(history, history.index[0].to_pydatetime())
    with pytest.raises(InputError, match="horizon"):
        persistence_forecast(history, ISSUED, horizon_steps=0)
    naive = history.tz_localize(None)
    with pytest.raises(InputError, match="timezone-aware"):
        weekly_profile_forecast(naive, ISSUED)


def test_history_from_the_historian_is_the_15_minute_mean_of_p_points(lv: Grid, tmp_path: Path) -> None:
    """Load and generator 'p' points read back from a SQLite historian as 15-minute means per target, W."""
    from opendso.measurement import Measurement
    from opendso.planning import historian_history
    from opendso.store import Historian
    from opendso.telemetry.points import parse_point_map

    load, gen = str(lv.names_of("sym_load")[0]), str(lv.names_of("sym_gen")[0])
    point_map = parse_point_map(
        {
            "version": 1,
            "sources": {"meters": {"protocol": "mqtt", "topic_prefix": "f/"}},
            "points": [
                {"name": f"{tag}/{q}", "element": element, "quantity": q, "unit": unit, "source": "meters"}
                | {"topic": f"{tag}{q}", "key": q}
                for tag, element, q, unit in (("L", load, "p", "W"), ("G", gen, "p", "W"), ("L", load, "q", "var"))
            ],
        },
        file="points.toml",
    )
    start = datetime(2016, 5, 2, tzinfo=UTC)
    times = [start + timedelta(minutes=5 * k) for k in range(12)]  # one hour at 5-minute resolution
    load_w = [1000.0 + 10 * k for k in range(12)]
    gen_w = [50.0 * k for k in range(12)]
    with Historian.open(f"sqlite:///{tmp_path / 'h.db'}", key_path=tmp_path / "key") as historian:
        historian.register_points(["L/p", "G/p", "L/q"])
        batch = [Measurement("L/p", t, v) for t, v in zip(times, load_w, strict=True)]
        batch += [Measurement("G/p", t, v) for t, v in zip(times, gen_w, strict=True)]
        batch += [Measurement("L/q", t, 1.0) for t in times]
        batch.append(Measurement("L/p", times[0], 9e9, quality=Quality.INVALID))  # left out
        historian.write(batch)
        historian.flush()
        history = historian_history(historian, point_map, lv, start, start + timedelta(hours=2))
    assert list(history.columns) == [f"sym_load:{load}", f"sym_gen:{gen}"]
    assert len(history) == 8
    assert str(history.index.tz) == "UTC"
    np.testing.assert_allclose(history[f"sym_load:{load}"].iloc[:4], [np.mean(load_w[i : i + 3]) for i in (0, 3, 6, 9)])
    np.testing.assert_allclose(history[f"sym_gen:{gen}"].iloc[:4], [np.mean(gen_w[i : i + 3]) for i in (0, 3, 6, 9)])
    assert history.iloc[4:].isna().all().all()


def test_the_residual_quantiles_equal_numpys_nanquantile_column_by_column() -> None:
    """The vectorised per-column quantile (NaN left out) against numpy's own nanquantile."""
    from opendso.planning.baselines import _nanquantile_columns

    rng = np.random.default_rng(7)
    sample = rng.normal(size=(97, 30))
    sample[rng.random(sample.shape) < 0.25] = np.nan
    sample[:, 4] = np.nan  # a column without any value gives 0
    sample[:-1, 9] = np.nan  # a column with one value gives that value at every level
    sample[-1, 9] = 1.5
    levels = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(sample, levels, axis=0)
    got = _nanquantile_columns(sample, levels)
    assert np.allclose(got[:, 4], 0.0)
    assert np.allclose(got[:, 9], 1.5)
    keep = np.isfinite(expected)
    assert np.allclose(got[keep], expected[keep], rtol=0, atol=1e-12)
