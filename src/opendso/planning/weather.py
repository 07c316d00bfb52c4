"""Weather for the forecasts: the user's weather file, pvlib's bundled real weather, and PV output by pvlib.

OpenSTEF's forecasts take weather as features; OpenDSO reads it from a file the user configures
(no internet at run time). The file is a CSV with a header row:

``time``
    ISO 8601 with a zone (``2016-03-01T00:00:00Z``), strictly increasing; the values hold from
    then on, at any step (hourly is common; they are interpolated to the quarter-hours).
``ghi`` (alias ``irradiance``, ``radiation``), ``dni``, ``dhi``
    irradiance in W/m², 0 to 1500.
``temperature``
    air temperature in °C, -90 to 70.
``wind_speed``
    m/s, 0 to 100.

At least one field besides ``time`` is required; an empty cell is a missing value. Any other
column, a malformed number or time, a value out of range or a time out of order is a
:class:`~opendso.errors.WeatherFileError` naming the file, the row (1-based, after the header)
and the field.

Where a PV plant's data are known (:class:`PvPlant`: capacity, orientation, location),
:func:`pv_output` turns irradiance and temperature into its expected AC output with pvlib
(solar position, transposition to the plane of the array, PVWatts DC with cell temperature, a
flat inverter efficiency, clipped at the capacity): the physical feature the PV forecast learns
from, and, with the true weather, the "measured" PV of :func:`pvlib_sample_weather`'s backtests.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError, WeatherFileError
from opendso.timeutil import parse_time

__all__ = [
    "WEATHER_FIELDS",
    "PvPlant",
    "perturbed_weather",
    "pv_output",
    "pvlib_pv_case",
    "pvlib_sample_weather",
    "read_weather",
    "weather_at",
]

#: The weather fields OpenDSO reads, with their valid ranges (unit in the name's documentation above).
WEATHER_FIELDS: dict[str, tuple[float, float]] = {
    "ghi": (0.0, 1500.0),
    "dni": (0.0, 1500.0),
    "dhi": (0.0, 1500.0),
    "temperature": (-90.0, 70.0),
    "wind_speed": (0.0, 100.0),
}
_ALIASES = {"irradiance": "ghi", "radiation": "ghi"}

#: Inverter efficiency (flat) and module temperature coefficient (1/K) of :func:`pv_output`.
INVERTER_EFFICIENCY = 0.96
GAMMA_PDC = -0.004


@dataclass(frozen=True)
class PvPlant:
    """What is known of a PV plant: AC capacity in W, location in degrees, and array orientation.

    ``azimuth_deg`` counts from north clockwise (180: facing south); ``tilt_deg`` from horizontal.
    """

    capacity_w: float
    latitude: float
    longitude: float
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    altitude_m: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("capacity_w", self.capacity_w, 1e-3, math.inf),
            ("latitude", self.latitude, -90.0, 90.0),
            ("longitude", self.longitude, -180.0, 180.0),
            ("tilt_deg", self.tilt_deg, 0.0, 90.0),
            ("azimuth_deg", self.azimuth_deg, 0.0, 360.0),
        )
        for name, value, low, high in checks:
            if not (math.isfinite(value) and low <= value <= high):
                raise InputError(f"PV plant: {name} must be within [{low}, {high}], got {value}")


def read_weather(path: Path | str) -> pd.DataFrame:
    """The weather file at ``path`` as a DataFrame indexed by UTC time, one column per field present.

    See the module docstring for the format. :class:`WeatherFileError` naming the row and field
    of the first problem (an unreadable file names only the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WeatherFileError(path, f"cannot be read: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise WeatherFileError(path, "is empty: a header row with 'time' and weather fields is needed")
    names = [h.strip().lower() for h in header]
    if "time" not in names:
        raise WeatherFileError(path, "no 'time' column in the header", row=0, field="time")
    fields: list[str] = []
    for name in names:
        if name == "time":
            continue
        field = _ALIASES.get(name, name)
        if field not in WEATHER_FIELDS:
            known = ", ".join(["time", *WEATHER_FIELDS, *_ALIASES])
            raise WeatherFileError(path, f"unknown column (known: {known})", row=0, field=name)
        if field in fields:
            raise WeatherFileError(path, "the field appears twice", row=0, field=name)
        fields.append(field)
    if not fields:
        raise WeatherFileError(path, "no weather field besides 'time'", row=0)
    time_col = names.index("time")
    times: list[pd.Timestamp] = []
    rows: list[list[float]] = []
    for number, record in enumerate(reader, start=1):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(names):
            raise WeatherFileError(path, f"{len(record)} cells, the header has {len(names)}", row=number)
        try:
            when = pd.Timestamp(parse_time(record[time_col].strip(), "time"))
        except InputError as exc:
            raise WeatherFileError(path, str(exc), row=number, field="time") from None
        if times and when <= times[-1]:
            raise WeatherFileError(
                path, f"time {when} is not after the row before ({times[-1]})", row=number, field="time"
            )
        values: list[float] = []
        column = 0
        for index, name in enumerate(names):
            if index == time_col:
                continue
            field = fields[column]
            column += 1
            cell = record[index].strip()
            if not cell:
                values.append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                raise WeatherFileError(path, f"{cell!r} is not a number", row=number, field=name) from None
            low, high = WEATHER_FIELDS[field]
            if not math.isfinite(value) or not low <= value <= high:
                raise WeatherFileError(path, f"{cell} is outside [{low:g}, {high:g}]", row=number, field=name)
            values.append(value)
        times.append(when)
        rows.append(values)
    if not rows:
        raise WeatherFileError(path, "has no data rows")
    time_index = pd.DatetimeIndex(times, name="time").tz_convert("UTC")
    return pd.DataFrame(np.asarray(rows, dtype=float), index=time_index, columns=pd.Index(fields))


def weather_at(weather: pd.DataFrame, index: pd.DatetimeIndex, *, max_gap: pd.Timedelta | None = None) -> pd.DataFrame:
    """``weather`` interpolated in time at ``index`` (UTC); NaN outside the weather's span or across long gaps.

    Linear in time between the weather's own samples, never extrapolated; ``max_gap`` (default
    three hours) leaves NaN where two samples lie further apart.
    """
    max_gap = pd.Timedelta(hours=3) if max_gap is None else max_gap
    source = weather.sort_index()
    src_t = pd.DatetimeIndex(source.index).asi8.astype(float)
    dst_t = pd.DatetimeIndex(index).tz_convert("UTC").asi8.astype(float)
    out = np.full((len(dst_t), source.shape[1]), np.nan)
    if len(src_t) == 0:
        return pd.DataFrame(out, index=index, columns=source.columns)
    right = np.clip(np.searchsorted(src_t, dst_t, side="left"), 0, len(src_t) - 1)
    left = np.clip(right - 1, 0, len(src_t) - 1)
    exact = src_t[right] == dst_t
    left = np.where(exact, right, left)
    inside = (dst_t >= src_t[0]) & (dst_t <= src_t[-1])
    gap_ok = (src_t[right] - src_t[left]) <= max_gap.value
    for k, column in enumerate(source.columns):
        values = source[column].to_numpy(dtype=float)
        span = src_t[right] - src_t[left]
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(span > 0, (dst_t - src_t[left]) / np.where(span > 0, span, 1.0), 0.0)
        value = values[left] + weight * (values[right] - values[left])
        out[:, k] = np.where(inside & gap_ok, value, np.nan)
    return pd.DataFrame(out, index=index, columns=source.columns)


def pv_output(weather: pd.DataFrame, plant: PvPlant) -> pd.Series:
    """Expected AC output in W of ``plant`` at the times of ``weather`` (needs ``ghi``; ``dni``/``dhi`` if known).

    pvlib: solar position at each time (the middle of the weather's intervals is the caller's
    choice of index), DNI and DHI from GHI by the Erbs model when the file lacks them,
    Hay-Davies transposition to the plane of the array, SAPM cell temperature (open rack) from air
    temperature and wind (20 °C and 1 m/s when absent), PVWatts DC with
    :data:`GAMMA_PDC`, :data:`INVERTER_EFFICIENCY`, clipped to the capacity. NaN where GHI is NaN.
    """
    import pvlib

    if "ghi" not in weather:
        raise InputError("PV output needs irradiance (a 'ghi' column in the weather)")
    index = pd.DatetimeIndex(weather.index)
    location = pvlib.location.Location(plant.latitude, plant.longitude, altitude=plant.altitude_m)
    solar = location.get_solarposition(index)
    ghi = weather["ghi"].astype(float)
    if "dni" in weather and "dhi" in weather and weather[["dni", "dhi"]].notna().all().all():
        dni, dhi = weather["dni"].astype(float), weather["dhi"].astype(float)
    else:
        split = pvlib.irradiance.erbs(ghi.fillna(0.0), solar["zenith"], index)
        dni, dhi = split["dni"], split["dhi"]
    dni_extra = pvlib.irradiance.get_extra_radiation(index)
    poa = pvlib.irradiance.get_total_irradiance(
        plant.tilt_deg,
        plant.azimuth_deg,
        solar["apparent_zenith"],
        solar["azimuth"],
        dni=dni,
        ghi=ghi.fillna(0.0),
        dhi=dhi,
        dni_extra=dni_extra,
        model="haydavies",
    )["poa_global"].fillna(0.0)
    temperature = weather["temperature"].fillna(20.0) if "temperature" in weather else pd.Series(20.0, index=index)
    wind = weather["wind_speed"].fillna(1.0) if "wind_speed" in weather else pd.Series(1.0, index=index)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"]
    cell = pvlib.temperature.sapm_cell(poa, temperature, wind, **params)
    pdc0 = plant.capacity_w / INVERTER_EFFICIENCY
    dc = pvlib.pvsystem.pvwatts_dc(poa, cell, pdc0, GAMMA_PDC)
    ac = np.clip(np.asarray(dc, dtype=float) * INVERTER_EFFICIENCY, 0.0, plant.capacity_w)
    ac = np.where(ghi.isna().to_numpy(), np.nan, ac)
    return pd.Series(ac, index=index, name="pv_expected")


def pvlib_sample_weather() -> tuple[pd.DataFrame, tuple[float, float]]:
    """Real measured weather shipped with pvlib (TMY3 of Greensboro, NC) at 15 minutes, and its (latitude, longitude).

    The hourly file's values are averages over the hour ending at the stamp; they are placed at
    the middle of their hour, interpolated to the quarter-hours and laid on the year 2015 (a
    typical year stitches real months of several years; the year is only a label). Columns
    ``ghi``, ``dni``, ``dhi`` (W/m²), ``temperature`` (°C), ``wind_speed`` (m/s), UTC index.
    """
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True, coerce_year=2015)
    hourly = data[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].rename(columns={"temp_air": "temperature"})
    hourly.index = pd.DatetimeIndex(hourly.index).tz_convert("UTC") - pd.Timedelta(minutes=30)
    hourly = hourly.sort_index()
    hourly = hourly[~hourly.index.duplicated()]
    start = hourly.index[0].ceil("15min")
    index = pd.date_range(start, hourly.index[-1], freq="15min", name="time")
    return weather_at(hourly.astype(float), index), (float(meta["latitude"]), float(meta["longitude"]))


def perturbed_weather(
    weather: pd.DataFrame, *, irradiance_error: float = 0.25, temperature_error: float = 1.5, seed: int | None = 0
) -> pd.DataFrame:
    """A weather *forecast*: ``weather`` with errors that persist for hours, as a numerical forecast's do.

    Irradiance (``ghi``, ``dni``, ``dhi``) is multiplied by ``1 + e`` (``e`` AR(1) per quarter-hour
    with lag-one correlation 0.97, std ``irradiance_error``, clipped to keep it in [0, 1500]);
    temperature gets an additive AR(1) error of std ``temperature_error`` °C; wind 15 %.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    out = weather.copy()
    n = len(out)

    def ar1(std: float) -> npt.NDArray[np.float64]:
        phi = 0.97
        innovations = rng.standard_normal(n) * std * math.sqrt(1.0 - phi * phi)
        series, _ = lfilter([1.0], [1.0, -phi], innovations, zi=np.array([phi * rng.standard_normal() * std]))
        return np.asarray(series, dtype=float)

    factor = 1.0 + ar1(irradiance_error)
    for column in ("ghi", "dni", "dhi"):
        if column in out:
            out[column] = np.clip(out[column].to_numpy(dtype=float) * factor, 0.0, 1500.0)
    if "temperature" in out:
        out["temperature"] = out["temperature"].to_numpy(dtype=float) + ar1(temperature_error)
    if "wind_speed" in out:
        out["wind_speed"] = np.clip(out["wind_speed"].to_numpy(dtype=float) * (1.0 + ar1(0.15)), 0.0, 100.0)
    return out


def pvlib_pv_case(
    *, capacity_w: float = 100e3, noise: float = 0.05, weather_error: float = 0.25, seed: int | None = 0
) -> tuple[pd.DataFrame, pd.DataFrame, PvPlant]:
    """A PV backtest case on pvlib's real weather: (measured PV history, forecast weather, the plant).

    The plant (``capacity_w``, 30° tilt, facing south) stands at the weather station; its
    "measured" output is :func:`pv_output` of the true weather times ``1 + e`` (AR(1) noise of
    std ``noise``, clipped at zero and at the capacity), one column ``sym_gen:pvlib-plant`` in W;
    the forecast weather is :func:`perturbed_weather` of the truth with ``weather_error``.
    """
    weather, (latitude, longitude) = pvlib_sample_weather()
    plant = PvPlant(capacity_w=capacity_w, latitude=latitude, longitude=longitude)
    index = pd.DatetimeIndex(weather.index)
    centre = weather_at(weather, index + pd.Timedelta(minutes=7.5))
    truth = pv_output(centre.set_axis(index + pd.Timedelta(minutes=7.5)), plant).to_numpy()
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    phi = 0.9
    innovations = rng.standard_normal(truth.size) * noise * math.sqrt(1.0 - phi * phi)
    error, _ = lfilter([1.0], [1.0, -phi], innovations, zi=np.array([phi * rng.standard_normal() * noise]))
    measured = np.clip(np.nan_to_num(truth) * (1.0 + error), 0.0, capacity_w)
    history = pd.DataFrame({"sym_gen:pvlib-plant": measured}, index=index)
    forecast = perturbed_weather(weather, irradiance_error=weather_error, seed=None if seed is None else seed + 1)
    return history, forecast, plant
