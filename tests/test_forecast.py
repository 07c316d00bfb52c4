"""OpenSTEF forecasts: skill against both baselines (load, feeder, PV on real weather), calibration, causality.

Models are small (few trees, four weeks of training) so the file stays fast; everything is seeded
(the history's noise, LightGBM's random state), so the figures are the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.planning.backtest import BacktestResult, run_backtest
from opendso.planning.forecast import ForecastSettings, OpenStefForecaster
from opendso.planning.history import aggregate_history, profile_history, target_kinds
from opendso.planning.metrics import score
from opendso.planning.weather import pvlib_pv_case

LV = "simbench:1-LV-rural1--0-sw"
SMALL = ForecastSettings(n_estimators=60, train_days=56, intraday_steps=0)
START = datetime(2016, 4, 4, tzinfo=UTC)
LOADS = ("sym_load:LV1.101 Load 1", "sym_load:LV1.101 Load 3")


@pytest.fixture(scope="module")
def lv_history(grid_of: Callable[[str], Grid]) -> tuple[pd.DataFrame, dict[str, str]]:
    grid = grid_of(LV)
    elements = profile_history(grid, stop=96 * 130)
    history = pd.concat([elements, aggregate_history(grid, elements, levels=("feeder", "substation"))], axis=1)
    return history, target_kinds(grid, list(history.columns))


@pytest.fixture(scope="module")
def lv_backtest(lv_history: tuple[pd.DataFrame, dict[str, str]]) -> BacktestResult:
    history, kinds = lv_history
    feeder = next(c for c in history.columns if c.startswith("feeder:") and c.endswith("Line 3"))
    substation = next(c for c in history.columns if c.startswith("substation:"))
    return run_backtest(history, start=START, days=5, kinds=kinds, settings=SMALL, targets=[*LOADS, feeder, substation])


@pytest.fixture(scope="module")
def pv_backtest() -> BacktestResult:
    history, weather, plant = pvlib_pv_case(seed=3)
    (target,) = history.columns
    settings = ForecastSettings(
        n_estimators=40,
        train_days=28,
        intraday_steps=0,
        latitude=plant.latitude,
        longitude=plant.longitude,
        country="US",
    )
    return run_backtest(
        history,
        start=datetime(2015, 5, 11, tzinfo=UTC),
        days=5,
        kinds={target: "pv"},
        settings=settings,
        weather=weather,
        plants={target: plant},
    )


def test_load_and_feeder_forecasts_beat_both_baselines(lv_backtest: BacktestResult) -> None:
    """On SimBench profiles with noise, every load, feeder and substation forecast beats both baselines."""
    kinds = {t.kind for t in lv_backtest.targets}
    assert kinds == {"load", "feeder", "substation"}
    for t in lv_backtest.targets:
        for baseline in (t.persistence, t.weekly_profile):
            assert t.model.rmae < baseline.rmae, t
            assert t.model.rcrps < baseline.rcrps, t
        assert t.beats_both
    summary = lv_backtest.summary()
    assert summary["load"]["targets"] == 2
    assert summary["load"]["beats_both"] == 2


def test_pv_forecast_on_real_weather_beats_both_baselines(pv_backtest: BacktestResult) -> None:
    """PV from pvlib's real weather, forecast from perturbed (forecast) weather: clearly better than both baselines."""
    (t,) = pv_backtest.targets
    assert t.kind == "pv"
    assert t.beats_both, t
    # not a near tie: the weather carries the skill
    assert t.model.rcrps < 0.8 * min(t.persistence.rcrps, t.weekly_profile.rcrps), t


def test_quantiles_are_calibrated_within_tolerance(lv_backtest: BacktestResult, pv_backtest: BacktestResult) -> None:
    """The 10-90 % band holds 80 % of held-out outcomes within 12 points (pooled), no target below 60 %."""
    coverages = [t.coverage_10_90 for t in (*lv_backtest.targets, *pv_backtest.targets)]
    assert abs(float(np.mean(coverages)) - 0.8) < 0.12, coverages
    assert min(coverages) > 0.6, coverages


@pytest.fixture(scope="module")
def trained(lv_history: tuple[pd.DataFrame, dict[str, str]]) -> OpenStefForecaster:
    history, _ = lv_history
    settings = ForecastSettings(n_estimators=10, train_days=14, intraday_steps=8, quantiles=(0.1, 0.5, 0.9))
    return OpenStefForecaster(settings=settings).fit(history, until=START, targets=[LOADS[0]])


