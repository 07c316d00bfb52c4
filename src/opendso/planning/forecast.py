"""Load and DER forecasts with OpenSTEF: LightGBM quantile regression on calendar, lag and weather features.

One OpenSTEF :class:`~openstef_models.models.ForecastingModel` per target and horizon band, built
from OpenSTEF's own transforms as its ``lgbm`` preset builds them (lags that respect the horizon,
cyclic, datetime and holiday features, daylight, radiation-derived features, standard scaling) and
its :class:`~openstef_models.models.forecasting.lgbm_forecaster.LGBMForecaster` (one LightGBM
quantile regressor per quantile level):

- the **day-ahead** model has a 48 h horizon: its lags reach back two days and more (two to
  fourteen days, the weekly lag among them), so it forecasts any quarter-hour of the next 48 h;
- the **intraday** model has a short horizon (``intraday_steps``, 6 h by default) and so may use
  the last hours' measurements; it replaces the day-ahead model over the first hours.

The preset's factory itself is not called: it imports every engine OpenSTEF supports (XGBoost
among them), and OpenDSO ships LightGBM only.

Weather (see :mod:`opendso.planning.weather`) enters as OpenSTEF's ``radiation``,
``temperature`` and ``windspeed`` features; a target with a known PV plant also gets
``pv_expected``, the plant's output by pvlib from the same weather. At prediction time the
weather over the horizon is the *forecast* weather the user supplies; OpenDSO never fetches it.

Targets are the columns of a history frame (loads, generators, or the node, feeder and
substation aggregates of :func:`~opendso.planning.history.aggregate_history`). Models are saved
with :meth:`OpenStefForecaster.save` as one pickle per target plus a JSON manifest; a model
folder is code (pickle) and must come from a trusted place, like any trained model.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError
from opendso.planning.model import DEFAULT_QUANTILES, QuantileForecast
from opendso.planning.weather import PvPlant, pv_output, weather_at

__all__ = ["ForecastSettings", "OpenStefForecaster"]

log = logging.getLogger(__name__)

STEP = pd.Timedelta(minutes=15)
_TARGET = "load"  # OpenSTEF's name for the target column, whatever the target is
_WEATHER_COLUMNS = {"ghi": "radiation", "temperature": "temperature", "wind_speed": "windspeed"}
_MANIFEST = "manifest.json"
#: Weeks the weekly-profile feature averages, and how far back it reads.
PROFILE_WEEKS = 4
_PROFILE_REACH = pd.Timedelta(days=7 * PROFILE_WEEKS)
_PROFILE = "weekly_profile"
_FORMAT = 1


@dataclass(frozen=True)
class ForecastSettings:
    """How the OpenSTEF forecasts are trained and made.

    ``horizon_steps`` quarter-hours ahead (192: 48 h); the first ``intraday_steps`` come from the
    intraday model (0: day-ahead model only). ``train_days`` of history train each model (plus
    ``lag_days`` before them that the lags read). ``n_estimators``, ``learning_rate``,
    ``max_depth``, ``num_leaves`` and ``min_data_in_leaf`` go to LightGBM. With ``residual_target``
    the models learn the deviation from the weekly profile (the mean of the same quarter-hour
    over the last four weeks, itself a feature too) and the profile is added back: the trees then
    correct a baseline that follows the season, instead of extrapolating a level they were
    trained on weeks earlier. ``country`` sets the holidays (ISO 3166
    alpha-2); ``latitude``/``longitude`` the daylight and radiation features.
    """

    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    horizon_steps: int = 192
    intraday_steps: int = 24
    train_days: int = 56
    lag_days: int = 14
    n_estimators: int = 60
    learning_rate: float = 0.2
    max_depth: int = 3
    num_leaves: int = 8
    min_data_in_leaf: int = 100
    residual_target: bool = False
    country: str = "DE"
    latitude: float = 51.0
    longitude: float = 10.0

    def __post_init__(self) -> None:
        levels = np.asarray(self.quantiles, dtype=float)
        if levels.size == 0 or np.any((levels <= 0) | (levels >= 1)) or np.any(np.diff(levels) <= 0):
            raise InputError(f"forecast settings: quantiles must increase strictly within (0, 1), got {self.quantiles}")
        if not np.any(np.isclose(levels, 0.5)):
            raise InputError("forecast settings: the quantiles must include 0.5")
        if not 1 <= self.horizon_steps <= 192 * 7:
            raise InputError(f"forecast settings: horizon_steps must be 1..1344, got {self.horizon_steps}")
        if not 0 <= self.intraday_steps < self.horizon_steps:
            raise InputError("forecast settings: intraday_steps must be >= 0 and below horizon_steps")
        if self.train_days < 7 or not 2 <= self.lag_days <= 28:
            raise InputError("forecast settings: train_days must be >= 7 and lag_days within 2..28")
        if (
            self.n_estimators < 1
            or not 0 < self.learning_rate <= 1
            or self.max_depth < 1
            or self.num_leaves < 2
            or self.min_data_in_leaf < 1
        ):
            raise InputError("forecast settings: LightGBM parameters out of range")
        if not -90 <= self.latitude <= 90 or not -180 <= self.longitude <= 180:
            raise InputError("forecast settings: latitude/longitude out of range")


@dataclass
class _TargetModels:
    """The trained models of one target: day-ahead, optionally intraday, and what the target needs."""

    day_ahead: Any
    intraday: Any | None
    day_ahead_calibrator: Any | None
    intraday_calibrator: Any | None
    non_negative: bool
    plant: PvPlant | None
    weather_columns: tuple[str, ...]


@dataclass
class OpenStefForecaster:
    """OpenSTEF forecasts of several targets, each with its own models; :meth:`fit` then :meth:`predict`.

    ``plants`` maps a target to its :class:`PvPlant` where the plant's data are known (the
    ``pv_expected`` feature needs weather with irradiance). ``metadata`` (JSON values) is saved
    with the models and read back, for the caller's own notes (the data the models came from).
    """

    settings: ForecastSettings = field(default_factory=ForecastSettings)
    plants: Mapping[str, PvPlant] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    _models: dict[str, _TargetModels] = field(default_factory=dict, init=False, repr=False)

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets with trained models, in training order."""
        return tuple(self._models)

    def features(self, target: str) -> tuple[str, ...]:
        """The input columns the models of ``target`` were trained with besides the target and OpenSTEF's own."""
        if target not in self._models:
            raise InputError(f"forecast: no trained model for target {target!r}")
        return (_PROFILE, *self._models[target].weather_columns)

    def fit(
        self,
        history: pd.DataFrame,
        *,
        until: datetime | None = None,
        weather: pd.DataFrame | None = None,
        targets: Sequence[str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> OpenStefForecaster:
        """Train the models of ``targets`` (all columns by default) on ``history`` strictly before ``until``.

        ``until`` defaults to just after the last row. The training window is the
        ``train_days`` before ``until`` (the ``lag_days`` before that feed the lags).
        ``weather`` (the weather as it was forecast, ideally, or as measured) covers the training
        window. :class:`InputError` for an unknown target or too little history.
        """
        history = _check_history(history)
        chosen = list(history.columns) if targets is None else list(targets)
        unknown = [t for t in chosen if t not in history.columns]
        if unknown:
            raise InputError(f"forecast: unknown target(s) {', '.join(map(repr, unknown[:5]))}")
        end = pd.Timestamp(until).tz_convert("UTC") if until is not None else history.index[-1] + STEP
        settings = self.settings
        begin = end - pd.Timedelta(days=settings.train_days + settings.lag_days)
        window = history.loc[(history.index >= begin) & (history.index < end)]
        wide_index = pd.date_range(begin.floor(STEP) - _PROFILE_REACH, end - STEP, freq=STEP)
        wide = history.loc[(history.index >= wide_index[0]) & (history.index < end)].reindex(wide_index)
        if len(window) < 96 * (settings.lag_days + 7):
            raise InputError(
                f"forecast: {len(window)} quarter-hours of history before {end}; "
                f"need at least {settings.lag_days + 7} days"
            )
        index = pd.date_range(window.index[0].floor(STEP), end - STEP, freq=STEP)
        frame = window.reindex(index)
        weather_frame = _weather_features(weather, index)
        for target in chosen:
            if progress is not None:
                progress(target)
            series = frame[target].astype(float)
            if series.notna().sum() < 96 * 7:
                raise InputError(f"forecast: target {target!r} has less than a week of values before {end}")
            plant = self.plants.get(target)
            data = _dataset(series, weather_frame, plant, weather, index, _weekly_profile(wide[target], index))
            if settings.residual_target:
                data[_TARGET] = data[_TARGET] - data[_PROFILE]
            day_ahead = self._build(timedelta(minutes=15 * settings.horizon_steps), data.columns)
            day_ahead_calibrator = _fit(day_ahead, data)
            intraday = intraday_calibrator = None
            if settings.intraday_steps > 0:
                intraday = self._build(timedelta(minutes=15 * settings.intraday_steps), data.columns)
                intraday_calibrator = _fit(intraday, data)
            self._models[target] = _TargetModels(
                day_ahead=day_ahead,
                intraday=intraday,
                day_ahead_calibrator=day_ahead_calibrator,
                intraday_calibrator=intraday_calibrator,
                non_negative=bool(np.nanmin(series.to_numpy()) >= 0.0),
                plant=plant,
                weather_columns=tuple(c for c in data.columns if c not in (_TARGET, _PROFILE)),
            )
            log.debug("event=forecast_trained target=%s rows=%d", target, len(data))
        return self

    def predict(
        self,
        history: pd.DataFrame,
        issued: datetime,
        *,
        weather: pd.DataFrame | None = None,
        targets: Sequence[str] | None = None,
    ) -> QuantileForecast:
        """Quantile forecast of ``targets`` (all trained by default) over ``horizon_steps`` from ``issued``.

        Reads only ``history`` strictly before ``issued`` (the lags' ``lag_days``); the intervals
        start at ``issued`` rounded up to the quarter-hour. ``weather`` must cover the horizon
        for models trained with weather (NaN weather is allowed, but costs skill).
        """
        if not self._models:
            raise InputError("forecast: no trained models (run fit or load a model folder)")
        history = _check_history(history)
        if getattr(issued, "tzinfo", None) is None:
            raise InputError(f"forecast issue time {issued} must be timezone-aware")
        chosen = list(self._models) if targets is None else list(targets)
        unknown = [t for t in chosen if t not in self._models]
        if unknown:
            raise InputError(f"forecast: no trained model for target(s) {', '.join(map(repr, unknown[:5]))}")
        missing = [t for t in chosen if t not in history.columns]
        if missing:
            raise InputError(f"forecast: the history has no column for target(s) {', '.join(map(repr, missing[:5]))}")
        settings = self.settings
        issued_ts = pd.Timestamp(issued).tz_convert("UTC")
        start = issued_ts.ceil(STEP)
        first = start - pd.Timedelta(days=settings.lag_days)
        past = history.loc[(history.index < issued_ts) & (history.index >= first - _PROFILE_REACH)]
        index = pd.date_range(first, periods=96 * settings.lag_days + settings.horizon_steps, freq=STEP)
        wide_index = pd.date_range(first - _PROFILE_REACH, index[-1], freq=STEP)
        frame = past.reindex(wide_index)
        weather_frame = _weather_features(weather, index)
        levels = np.asarray(settings.quantiles, dtype=float)
        values = np.empty((len(levels), settings.horizon_steps, len(chosen)))
        for k, target in enumerate(chosen):
            models = self._models[target]
            if models.weather_columns and weather is None:
                raise InputError(f"forecast: the model of {target!r} was trained with weather; give the weather")
            series = frame[target].astype(float)
            profile = _weekly_profile(series, index)
            data = _dataset(series.reindex(index), weather_frame, models.plant, weather, index, profile)
            data = data.reindex(columns=[_TARGET, _PROFILE, *models.weather_columns])
            if settings.residual_target:
                data[_TARGET] = data[_TARGET] - data[_PROFILE]
            out = _predict(models.day_ahead, models.day_ahead_calibrator, data, start, settings.horizon_steps, levels)
            if models.intraday is not None:
                out[:, : settings.intraday_steps] = _predict(
                    models.intraday, models.intraday_calibrator, data, start, settings.intraday_steps, levels
                )
            if settings.residual_target:
                ahead = profile.reindex(pd.date_range(start, periods=settings.horizon_steps, freq=STEP)).to_numpy()
                level = float(np.nanmean(series.to_numpy())) if np.isfinite(series.to_numpy()).any() else 0.0
                out = out + np.where(np.isfinite(ahead), ahead, level)[None, :]
            if models.non_negative:
                out = np.maximum(out, 0.0)
            values[:, :, k] = np.sort(out, axis=0)
        times = pd.date_range(start, periods=settings.horizon_steps, freq=STEP)
        return QuantileForecast(
            targets=tuple(chosen),
            time=times.tz_localize(None).to_numpy().astype("datetime64[s]"),
            quantiles=levels,
            values=values,
            issued=issued_ts.to_pydatetime(),
        )

    def save(self, folder: Path | str) -> None:
        """Write the models to ``folder`` (created): a manifest (settings, targets, files) and one pickle per target."""
        if not self._models:
            raise InputError("forecast: nothing to save (no trained models)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for number, (target, models) in enumerate(self._models.items()):
            name = f"target-{number:05d}.pickle"
            tmp = folder / (name + ".tmp")
            with tmp.open("wb") as fh:
                pickle.dump(models, fh, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(folder / name)
            files[target] = name
        manifest = {"format": _FORMAT, "settings": asdict(self.settings), "metadata": self.metadata, "targets": files}
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        log.info("event=forecast_models_saved folder=%s targets=%d", folder, len(files))

    @classmethod
    def load(cls, folder: Path | str) -> OpenStefForecaster:
        """Read a folder written by :meth:`save`; :class:`InputError` naming the folder when it holds no models."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / _MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"model folder {str(folder)!r} has no readable {_MANIFEST}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise InputError(f"model folder {str(folder)!r}: unknown manifest format")
        try:
            raw = dict(manifest["settings"])
            raw["quantiles"] = tuple(raw["quantiles"])
            forecaster = cls(settings=ForecastSettings(**raw), metadata=dict(manifest.get("metadata") or {}))
            targets = dict(manifest["targets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"model folder {str(folder)!r}: malformed {_MANIFEST}: {exc}") from None
        for target, name in targets.items():
            path = folder / Path(str(name)).name
            try:
                with path.open("rb") as fh:
                    models = pickle.load(fh)  # a model folder is trusted, as the module docstring says
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                raise InputError(f"model folder {str(folder)!r}: cannot read {name}: {exc}") from None
            if not isinstance(models, _TargetModels):
                raise InputError(f"model folder {str(folder)!r}: {name} holds no forecast model")
            forecaster._models[target] = models
        return forecaster

    def _build(self, horizon: timedelta, columns: pd.Index) -> Any:
        """An untrained OpenSTEF forecasting model for one horizon, as the ``lgbm`` preset composes it."""
        from openstef_core.mixins import TransformPipeline
        from openstef_core.types import LeadTime, Q
        from openstef_models.models import ForecastingModel
        from openstef_models.models.forecasting.lgbm_forecaster import LGBMForecaster, LGBMHyperParams
        from openstef_models.transforms.general import EmptyFeatureRemover, Scaler
        from openstef_models.transforms.postprocessing import QuantileSorter
        from openstef_models.transforms.time_domain import (
            CyclicFeaturesAdder,
            DatetimeFeaturesAdder,
            HolidayFeatureAdder,
        )
        from openstef_models.transforms.time_domain.lags_adder import LagsAdder
        from openstef_models.transforms.weather_domain import DaylightFeatureAdder, RadiationDerivedFeaturesAdder
        from openstef_models.utils.data_split import DataSplitter
        from openstef_models.utils.feature_selection import Exclude
        from pydantic_extra_types.coordinate import Coordinate, Latitude, Longitude
        from pydantic_extra_types.country import CountryAlpha2

        settings = self.settings
        horizons = [LeadTime(horizon)]
        coordinate = Coordinate(latitude=Latitude(settings.latitude), longitude=Longitude(settings.longitude))
        transforms: list[Any] = [
            LagsAdder(
                history_available=timedelta(days=settings.lag_days),
                horizons=horizons,
                target_column=_TARGET,
                max_day_lags=settings.lag_days,
            ),
        ]
        if "radiation" in columns:
            transforms.append(RadiationDerivedFeaturesAdder(coordinate=coordinate, radiation_column="radiation"))
        transforms += [
            CyclicFeaturesAdder(),
            DaylightFeatureAdder(coordinate=coordinate),
            HolidayFeatureAdder(country_code=CountryAlpha2(settings.country)),
            DatetimeFeaturesAdder(onehot_encode=False),
            Scaler(selection=Exclude(_TARGET), method="standard"),
            EmptyFeatureRemover(),
        ]
        hyperparams = LGBMHyperParams(
            n_estimators=settings.n_estimators,
            learning_rate=settings.learning_rate,
            max_depth=settings.max_depth,
            num_leaves=settings.num_leaves,
            min_data_in_leaf=settings.min_data_in_leaf,
        )
        return ForecastingModel(
            preprocessing=TransformPipeline(transforms=transforms),
            forecaster=LGBMForecaster(
                quantiles=[Q(float(q)) for q in settings.quantiles],
                horizons=horizons,
                hyperparams=hyperparams,
                random_state=0,
            ),
            postprocessing=TransformPipeline(transforms=[QuantileSorter()]),
            target_column=_TARGET,
            data_splitter=DataSplitter(
                val_fraction=0.15, test_fraction=0.0, stratification_fraction=0.15, min_days_for_stratification=4
            ),
        )


# -- helpers ------------------------------------------------------------------------------------------


def _check_history(history: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None:
        raise InputError("forecast history must be indexed by timezone-aware times")
    if not history.index.is_monotonic_increasing:
        history = history.sort_index()
    return history


def _weather_features(weather: pd.DataFrame | None, index: pd.DatetimeIndex) -> pd.DataFrame | None:
    """OpenSTEF's weather feature columns at ``index``, or None without weather."""
    if weather is None:
        return None
    at = weather_at(weather, index)
    columns = {src: dst for src, dst in _WEATHER_COLUMNS.items() if src in at.columns}
    return at[list(columns)].rename(columns=columns)


def _weekly_profile(series: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """At each time of ``index``: the mean of the same quarter-hour 1 to :data:`PROFILE_WEEKS` weeks before (NaN-aware).

    Every value it reads is at least a week old, so the feature is known at any horizon up to a
    week; it gives the trees the recent level and shape of the target, which the single lags
    (each one noisy day) do not.
    """
    week = pd.Timedelta(days=7)
    shifted = [series.reindex(index - (w + 1) * week).to_numpy() for w in range(PROFILE_WEEKS)]
    stack = np.vstack(shifted)
    count = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)
    return pd.Series(mean, index=index)


def _dataset(
    series: pd.Series,
    weather_frame: pd.DataFrame | None,
    plant: PvPlant | None,
    weather: pd.DataFrame | None,
    index: pd.DatetimeIndex,
    profile: pd.Series,
) -> pd.DataFrame:
    """The target and its features on ``index``: the weekly profile, and the weather (and PV by pvlib) when given."""
    data = pd.DataFrame({_TARGET: series.reindex(index).to_numpy(), _PROFILE: profile.to_numpy()}, index=index)
    if weather_frame is not None:
        data = data.join(weather_frame)
        if plant is not None and weather is not None and "ghi" in weather.columns:
            # the PV expected at the middle of each quarter-hour, from the weather there
            centre = weather_at(weather, index + STEP / 2)
            data["pv_expected"] = pv_output(centre.set_axis(index + STEP / 2), plant).to_numpy()
    data.index.name = "timestamp"
    return data


def _fit(model: Any, data: pd.DataFrame) -> Any:
    """Train ``model``; return OpenSTEF's conformal quantile calibrator fitted on the held-out validation days.

    OpenSTEF's splitter keeps some days (15 %) out of training; the model's forecasts of those
    days are out of sample, so the one-sided conformal corrections fitted on them widen bands
    that in-sample quantile regression makes too narrow. None when there are too few such days.
    """
    from openstef_core.datasets import TimeSeriesDataset
    from openstef_models.models.forecasting_model import restore_target
    from openstef_models.transforms.postprocessing import ConformalizedQuantileCalibrator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(TimeSeriesDataset(data=data, sample_interval=timedelta(minutes=15)))
        validation = result.input_data_val if result is not None else None
        if validation is None or len(validation.data) < 96:
            return None
        raw = model.forecaster.predict(data=validation)
        held_out = model.postprocessing.transform(
            restore_target(dataset=raw, original_dataset=validation, target_column=_TARGET)
        )
        calibrator = ConformalizedQuantileCalibrator(min_calibration_samples=96)
        calibrator.fit(held_out)
    return calibrator


def _predict(
    model: Any,
    calibrator: Any,
    data: pd.DataFrame,
    start: pd.Timestamp,
    steps: int,
    levels: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """(Q, steps) quantiles from ``start`` by one OpenSTEF model, calibrated when a calibrator is given."""
    from openstef_core.datasets import TimeSeriesDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.predict(
            TimeSeriesDataset(data=data, sample_interval=timedelta(minutes=15)), forecast_start=start.to_pydatetime()
        )
        if calibrator is not None:
            result = calibrator.transform(result)
    frame = result.data
    times = pd.date_range(start, periods=steps, freq=STEP)
    out = np.empty((len(levels), steps))
    for k, level in enumerate(levels):
        column = _quantile_column(level)
        if column not in frame.columns:
            raise InputError(f"forecast: the model gives no quantile {level}")
        out[k] = frame[column].reindex(times).to_numpy(dtype=float)
    if not np.all(np.isfinite(out)):
        # a quarter-hour the model could not forecast (missing features): hold the median's neighbours
        filled = pd.DataFrame(out.T).ffill().bfill().to_numpy().T
        out = np.where(np.isfinite(filled), filled, 0.0)
    return out


def _quantile_column(level: float) -> str:
    """OpenSTEF's column name of a quantile (``quantile_P50``, ``quantile_P05``, ``quantile_P025``...)."""
    from openstef_core.types import Q

    return str(Q(float(level)).format())
