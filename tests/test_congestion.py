"""The congestion forecast: copula scenarios against known dependence, and held-out days of a SimBench grid.

The grid is SimBench's ``1-LV-rural1--2-sw`` (the 2034 scenario: eight PV plants and heat pumps,
storage and EV loads on a 160 kVA transformer): its own year of profiles overloads the transformer
on 2,587 quarter-hours, from March to October, around midday (PV export), so no load or PV is
scaled. Forecasts are the weekly-profile baseline trained on the weeks before each issue time; the
"actuals" are the noisy history (``profile_history``) of the forecast's intervals, judged by a
plain power-grid-model Newton-Raphson run built here from the history's columns and the
profiles' Q/P (not through the forecast's own solver). Held-out days: issue times every three
days from 8 June (solstice: the weekly profile has no seasonal trend to lag behind).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from power_grid_model import CalculationMethod, LoadGenType, PowerGridModel, initialize_array
from scipy.special import ndtr, ndtri

from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid import Grid
from opendso.planning.baselines import weekly_profile_forecast
from opendso.planning.congestion import (
    HISTORY_WINDOW,
    CongestionForecast,
    fit_copula_before,
    forecast_congestion,
    forecast_congestion_comonotone,
    reliability,
    scenario_injections,
)
from opendso.planning.history import profile_history, profile_times
from opendso.planning.model import QuantileForecast
from opendso.planning.scenarios import GaussianCopula, comonotone_scenarios, fit_copula, pit, sample_scenarios

CODE = "simbench:1-LV-rural1--2-sw"
LIMITS = ViolationLimits()  # 0.9 .. 1.1 p.u., loading 100 %
SCENARIOS = 100
HELD_OUT = [datetime(2016, 6, 8, tzinfo=UTC) + timedelta(days=3 * k) for k in range(6)]
#: Hit rate at this probability: the share of actual violations the forecast flags.
THRESHOLD = 0.3
MIN_HIT_RATE = 0.85
#: Reliability: in every one of RELIABILITY_BINS bins with at least MIN_BIN cells, |observed - forecast|
#: within this. Loose on purpose: the cells of one bin are mostly consecutive quarter-hours of the same
#: few afternoons (strongly correlated), so six held-out issue times give a few dozen independent cases.
RELIABILITY_BINS = 5
RELIABILITY_TOLERANCE = 0.3
MIN_BIN = 30
#: Over all cells with 0.05 < p < 0.95: mean forecast probability against the observed frequency
#: (measured 0.61 against 0.50 on 308 cells: the weekly profile's quantiles lean high on these days).
UNCERTAIN_TOLERANCE = 0.15


# -- copula scenarios against a known dependence ------------------------------------------------------------
def _forecast(n: int, t: int, levels: np.ndarray, scale: np.ndarray, start: datetime) -> QuantileForecast:
    """A forecast whose target j is normal(mean 10 + j, sd scale[j]) at every interval, at ``levels``."""
    values = (10.0 + np.arange(n))[None, None, :] + ndtri(levels)[:, None, None] * scale[None, None, :]
    values = np.broadcast_to(values, (levels.size, t, n)).copy()
    time = pd.date_range(start, periods=t, freq="15min").tz_localize(None).to_numpy().astype("datetime64[s]")
    targets = tuple(f"sym_gen:G{j}" if j % 2 else f"sym_load:L{j}" for j in range(n))
    return QuantileForecast(targets, time, levels, values, issued=start)


def _true_correlation(n: int) -> np.ndarray:
    """A block correlation: two groups of strongly correlated targets, weakly tied to each other."""
    c = np.full((n, n), 0.15)
    half = n // 2
    c[:half, :half] = 0.8
    c[half:, half:] = 0.6
    np.fill_diagonal(c, 1.0)
    return c


def test_the_copula_recovers_the_dependence_of_past_errors_and_the_scenarios_keep_it() -> None:
    n, t, days, rho = 6, 48, 60, 0.6
    levels = np.linspace(0.02, 0.98, 49)
    scale = np.linspace(1.0, 3.0, n)
    truth = _true_correlation(n)
    chol = np.linalg.cholesky(truth)
    rng = np.random.default_rng(7)
    forecasts, frames = [], []
    for d in range(days):
        start = datetime(2016, 3, 1, tzinfo=UTC) + timedelta(days=d)
        f = _forecast(n, t, levels, scale, start)
        e = rng.standard_normal((t, n)) @ chol.T
        z = np.empty_like(e)
        z[0] = e[0]
        for k in range(1, t):  # AR(1) in time with unit variance
            z[k] = rho * z[k - 1] + np.sqrt(1 - rho * rho) * e[k]
        actual = f.inverse_cdf(ndtr(z)[None])[0]
        forecasts.append(f)
        frames.append(pd.DataFrame(actual, index=pd.date_range(start, periods=t, freq="15min"), columns=f.targets))
    copula = fit_copula(forecasts, pd.concat(frames), seed=1)
    samples = days * t
    # sampling error of a correlation from ~samples / (1 + rho^2)/(1 - rho^2) effective samples
    effective = samples * (1 - rho**2) / (1 + rho**2)
    tolerance = 4 * (1 - 0.15**2) / np.sqrt(effective) + copula.shrinkage
    off = ~np.eye(n, dtype=bool)
    assert np.abs(copula.correlation - truth)[off].max() < tolerance, (copula.correlation, truth, tolerance)
    assert abs(copula.rho - rho) < 0.05
    # scenarios: their normal scores have the copula's correlation, each target its forecast's quantiles
    forecast = forecasts[-1]
    s = 4000
    scenarios = sample_scenarios(forecast, copula, s, seed=3)
    u = np.stack([pit(forecast, scenarios[k], seed=k) for k in range(s)])  # (S, T, N) back to uniforms
    z = ndtri(u[:, 5, :])
    sampled = np.corrcoef(z, rowvar=False)
    assert np.abs(sampled - copula.correlation)[off].max() < 4 / np.sqrt(s) + 0.02
    for j in range(n):
        for k, level in enumerate(forecast.quantiles):
            # the outer quantiles hold the tails' mass (no extrapolation): count it on the outer side
            x, q = scenarios[:, :, j], forecast.values[k, :, j]
            share_below = np.mean(x <= q) if k == 0 else np.mean(x < q)
            assert abs(share_below - level) < 0.02, (j, level, share_below)
    lag = np.corrcoef(z[:, 0], ndtri(u[:, 6, 0]))[0, 1]
    assert abs(lag - copula.rho) < 4 / np.sqrt(s)


def test_comonotone_scenarios_put_every_generator_at_one_rank_and_loads_at_the_mirror() -> None:
    levels = np.array([0.1, 0.5, 0.9])
    f = _forecast(4, 3, levels, np.ones(4), datetime(2016, 3, 1, tzinfo=UTC))
    s = comonotone_scenarios(f, 5)
    ranks = (s - f.median()[None]) / ndtri(0.9)  # standardised: equal for generators, mirrored for loads
    for k in range(5):
        gen = ranks[k, :, 1::2]
        load = ranks[k, :, 0::2]
        assert np.allclose(gen, gen[0, 0])
        assert np.allclose(load, -gen[0, 0])


def test_bad_input_is_refused_naming_it() -> None:
    f = _forecast(2, 4, np.array([0.1, 0.5, 0.9]), np.ones(2), datetime(2016, 3, 1, tzinfo=UTC))
    with pytest.raises(InputError, match="at least one"):
        sample_scenarios(f, None, 0)
    with pytest.raises(InputError, match="shape"):
        pit(f, np.zeros((3, 2)))
    with pytest.raises(InputError, match="no past forecasts"):
        fit_copula([], pd.DataFrame())
    with pytest.raises(InputError, match="rho"):
        GaussianCopula(("a",), np.eye(1), rho=1.0)
    with pytest.raises(InputError, match="shape"):
        reliability([0.1, 0.2], [True])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        reliability([1.5], [True])


# -- a SimBench grid on held-out days -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture(scope="module")
def history(grid: Grid) -> pd.DataFrame:
    return profile_history(grid, noise=0.1, seed=0)


def _actual_values(grid: Grid, history: pd.DataFrame, times: pd.DatetimeIndex) -> np.ndarray:
    """(T, E) loading of lines, transformers and u_pu of nodes for the history at ``times``: one plain NR run.

    Built here from the history's columns: each load's and generator's P is its column, its Q is P
    times the profile's Q/P at that step (the input's Q/P where the profile's P is 0).
    """
    assert grid.profiles is not None
    steps = profile_times(grid).get_indexer(times)
    assert (steps >= 0).all()
    update: dict[str, dict[str, np.ndarray]] = {}
    for component in ("sym_load", "sym_gen"):
        array = grid.component(component)
        p = np.stack(
            [
                history[f"{component}:{name}"].to_numpy()[history.index.get_indexer(times)]
                for name in grid.names_of(component)
            ],
            axis=1,
        )
        p_prof = np.broadcast_to(array["p_specified"], p.shape).astype(float).copy()
        q_prof = np.broadcast_to(array["q_specified"], p.shape).astype(float).copy()
        for a in grid.profiles.assignments:
            if a.component == component:
                rows = np.searchsorted(array["id"], a.ids)
                target = p_prof if a.attribute == "p_specified" else q_prof
                target[:, rows] = a.evaluate(grid.profiles.values[steps])
        base_ratio = np.divide(
            array["q_specified"], array["p_specified"], out=np.zeros(array.size), where=array["p_specified"] != 0
        )
        ratio = np.divide(q_prof, p_prof, out=np.broadcast_to(base_ratio, p.shape).copy(), where=p_prof != 0)
        update[component] = {
            "id": np.broadcast_to(array["id"], p.shape).copy(),
            "p_specified": p,
            "q_specified": p * ratio,
        }
    model = PowerGridModel(grid.pgm_input())
    out = model.calculate_power_flow(
        update_data=update,  # type: ignore[arg-type]
        calculation_method=CalculationMethod.newton_raphson,
        error_tolerance=1e-10,
        output_component_types={"line": ["loading"], "transformer": ["loading"], "node": ["u_pu"]},
    )
    return np.concatenate([out["line"]["loading"], out["transformer"]["loading"], out["node"]["u_pu"]], axis=1)


def _violations(values: np.ndarray, forecast: CongestionForecast) -> np.ndarray:
    kinds = np.array(forecast.kinds)
    branch = kinds != "node"
    out = np.zeros(values.shape, dtype=bool)
    out[:, branch] = values[:, branch] > LIMITS.loading_max
    out[:, ~branch] = (values[:, ~branch] > LIMITS.u_max_pu) | (values[:, ~branch] < LIMITS.u_min_pu)
    return out.T  # (E, T)


@pytest.fixture(scope="module")
def held_out(grid: Grid, history: pd.DataFrame) -> dict[str, Any]:
    """Copula and comonotone forecasts of every held-out issue time, with the actual violations and climatology."""
    span = pd.date_range(
        HELD_OUT[0] - timedelta(days=28), HELD_OUT[-1] + timedelta(days=2), freq="15min", inclusive="left"
    )
    actual_all = pd.DataFrame(_actual_values(grid, history, span), index=span)  # one run for every time needed
    copula_p, comono_p, observed, climate = [], [], [], []
    copula_excess = comono_excess = observed_excess = 0.0
    for k, issued in enumerate(HELD_OUT):
        recent = history.loc[(history.index < issued) & (history.index >= issued - HISTORY_WINDOW)]
        forecast = weekly_profile_forecast(recent, issued)
        copula = fit_copula_before(history, issued, days=7)
        result = forecast_congestion(grid, forecast, scenarios=SCENARIOS, seed=k, copula=copula, limits=LIMITS)
        naive = forecast_congestion_comonotone(grid, forecast, scenarios=SCENARIOS, limits=LIMITS)
        times = pd.DatetimeIndex(forecast.time).tz_localize("UTC")
        actual = actual_all.loc[times].to_numpy()
        seen = _violations(actual, result)
        # climatology: how often the element violated at that quarter-hour of the day in the 28 days before
        past = pd.DatetimeIndex([t - timedelta(days=d) for d in range(1, 29) for t in times])
        past_seen = _violations(actual_all.loc[past].to_numpy(), result).reshape(len(result.names), 28, len(times))
        copula_p.append(result.probability)
        comono_p.append(naive.probability)
        observed.append(seen)
        climate.append(past_seen.mean(axis=1))
        copula_excess += float(np.nansum(result.probability * np.nan_to_num(result.excess)))
        comono_excess += float(np.nansum(naive.probability * np.nan_to_num(naive.excess)))
        branch = np.array(result.kinds) != "node"
        observed_excess += float(np.maximum(actual[:, branch] - LIMITS.loading_max, 0).sum())
    return {
        "copula": np.array(copula_p),
        "comonotone": np.array(comono_p),
        "observed": np.array(observed),
        "climatology": np.array(climate),
        "copula_excess": copula_excess,
        "comonotone_excess": comono_excess,
        "observed_excess": observed_excess,
        "last": result,
        "last_forecast": forecast,
    }


def test_the_held_out_days_have_violations_to_find(held_out: dict[str, Any]) -> None:
    # the transformer's PV export exceeds its rating on every held-out day: the test is not vacuous
    per_issue = held_out["observed"].any(axis=1).sum(axis=1)
    assert (per_issue > 0).all()
    assert held_out["observed"].sum() >= 100


def test_the_forecast_finds_the_violations_the_year_shows(held_out: dict[str, Any]) -> None:
    p, seen = held_out["copula"], held_out["observed"]
    hit_rate = ((p >= THRESHOLD) & seen).sum() / seen.sum()
    assert hit_rate >= MIN_HIT_RATE, hit_rate
    # and it does not flag everything: most flagged cells are real violations or close calls
    assert ((p >= THRESHOLD) & ~seen).sum() < seen.sum()


def test_the_probabilities_are_calibrated_on_held_out_days(held_out: dict[str, Any]) -> None:
    p, seen = held_out["copula"], held_out["observed"]
    table = reliability(p, seen, bins=RELIABILITY_BINS)
    for i in range(table.count.size):
        if table.count[i] >= MIN_BIN:
            assert abs(table.observed[i] - table.forecast[i]) <= RELIABILITY_TOLERANCE, table.to_dict()
    uncertain = (p > 0.05) & (p < 0.95)  # the cells where calibration matters: neither sure nor impossible
    assert abs(p[uncertain].mean() - seen[uncertain].mean()) < UNCERTAIN_TOLERANCE
    assert table.skill > 0.4, table.to_dict()  # against the base rate of the held-out cells
    against_past = reliability(p, seen, climatology=held_out["climatology"])
    assert against_past.skill > 0.0, against_past.to_dict()  # against each element's past month by time of day
    assert abs(p.sum() - seen.sum()) < 0.3 * seen.sum()


def test_perfectly_correlated_quantiles_overstate_congestion(held_out: dict[str, Any]) -> None:
    copula, naive, seen = held_out["copula"], held_out["comonotone"], held_out["observed"]
    # more cells flagged at every threshold where flexibility would be bought ...
    for threshold in (0.05, 0.1, 0.2):
        assert (naive >= threshold).sum() > (copula >= threshold).sum(), threshold
    # ... and more energy to relieve: the comonotone sum is the largest in convex order (stop-loss)
    assert held_out["comonotone_excess"] > 1.1 * held_out["copula_excess"]
    assert held_out["comonotone_excess"] > held_out["observed_excess"]
    assert abs(held_out["copula_excess"] - held_out["observed_excess"]) < abs(
        held_out["comonotone_excess"] - held_out["observed_excess"]
    )
    del seen


def test_each_likely_violation_says_how_much_to_relieve_and_where(grid: Grid, held_out: dict[str, Any]) -> None:
    result: CongestionForecast = held_out["last"]
    payload = result.to_dict(min_probability=0.5)
    assert payload["grid"] == CODE
    assert payload["steps"] == 192
    assert len(payload["time"]) == 192
    (trafo,) = [e for e in payload["elements"] if e["kind"] == "transformer"]
    assert trafo["quantity"] == "loading"
    assert len(trafo["probability"]) == 192
    sn_mva = float(grid.component("transformer")["sn"][0]) / 1e6
    pv_nodes = {str(n) for n in grid.names_of("node")[grid.node_positions(grid.component("sym_gen")["node"])]}
    for v in trafo["violations"]:
        assert v["probability"] > 0.5
        assert v["excess_mva"] == pytest.approx(v["excess"] * sn_mva, rel=1e-3)
        assert v["relieve"], v
        for r in v["relieve"]:
            # PV export overloads it: less injection relieves it, about one MW per MW of excess (LV losses small)
            assert r["p_mw"] < 0
            assert -r["p_mw"] == pytest.approx(v["excess_mva"], rel=0.25)
            assert r["q_mvar"] is None  # Q barely moves a transformer carrying mostly P: not offered
        assert {r["node"] for r in v["relieve"]} & pv_nodes


def test_a_forecast_naming_an_element_the_grid_lacks_is_refused(grid: Grid, history: pd.DataFrame) -> None:
    forecast = weekly_profile_forecast(
        history[["sym_load:LV1.101 Load 1"]].rename(columns=lambda c: "sym_load:nowhere"), HELD_OUT[0], horizon_steps=4
    )
    with pytest.raises(InputError, match="nowhere"):
        forecast_congestion(grid, forecast, scenarios=2)


def test_the_relief_brings_the_median_scenario_back_to_its_limit(grid: Grid, held_out: dict[str, Any]) -> None:
    """Independent check of the sensitivities: the relief, scaled to the median scenario's excess, in a NR run."""
    result: CongestionForecast = held_out["last"]
    forecast: QuantileForecast = held_out["last_forecast"]
    e = result.kinds.index("transformer")
    cells = [t for t in range(result.steps) if result.median[e, t] > 1.05 and (e, t) in result.relief]
    assert cells
    t = cells[len(cells) // 2]
    relief = result.relief[(e, t)][0]
    assert relief.p_mw is not None
    p_w = relief.p_mw * 1e6 * (result.median[e, t] - LIMITS.loading_max) / result.excess[e, t]
    update = scenario_injections(grid, forecast, forecast.median()[None])
    extra = initialize_array("input", "sym_load", 1)
    extra["id"] = grid.max_id + 1
    extra["node"] = grid.find(relief.node)[1]
    extra["status"] = 1
    extra["type"] = LoadGenType.const_power
    extra["p_specified"] = -p_w  # less injection there is more load
    extra["q_specified"] = 0.0
    data = dict(grid.pgm_input())
    data["sym_load"] = np.concatenate([data["sym_load"], extra])
    model = PowerGridModel(data)
    loads = update["sym_load"]
    gens = update["sym_gen"]
    model.update(
        update_data={
            "sym_load": {
                "id": data["sym_load"]["id"],
                "p_specified": np.append(loads["p_specified"][t], -p_w),
                "q_specified": np.append(loads["q_specified"][t], 0.0),
            },
            "sym_gen": {
                "id": data["sym_gen"]["id"],
                "p_specified": gens["p_specified"][t],
                "q_specified": gens["q_specified"][t],
            },
        }  # type: ignore[arg-type]
    )
    out = model.calculate_power_flow(calculation_method=CalculationMethod.newton_raphson, error_tolerance=1e-10)
    assert float(out["transformer"]["loading"][0]) == pytest.approx(LIMITS.loading_max, abs=0.02)
