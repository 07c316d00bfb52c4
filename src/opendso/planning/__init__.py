"""Looking ahead: forecasts of load and DER output, and the congestion forecast (issue 11 items 1-2).

``planning`` sits above ``der`` and below ``service``: it reads the historian and the grid's
profiles for training data, the DER registry for the plants it forecasts, and runs the batch
power flow of :mod:`opendso.calc` on correlated forecast scenarios. :mod:`opendso.planning.model`
holds :class:`QuantileForecast`, the one record every forecaster returns and the congestion
forecast reads.
"""

from __future__ import annotations

from opendso.planning.backtest import BacktestResult, run_backtest
from opendso.planning.baselines import persistence_forecast, weekly_profile_forecast
from opendso.planning.congestion import (
    CongestionForecast,
    ReliabilityTable,
    congestion_outlook,
    forecast_congestion,
    forecast_congestion_comonotone,
    reliability,
)
from opendso.planning.forecast import ForecastSettings, OpenStefForecaster
from opendso.planning.history import (
    aggregate_history,
    historian_history,
    profile_history,
    profile_times,
    target_kinds,
)
from opendso.planning.model import DEFAULT_QUANTILES, QuantileForecast, parse_target, target_name
from opendso.planning.scenarios import GaussianCopula, fit_copula, sample_scenarios
from opendso.planning.weather import PvPlant, pv_output, read_weather

__all__ = [  # noqa: RUF022 - plainly sorted, as tests/test_exported_members.py pins every package's surface
    "BacktestResult",
    "CongestionForecast",
    "DEFAULT_QUANTILES",
    "ForecastSettings",
    "GaussianCopula",
    "OpenStefForecaster",
    "PvPlant",
    "QuantileForecast",
    "ReliabilityTable",
    "aggregate_history",
    "congestion_outlook",
    "fit_copula",
    "forecast_congestion",
    "forecast_congestion_comonotone",
    "historian_history",
    "parse_target",
    "persistence_forecast",
    "profile_history",
    "profile_times",
    "pv_output",
    "read_weather",
    "reliability",
    "run_backtest",
    "sample_scenarios",
    "target_kinds",
    "target_name",
    "weekly_profile_forecast",
]