def test_forecast_reads_only_the_past(
    trained: OpenStefForecaster, lv_history: tuple[pd.DataFrame, dict[str, str]]
) -> None:
    history, _ = lv_history
    issued = datetime(2016, 4, 6, 9, 5, tzinfo=UTC)
    forecast = trained.predict(history, issued)
    assert forecast.steps == 192
    assert forecast.targets == (LOADS[0],)
    assert pd.Timestamp(forecast.time[0]) == pd.Timestamp("2016-04-06 09:15")
    poisoned = history.copy()
    poisoned.loc[poisoned.index >= issued] = 1e9
    np.testing.assert_array_equal(trained.predict(poisoned, issued).values, forecast.values)
    # the intraday model reads the last hours: changing them changes its first 8 steps; the day-ahead model's
    # lags reach back 48 h and more, so its steps within 46 h of the start do not see the last 2 h
    touched = history.copy()
    recent = (touched.index < issued) & (touched.index >= issued - pd.Timedelta(hours=2))
    touched.loc[recent] *= 3.0
    changed = trained.predict(touched, issued).values
    assert not np.array_equal(changed[:, :8], forecast.values[:, :8])
    np.testing.assert_array_equal(changed[:, 8:184], forecast.values[:, 8:184])
    assert np.all(np.diff(forecast.values, axis=0) >= 0)


def test_models_survive_save_and_load(
    trained: OpenStefForecaster, lv_history: tuple[pd.DataFrame, dict[str, str]], tmp_path: Path
) -> None:
    history, _ = lv_history
    trained.save(tmp_path / "models")
    again = OpenStefForecaster.load(tmp_path / "models")
    assert again.targets == trained.targets
    assert again.settings == trained.settings
    issued = datetime(2016, 4, 8, tzinfo=UTC)
    np.testing.assert_array_equal(again.predict(history, issued).values, trained.predict(history, issued).values)
    (tmp_path / "models" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest"):
        OpenStefForecaster.load(tmp_path / "models")
    with pytest.raises(InputError, match="manifest"):
        OpenStefForecaster.load(tmp_path / "nowhere")


def test_forecaster_refuses_bad_input(
    trained: OpenStefForecaster, lv_history: tuple[pd.DataFrame, dict[str, str]]
) -> None:
    history, _ = lv_history
    with pytest.raises(InputError, match="no-such"):
        OpenStefForecaster(settings=SMALL).fit(history, until=START, targets=["sym_load:no-such"])
    with pytest.raises(InputError, match="no trained model"):
        trained.predict(history, START, targets=["sym_load:LV1.101 Load 2"])
    with pytest.raises(InputError, match="timezone"):
        trained.predict(history, datetime(2016, 4, 4))
    with pytest.raises(InputError, match="days"):
        OpenStefForecaster(settings=SMALL).fit(history.iloc[: 96 * 10], targets=[LOADS[0]])
    with pytest.raises(InputError, match="quantiles"):
        ForecastSettings(quantiles=(0.2, 0.8))


def test_metrics_match_their_definitions() -> None:
    """rMAE = MAE / (P95 - P5) of the truth; with the median alone, rCRPS equals rMAE (CRPS = 2 x pinball at 0.5)."""
    rng = np.random.default_rng(5)
    truth = rng.gamma(2.0, 100.0, size=500)
    median = truth + rng.normal(0.0, 30.0, size=500)
    spread = np.quantile(truth, 0.95) - np.quantile(truth, 0.05)
    expected = np.mean(np.abs(truth - median)) / spread
    only_median = score(truth, median[:, None], [0.5])
    assert only_median.rmae == pytest.approx(expected, rel=1e-12)
    assert only_median.rcrps == pytest.approx(expected, rel=1e-12)
    # a sharper, well-placed band scores a lower rCRPS than a wide one around the same median
    levels = [0.1, 0.5, 0.9]
    sharp = np.column_stack([median - 40, median, median + 40])
    wide = np.column_stack([median - 400, median, median + 400])
    assert score(truth, sharp, levels).rcrps < score(truth, wide, levels).rcrps
