"""Weather files (every error named by row and field), interpolation, pvlib's PV output, aggregates."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opendso.errors import InputError, WeatherFileError
from opendso.grid.model import Grid
from opendso.planning.history import aggregate_history, profile_history
from opendso.planning.weather import (
    PvPlant,
    perturbed_weather,
    pv_output,
    pvlib_sample_weather,
    read_weather,
    weather_at,
)

GOOD = """time,ghi,temperature,wind_speed
2016-03-01T00:00:00Z,0,4.5,3.0
2016-03-01T01:00:00Z,,4.0,2.5
2016-03-01T03:00:00+01:00,100,5.0,2.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "weather.csv"
    path.write_text(text)
    return path


def test_weather_file_is_read_as_utc_with_missing_values(tmp_path: Path) -> None:
    weather = read_weather(write(tmp_path, GOOD))
    assert list(weather.columns) == ["ghi", "temperature", "wind_speed"]
    assert str(weather.index.tz) == "UTC"
    assert list(weather.index) == list(pd.date_range("2016-03-01", periods=3, freq="h", tz="UTC"))  # +01:00 read
    assert math.isnan(weather["ghi"].iloc[1])


@pytest.mark.parametrize(
    ("text", "row", "field"),
    [
        ("time,ghi,temprature\n2016-03-01T00:00:00Z,1,2\n", 0, "temprature"),
        ("ghi\n1\n", 0, "time"),
        ("time,ghi\n2016-03-01T00:00:00Z,1\n2016-03-01T00:15:00Z,abc\n", 2, "ghi"),
        ("time,ghi\n2016-03-01T00:00:00Z,2000\n", 1, "ghi"),
        ("time,temperature\n2016-03-01T00:00:00Z,nan\n", 1, "temperature"),
        ("time,ghi\n2016-03-01T00:00:00,1\n", 1, "time"),
        ("time,ghi\n2016-03-01T01:00:00Z,1\n2016-03-01T00:00:00Z,1\n", 2, "time"),
        ("time,radiation,ghi\n2016-03-01T00:00:00Z,1,1\n", 0, "ghi"),
        ("time,ghi\n2016-03-01T00:00:00Z,1,5\n", 1, None),
    ],
)
def test_weather_file_errors_name_row_and_field(tmp_path: Path, text: str, row: int, field: str | None) -> None:
    with pytest.raises(WeatherFileError) as caught:
        read_weather(write(tmp_path, text))
    assert caught.value.row == row
    assert caught.value.field == field
    assert "weather.csv" in str(caught.value)
    assert f"row {row}" in str(caught.value)


