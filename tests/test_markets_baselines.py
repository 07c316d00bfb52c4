"""Baselines (issue 12 item 4): high X of Y, same-day adjustment, meter before, forecast, backcast bands.

References: the small cases are worked by hand in the comments (the selected days and averages can
be followed on paper); the backcast band is checked against a direct loop over calendar days written
here with plain Python dates and zoneinfo wall clocks, independent of the vectorised code.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from opendso.errors import InputError
from opendso.markets.baselines import (
    Adjustment,
    BaselineMethod,
    BaselineSpec,
    compute_baseline,
    forecast_baseline,
    high_x_of_y_baseline,
    meter_before_baseline,
)
from opendso.planning.model import QuantileForecast

TOL_W = 1e-6  # W: the hand-worked figures are exact decimal fractions
ISP = timedelta(minutes=15)
EVENT = datetime(2026, 6, 17, 14, 0, tzinfo=UTC)  # a Wednesday, event window 14:00-15:00 UTC (4 ISPs)
ADJ = datetime(2026, 6, 17, 12, 0, tzinfo=UTC)  # adjustment window: 4 ISPs ending 1 h before the start

# Hand example, kW per ISP of the event window (14:00, 14:15, 14:30, 14:45) on each day before the event.
# p1 picks by window energy: eligible weekdays, most recent first, are 16, 15, 12, 10, 9 (14 and 13 are a
# weekend, 11 is a past event day, 8 is the sixth eligible day); the lowest of the five (12: 32 kWh*4) drops.
P1 = {
    8: [100, 100, 100, 100],  # sixth eligible day: outside Y = 5
    9: [9, 11, 10, 10],  # 40
    10: [11, 13, 9, 11],  # 44
    11: [50, 50, 50, 50],  # past event day: excluded
    12: [8, 8, 8, 8],  # 32: lowest of the five -> dropped
    13: [30, 30, 30, 30],  # Saturday
    14: [30, 30, 30, 30],  # Sunday
    15: [12, 12, 12, 12],  # 48
    16: [10, 10, 10, 10],  # 40
}
# p2: constant per day; the five are 16:5, 15:1, 12:6, 10:4, 9:3 -> 15 drops, mean (5+6+4+3)/4 = 4.5 kW
P2 = {8: 9, 9: 3, 10: 4, 11: 20, 12: 6, 13: 20, 14: 20, 15: 1, 16: 5}
# adjustment window (12:00-12:45) per day, kW: p1's selected days 16,15,10,9 average (10+12+10+8)/4 = 10
P1_ADJ = {8: 10, 9: 8, 10: 10, 11: 10, 12: 8, 13: 10, 14: 10, 15: 12, 16: 10}
P2_ADJ = dict.fromkeys(P2, 4.0)  # p2's selected days average 4 kW there


def _hand_history(event_adj_p1: float = 15.0, event_adj_p2: float = 4.4) -> pd.DataFrame:
    rows: dict[datetime, tuple[float, float]] = {}
    for day in P1:
        for k in range(4):
            rows[datetime(2026, 6, day, 14, 0, tzinfo=UTC) + k * ISP] = (P1[day][k] * 1e3, P2[day] * 1e3)
            rows[datetime(2026, 6, day, 12, 0, tzinfo=UTC) + k * ISP] = (P1_ADJ[day] * 1e3, P2_ADJ[day] * 1e3)
    for k in range(4):  # the event day: adjustment window, and the (curtailed) event window itself
        rows[ADJ + k * ISP] = (event_adj_p1 * 1e3, event_adj_p2 * 1e3)
        rows[EVENT + k * ISP] = (1e3, 1e3)
    times = sorted(rows)
    return pd.DataFrame([rows[t] for t in times], index=pd.DatetimeIndex(times), columns=["p1", "p2"])


def _kw(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=float) * 1e3


def test_high_4_of_5_picks_and_averages_by_hand() -> None:
    b = high_x_of_y_baseline(_hand_history(), EVENT, 4, x=4, y=5, excluded={date(2026, 6, 11)}, backcast_days=0)
    # p1: mean of days 16, 15, 10, 9 per ISP: (10+12+11+9)/4, (10+12+13+11)/4, (10+12+9+10)/4, (10+12+11+10)/4
    np.testing.assert_allclose(b.power_w[:, 0], _kw([10.5, 11.5, 10.25, 10.75]), atol=TOL_W)
    np.testing.assert_allclose(b.power_w[:, 1], _kw([4.5] * 4), atol=TOL_W)
    assert b.selected_days[0] == tuple(date(2026, 6, d) for d in (9, 10, 15, 16))
    assert b.selected_days[1] == tuple(date(2026, 6, d) for d in (9, 10, 12, 16))
    assert b.participants == ("p1", "p2")
    assert b.backcast_days == 0
    np.testing.assert_array_equal(b.lower_w, b.power_w)
    assert b.method == "high_x_of_y"
    assert b.to_json()["participants"][0]["selected_days"][0] == "2026-06-09"
    one = b.select("p2")
    assert one.participants == ("p2",)
    np.testing.assert_array_equal(one.power_w[:, 0], b.power_w[:, 1])
    assert one.selected_days == (b.selected_days[1],)
    with pytest.raises(InputError, match=r"no participant 'p3'"):
        b.select("p3")


def test_excluded_day_and_weekend_would_change_the_pick() -> None:
    # without the exclusion, Thursday 11 (50 kW) is eligible and the five become 16, 15, 12, 11, 10: drop 12
    b = high_x_of_y_baseline(_hand_history(), EVENT, 4, x=4, y=5, backcast_days=0)
    np.testing.assert_allclose(
        b.power_w[:, 0], _kw([(10 + 12 + 50 + 11) / 4, (10 + 12 + 50 + 13) / 4, (10 + 12 + 50 + 9) / 4, 20.75])
    )
    # a holiday on Tuesday 16 makes it a weekend-type day: the five become 15, 12, 10, 9, 8: drop 12
    b = high_x_of_y_baseline(
        _hand_history(), EVENT, 4, x=4, y=5, excluded={date(2026, 6, 11)}, holidays={date(2026, 6, 16)}, backcast_days=0
    )
    np.testing.assert_allclose(b.power_w[:, 0], _kw([(12 + 11 + 9 + 100) / 4, 34.0, 32.75, 33.25]), atol=TOL_W)


def test_same_day_adjustment_multiplicative_and_additive_with_cap() -> None:
    hist = _hand_history(event_adj_p1=15.0, event_adj_p2=4.4)
    kw = {"x": 4, "y": 5, "excluded": {date(2026, 6, 11)}, "backcast_days": 0}
    mult = high_x_of_y_baseline(hist, EVENT, 4, adjustment=Adjustment.MULTIPLICATIVE, adjustment_cap=0.2, **kw)
    # p1: measured 15 kW against 10 kW in the window: ratio 1.5, capped at 1.2; p2: 4.4 / 4 = 1.1 (under the cap)
    np.testing.assert_allclose(mult.power_w[:, 0], _kw([12.6, 13.8, 12.3, 12.9]), atol=TOL_W)
    np.testing.assert_allclose(mult.power_w[:, 1], _kw([4.95] * 4), atol=TOL_W)
    add = high_x_of_y_baseline(hist, EVENT, 4, adjustment=Adjustment.ADDITIVE, adjustment_cap=0.2, **kw)
    # p1: +5 kW capped at 0.2 * 10 kW = +2 kW; p2: +0.4 kW
    np.testing.assert_allclose(add.power_w[:, 0], _kw([12.5, 13.5, 12.25, 12.75]), atol=TOL_W)
    np.testing.assert_allclose(add.power_w[:, 1], _kw([4.9] * 4), atol=TOL_W)
    free = high_x_of_y_baseline(hist, EVENT, 4, adjustment=Adjustment.ADDITIVE, adjustment_cap=None, **kw)
    np.testing.assert_allclose(free.power_w[:, 0], _kw([15.5, 16.5, 15.25, 15.75]), atol=TOL_W)
    assert mult.parameters["adjustment"] == "multiplicative"
    assert json.loads(json.dumps(mult.to_json()))["parameters"]["adjustment_gap"] == 3600.0
    assert mult.parameters["adjustment_cap"] == 0.2


def test_backcast_band_by_hand_on_one_day() -> None:
    # only Tuesday 16 can be backcast (it has five eligible days before it: 15, 12, 10, 9, 8). As an event day
    # its p1 baseline drops 12 (32) and averages 15, 10, 9, 8: 33, 34, 32.75, 33.25 kW; measured 10 kW each:
    # errors -23, -24, -22.75, -23.25 kW, pooled (one day < pooled_below). Linear quantiles of the sorted four:
    # 10 %: -24 + 0.3 * 0.75 = -23.775; 90 %: -23 + 0.7 * 0.25 = -22.825.
    b = high_x_of_y_baseline(
        _hand_history(), EVENT, 4, excluded={date(2026, 6, 11)}, backcast_days=5, min_backcast_days=1
    )
    assert b.backcast_days == 1
    assert b.parameters["pooled_band"] is True
    np.testing.assert_allclose(b.lower_w[:, 0], b.power_w[:, 0] - 23_775.0, atol=TOL_W)
    np.testing.assert_allclose(b.upper_w[:, 0], b.power_w[:, 0] - 22_825.0, atol=TOL_W)


# --- the backcast band against a direct loop -----------------------------------------------------------------

ZONE = "Europe/Amsterdam"
LOCAL_START = time(15, 0)  # the event window at 15:00 local, across the DST change of 2026-03-29


def _random_history(days: int, seed: int) -> tuple[pd.DataFrame, date]:
    rng = np.random.default_rng(seed)
    event_day = date(2026, 4, 15)
    rows: dict[datetime, np.ndarray] = {}
    zone = ZoneInfo(ZONE)
    for back in range(days, -1, -1):
        day = event_day - timedelta(days=back)
        base = rng.uniform(5e3, 20e3, size=2)
        for start, n in ((time(13, 0), 4), (LOCAL_START, 4)):
            t0 = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
            for k in range(n):
                rows[t0 + k * ISP] = base + rng.normal(0.0, 2e3, size=2)
    times = sorted(rows)
    frame = pd.DataFrame(np.array([rows[t] for t in times]), index=pd.DatetimeIndex(times), columns=["a", "b"])
    return frame, event_day


def _direct_high_x_of_y(
    hist: pd.DataFrame,
    day: date,
    *,
    x: int,
    y: int,
    lookback: int,
    excluded: set[date],
    holidays: set[date],
    adjust: bool,
    cap: float,
) -> np.ndarray | None:
    """The adjusted high-x-of-y baseline on ``day``, written as a plain loop; None when too few days."""
    zone = ZoneInfo(ZONE)

    def business(d: date) -> bool:
        return d.weekday() < 5 and d not in holidays

    def window(d: date, start: time) -> np.ndarray | None:
        t0 = datetime.combine(d, start, tzinfo=zone).astimezone(UTC)
        ts = [pd.Timestamp(t0 + k * ISP) for k in range(4)]
        if not all(t in hist.index for t in ts):
            return None
        return hist.loc[ts].to_numpy()

    cands: list[date] = []
    back = 1
    while len(cands) < y and back <= lookback:
        d = day - timedelta(days=back)
        back += 1
        if business(d) != business(day) or d in excluded:
            continue
        if window(d, LOCAL_START) is None or (adjust and window(d, time(13, 0)) is None):
            continue
        cands.append(d)
    if len(cands) < y:
        return None
    out = np.empty((4, hist.shape[1]))
    for j in range(hist.shape[1]):
        energies = [(window(d, LOCAL_START)[:, j].sum(), -i) for i, d in enumerate(cands)]  # type: ignore[index]
        order = sorted(range(y), key=lambda i: energies[i], reverse=True)[:x]
        chosen = [cands[i] for i in order]
        out[:, j] = np.mean([window(d, LOCAL_START)[:, j] for d in chosen], axis=0)  # type: ignore[index]
        if adjust:
            base = np.mean([window(d, time(13, 0))[:, j].mean() for d in chosen])  # type: ignore[index]
            meas = window(day, time(13, 0))[:, j].mean()  # type: ignore[index]
            out[:, j] *= min(max(meas / base, 1 - cap), 1 + cap)
    return out


@pytest.mark.parametrize("pooled_below", [5, 50])
def test_backcast_band_matches_a_direct_loop(pooled_below: int) -> None:
    hist, event_day = _random_history(70, seed=7)
    excluded = {date(2026, 4, 8), date(2026, 3, 25), date(2026, 3, 20)}
    holidays = {date(2026, 4, 6), date(2026, 4, 3)}  # Easter Monday, Good Friday
    start = datetime.combine(event_day, LOCAL_START, tzinfo=ZoneInfo(ZONE))
    kw = {"x": 3, "y": 5, "lookback_days": 20, "excluded": excluded, "holidays": holidays}
    b = high_x_of_y_baseline(
        hist,
        start,
        4,
        adjustment=Adjustment.MULTIPLICATIVE,
        adjustment_gap=timedelta(hours=1),
        adjustment_cap=0.2,
        time_zone=ZONE,
        levels=(0.1, 0.9),
        backcast_days=12,
        pooled_below=pooled_below,
        **kw,  # type: ignore[arg-type]
    )
    ref_kw = {"x": 3, "y": 5, "lookback": 20, "excluded": excluded, "holidays": holidays, "adjust": True, "cap": 0.2}
    expected = _direct_high_x_of_y(hist, event_day, **ref_kw)  # type: ignore[arg-type]
    assert expected is not None
    np.testing.assert_allclose(b.power_w, expected, rtol=1e-12)
    # the backcast: the 12 most recent eligible (same type, not excluded) days that themselves have y days before
    errors = []
    back = 1
    while len(errors) < 12:
        d = event_day - timedelta(days=back)
        back += 1
        if d.weekday() >= 5 or d in holidays or d in excluded:
            continue
        ref = _direct_high_x_of_y(hist, d, **ref_kw)  # type: ignore[arg-type]
        assert ref is not None, d
        t0 = datetime.combine(d, LOCAL_START, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)
        measured = hist.loc[[pd.Timestamp(t0 + k * ISP) for k in range(4)]].to_numpy()
        errors.append(measured - ref)
    err = np.array(errors)
    assert b.backcast_days == 12
    if pooled_below <= 12:
        q = np.quantile(err, [0.1, 0.9], axis=0)
        np.testing.assert_allclose(b.lower_w, expected + q[0], rtol=1e-12)
        np.testing.assert_allclose(b.upper_w, expected + q[1], rtol=1e-12)
    else:
        q = np.quantile(err.reshape(-1, 2), [0.1, 0.9], axis=0)
        np.testing.assert_allclose(b.lower_w, expected + q[0][None, :], rtol=1e-12)
        np.testing.assert_allclose(b.upper_w, expected + q[1][None, :], rtol=1e-12)
    assert np.all(b.lower_w <= b.power_w + 1e-9)


def test_meter_before_holds_the_last_reading_flat_and_backcasts() -> None:
    hist, event_day = _random_history(30, seed=3)
    # the before window: the ISP 13:45 local (the last of the 13:00 block) with before_gap 1 h to the 15:00 start
    start = datetime.combine(event_day, LOCAL_START, tzinfo=ZoneInfo(ZONE))
    b = meter_before_baseline(hist, start, 4, before_intervals=2, before_gap=timedelta(hours=1), time_zone=ZONE)
    t_before = [
        datetime.combine(event_day, time(13, 30), tzinfo=ZoneInfo(ZONE)).astimezone(UTC) + k * ISP for k in (0, 1)
    ]
    level = hist.loc[[pd.Timestamp(t) for t in t_before]].to_numpy().mean(axis=0)
    np.testing.assert_allclose(b.power_w, np.tile(level, (4, 1)), rtol=1e-12)
    # direct loop over the backcast days: same day type, 20 most recent (no exclusions here)
    errors = []
    back = 1
    while len(errors) < 20:
        d = event_day - timedelta(days=back)
        back += 1
        if d.weekday() >= 5:
            continue
        z = ZoneInfo(ZONE)
        before = [datetime.combine(d, time(13, 30), tzinfo=z).astimezone(UTC) + k * ISP for k in (0, 1)]
        win = [datetime.combine(d, LOCAL_START, tzinfo=z).astimezone(UTC) + k * ISP for k in range(4)]
        ref = hist.loc[[pd.Timestamp(t) for t in before]].to_numpy().mean(axis=0)
        errors.append(hist.loc[[pd.Timestamp(t) for t in win]].to_numpy() - ref)
    q = np.quantile(np.array(errors), [0.1, 0.9], axis=0)
    assert b.backcast_days == 20
    np.testing.assert_allclose(b.lower_w, level + q[0], rtol=1e-12)
    np.testing.assert_allclose(b.upper_w, level + q[1], rtol=1e-12)


def _forecast() -> QuantileForecast:
    times = np.array([np.datetime64("2026-06-17T13:45") + np.timedelta64(15 * k, "m") for k in range(6)])
    levels = np.array([0.1, 0.5, 0.9])
    load = np.array([[8.0] * 6, [10.0] * 6, [13.0] * 6])
    pv = np.array([[1.0] * 6, [2.0] * 6, [4.0] * 6])
    values = np.stack([load, pv], axis=-1) * 1e3  # (Q, T, N)
    return QuantileForecast(
        targets=("sym_load:L1", "sym_gen:PV1"),
        time=times.astype("datetime64[s]"),
        quantiles=levels,
        values=values,
        issued=datetime(2026, 6, 16, 12, tzinfo=UTC),
    )


def test_forecast_baseline_median_and_band_in_consumption_sign() -> None:
    b = forecast_baseline(_forecast(), EVENT, 4)
    np.testing.assert_allclose(b.power_w[:, 0], 10e3)
    np.testing.assert_allclose(b.lower_w[:, 0], 8e3)
    np.testing.assert_allclose(b.upper_w[:, 0], 13e3)
    # production of 2 kW (1..4 kW) is a consumption of -2 kW (-4..-1 kW)
    np.testing.assert_allclose(b.power_w[:, 1], -2e3)
    np.testing.assert_allclose(b.lower_w[:, 1], -4e3)
    np.testing.assert_allclose(b.upper_w[:, 1], -1e3)
    with pytest.raises(InputError, match=r"no interval starting 2026-06-17T15:15"):
        forecast_baseline(_forecast(), EVENT, 6)


def test_compute_baseline_dispatches_on_the_spec() -> None:
    hist = _hand_history()
    spec = BaselineSpec(BaselineMethod.HIGH_X_OF_Y, x=4, y=5, adjustment=Adjustment.ADDITIVE, backcast_days=0)
    b = compute_baseline(spec, hist, EVENT, 4, excluded={date(2026, 6, 11)}, participants=["p2"])
    assert b.participants == ("p2",)
    np.testing.assert_allclose(b.power_w[:, 0], _kw([4.9] * 4), atol=TOL_W)
    spec_mb = BaselineSpec(BaselineMethod.METER_BEFORE, before_gap=timedelta(hours=1), backcast_days=0)
    mb = compute_baseline(spec_mb, hist, EVENT, 4)
    # the ISP 12:45-13:00 measured on the event day (15 kW, 4.4 kW), held flat
    np.testing.assert_allclose(mb.power_w, np.tile(_kw([15.0, 4.4]), (4, 1)), atol=TOL_W)
    fc = compute_baseline(BaselineSpec(BaselineMethod.FORECAST), None, EVENT, 4, forecast=_forecast())
    np.testing.assert_allclose(fc.power_w[:, 0], 10e3)
    assert BaselineSpec().to_json()["adjustment_gap"] == 3600.0


# --- bad input: one InputError each, naming what and where ---------------------------------------------------


def test_too_few_eligible_days() -> None:
    with pytest.raises(InputError, match=r"too few eligible days: 4 weekday days .* need 5"):
        high_x_of_y_baseline(
            _hand_history(), EVENT, 4, excluded={date(2026, 6, 11), date(2026, 6, 9)}, lookback_days=8, backcast_days=0
        )
    with pytest.raises(InputError, match=r"too few eligible days to estimate the uncertainty: 1 days"):
        high_x_of_y_baseline(_hand_history(), EVENT, 4, excluded={date(2026, 6, 11)})


def test_naive_times() -> None:
    with pytest.raises(InputError, match=r"event start.*naive"):
        high_x_of_y_baseline(_hand_history(), EVENT.replace(tzinfo=None), 4, backcast_days=0)
    naive = _hand_history()
    naive.index = naive.index.tz_localize(None)
    with pytest.raises(InputError, match=r"history: the index holds naive times"):
        high_x_of_y_baseline(naive, EVENT, 4, backcast_days=0)


def test_misaligned_intervals() -> None:
    with pytest.raises(InputError, match=r"event start 2026-06-17T14:05:00\+00:00 is not on the 15-minute ISP grid"):
        high_x_of_y_baseline(_hand_history(), EVENT + timedelta(minutes=5), 4, backcast_days=0)
    shifted = _hand_history()
    shifted.index = shifted.index + pd.Timedelta(minutes=7)
    with pytest.raises(InputError, match=r"history: time .* is not on the 15-minute ISP grid"):
        high_x_of_y_baseline(shifted, EVENT, 4, backcast_days=0)
    with pytest.raises(InputError, match=r"adjustment_gap must be a whole number of ISPs"):
        BaselineSpec(adjustment_gap=timedelta(minutes=10))


def test_nan_reading_is_named() -> None:
    hist = _hand_history()
    hist.loc[pd.Timestamp("2026-06-10T14:30Z"), "p2"] = np.nan
    with pytest.raises(InputError, match=r"participant 'p2' at 2026-06-10T14:30:00\+00:00 .* is NaN"):
        high_x_of_y_baseline(hist, EVENT, 4, excluded={date(2026, 6, 11)}, backcast_days=0)
    hist = _hand_history()
    hist.loc[pd.Timestamp("2026-06-17T12:45Z"), "p1"] = np.nan
    with pytest.raises(InputError, match=r"participant 'p1' at 2026-06-17T12:45:00\+00:00 .*before the event.* is NaN"):
        meter_before_baseline(hist, EVENT, 4, before_gap=timedelta(hours=1), backcast_days=0)


def test_bad_spec() -> None:
    with pytest.raises(InputError, match=r"x \(6\) must not exceed y \(5\)"):
        BaselineSpec(x=6, y=5)
    with pytest.raises(InputError, match=r"levels"):
        BaselineSpec(levels=(0.9, 0.1))
    with pytest.raises(InputError, match=r"needs a forecast"):
        compute_baseline(BaselineSpec(BaselineMethod.FORECAST), None, EVENT, 4)
    with pytest.raises(InputError, match=r"time zone 'Mars/Olympus'"):
        BaselineSpec(time_zone="Mars/Olympus")


def _flat_history(selected_kw: float, event_adj_kw: float) -> pd.DataFrame:
    """Ten weekdays flat at ``selected_kw`` (14:00-15:00 and 12:00-13:00), and the event day's 12:00-13:00."""
    rows: dict[datetime, float] = {}
    day = EVENT.date()
    back = 0
    while len({t.date() for t in rows}) < 10:
        back += 1
        d = day - timedelta(days=back)
        if d.weekday() >= 5:
            continue
        for start in (time(14), time(12)):
            for k in range(4):
                rows[datetime.combine(d, start, tzinfo=UTC) + k * ISP] = selected_kw * 1e3
    for k in range(4):
        rows[ADJ + k * ISP] = event_adj_kw * 1e3
    times = sorted(rows)
    return pd.DataFrame({"asset": [rows[t] for t in times]}, index=pd.DatetimeIndex(times))


@pytest.mark.parametrize(("measured_kw", "adjusted_kw"), [(600.0, 600.0), (400.0, 500.0)])
def test_published_upward_only_adjustment_example(measured_kw: float, adjusted_kw: float) -> None:
    # ENA Flexibility Services Standard Agreement, baseline adjustment clause: baseline 500 kW; the asset's load in
    # the hour starting 2 h before the event is 600 kW -> adjustment +100 kW; 400 kW -> 0 kW (never negative)
    b = high_x_of_y_baseline(
        _flat_history(500.0, measured_kw),
        EVENT,
        4,
        x=10,
        y=10,
        adjustment=Adjustment.ADDITIVE_UPWARD,
        adjustment_intervals=4,
        adjustment_gap=timedelta(hours=1),
        adjustment_cap=None,
        backcast_days=0,
    )
    np.testing.assert_allclose(b.power_w[:, 0], adjusted_kw * 1e3, atol=TOL_W)