def test_weather_file_without_rows_or_file(tmp_path: Path) -> None:
    with pytest.raises(WeatherFileError, match="no data rows"):
        read_weather(write(tmp_path, "time,ghi\n"))
    with pytest.raises(WeatherFileError, match="empty"):
        read_weather(write(tmp_path, ""))
    with pytest.raises(WeatherFileError, match="cannot be read"):
        read_weather(tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00time")
    with pytest.raises(WeatherFileError):
        read_weather(tmp_path / "binary.csv")


def test_weather_is_interpolated_not_extrapolated() -> None:
    hourly = pd.DataFrame(
        {"ghi": [0.0, 100.0, 300.0]}, index=pd.date_range("2016-03-01", periods=3, freq="h", tz="UTC")
    )
    index = pd.date_range("2016-02-29 23:45", "2016-03-01 02:15", freq="15min", tz="UTC")
    at = weather_at(hourly, index)["ghi"]
    assert math.isnan(at.iloc[0])
    assert math.isnan(at.iloc[-1])
    assert at[pd.Timestamp("2016-03-01 00:30", tz="UTC")] == pytest.approx(50.0)
    assert at[pd.Timestamp("2016-03-01 01:45", tz="UTC")] == pytest.approx(250.0)
    gappy = hourly.drop(hourly.index[1])
    inside_gap = weather_at(gappy, index, max_gap=pd.Timedelta(hours=1)).iloc[2:-2]  # 00:15 .. 01:45
    assert inside_gap.isna().all().all()


def test_pv_output_of_a_flat_plant_matches_the_pvwatts_formula() -> None:
    """Tilt 0: the plane of the array is the horizontal, so AC = GHI/1000 * P_dc0 * (1 + gamma (T_cell - 25)) * eta.

    The cell temperature follows the SAPM model written out here (open rack, glass/glass: a = -3.47,
    b = -0.0594, dT = 3 K), independently of pvlib's code path.
    """
    index = pd.date_range("2016-06-21 08:00", periods=4, freq="3h", tz="UTC")
    weather = pd.DataFrame(
        {
            "ghi": [200.0, 800.0, 600.0, 50.0],
            "temperature": [15.0, 25.0, 30.0, 10.0],
            "wind_speed": [1.0, 3.0, 0.5, 2.0],
        },
        index=index,
    )
    weather["dni"] = 0.0
    weather["dhi"] = weather["ghi"]  # all diffuse: no beam, so only the sky and horizon terms (= GHI on a flat plane)
    plant = PvPlant(capacity_w=10_000.0, latitude=52.0, longitude=5.0, tilt_deg=0.0)
    out = pv_output(weather, plant).to_numpy()
    ghi = weather["ghi"].to_numpy()
    cell = (
        weather["temperature"].to_numpy()
        + ghi * np.exp(-3.47 - 0.0594 * weather["wind_speed"].to_numpy())
        + ghi / 1000 * 3
    )
    expected = np.minimum(ghi / 1000 * (10_000 / 0.96) * (1 - 0.004 * (cell - 25)) * 0.96, 10_000)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_pvlib_weather_is_real_and_a_forecast_differs_from_it() -> None:
    weather, (latitude, longitude) = pvlib_sample_weather()
    assert (latitude, longitude) == (36.1, -79.95)
    assert len(weather) > 360 * 96
    assert (pd.Series(weather.index).diff().dropna() == pd.Timedelta(minutes=15)).all()
    plant = PvPlant(capacity_w=1000.0, latitude=latitude, longitude=longitude)
    annual_kwh_per_kwp = float(pv_output(weather, plant).sum()) * 0.25 / 1000
    assert 1300 < annual_kwh_per_kwp < 1900  # North Carolina, 30 deg south: about 1,500-1,700 kWh/kWp
    forecast = perturbed_weather(weather, seed=1)
    relative = (forecast["ghi"] - weather["ghi"]).abs().sum() / weather["ghi"].sum()
    assert 0.1 < relative < 0.4
    with pytest.raises(InputError, match="tilt"):
        PvPlant(capacity_w=1.0, latitude=0.0, longitude=0.0, tilt_deg=120.0)


def test_aggregates_sum_their_elements(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("simbench:1-LV-rural1--0-sw")
    elements = profile_history(grid, noise=0.0, stop=96)
    agg = aggregate_history(grid, elements)
    loads = [c for c in elements.columns if c.startswith("sym_load:")]
    gens = [c for c in elements.columns if c.startswith("sym_gen:")]
    net = elements[loads].sum(axis=1) - elements[gens].sum(axis=1)
    substations = [c for c in agg.columns if c.startswith("substation:")]
    feeders = [c for c in agg.columns if c.startswith("feeder:")]
    nodes = [c for c in agg.columns if c.startswith("node:")]
    assert len(substations) == 1
    assert len(feeders) >= 2
    assert nodes
    np.testing.assert_allclose(agg[substations[0]], net, rtol=1e-12)
    np.testing.assert_allclose(agg[feeders].sum(axis=1), net, rtol=1e-12)
    np.testing.assert_allclose(agg[nodes].sum(axis=1), net, rtol=1e-12)
    with pytest.raises(InputError, match="level"):
        aggregate_history(grid, elements, levels=("zone",))
