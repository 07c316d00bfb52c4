"""Aggregators' portfolios and operating envelopes (issue 12 item 2), on SimBench 1-LV-rural1.

Independent references:

- the portfolios against a tally made here from the assets the test registers;
- the envelopes against pandapower (``runpp`` on the grid exported by
  :func:`~opendso.grid.io.pandapower_writer.to_pandapower`, loads and generators set here from the
  grid's profiles, one extra load per connection point at its bound): every connection point at its
  export bound (and, separately, at its import bound) at the same time leaves every line and the
  transformer at or under 100 % and every bus within 0.9 .. 1.1 p.u., within ``PF_TOL`` (the two
  power flows agree to about 1e-6 here; the bisection stops 1e-4 below the limit); and the same with
  the rule's ``alpha`` raised by 2 % violates, on the element the allocation names as binding;
  the transformer, a cable (large loads at the end of the longest cable) and a node voltage (a
  narrow band) each bind in one of the cases; with a quantile forecast, the loads at the chosen
  conservative quantile; with floors, the floor held and an infeasible floor reported; random mixed
  imports and exports within the bounds stay within the limits (the documented radial argument);
- the rules: proportional gives every point the same share of its capacity, equal the same watts
  capped by the capacity, checked on the bounds themselves;
- the dispatch check against measurements placed here on, just under and just over the bounds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pytest

from opendso.calc.timeseries import ViolationLimits
from opendso.der import AccessPrinciple, Agreement, AgreementKind, AssetKind, DerAsset, DerRegistry
from opendso.errors import InputError
from opendso.grid.io.pandapower_writer import to_pandapower
from opendso.grid.model import Grid
from opendso.markets.envelopes import (
    AllocationRule,
    ConnectionPoint,
    Direction,
    EnvelopeAllocation,
    PointMeasurement,
    allocate_envelopes,
    check_dispatch,
    connection_points,
    portfolios,
)
from opendso.planning.history import profile_times
from opendso.planning.model import QuantileForecast, target_name
from opendso.store import migrate
from opendso.store.der import DerStore
from opendso.store.engine import create_engine

GRID = "simbench:1-LV-rural1--0-sw"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
#: Intervals judged: a winter evening peak, a spring morning, a summer noon (profile times, UTC).
TIMES = (
    datetime(2016, 1, 14, 17, 45, tzinfo=UTC),
    datetime(2016, 3, 10, 7, 30, tzinfo=UTC),
    datetime(2016, 6, 21, 12, 0, tzinfo=UTC),
)
NOON = TIMES[2:3]
LIMITS = ViolationLimits()
#: Beyond a limit in pandapower by more than this (fraction of rating or p.u.) counts as a violation.
PF_TOL = 1e-5
#: The bisection's relative tolerance (allocate_envelopes' default).
TOLERANCE = 1e-4
#: The rule's alpha raised by this factor must violate a limit.
RAISE = 1.02

#: (asset id, aggregator, node, kind, export kW, import kW, storage kWh)
ASSETS: tuple[tuple[str, str, str, AssetKind, float, float, float], ...] = (
    ("F-PV1", "Flexa", "LV1.101 Bus 5", AssetKind.PV, 80.0, 0.0, 0.0),
    ("F-BAT1", "Flexa", "LV1.101 Bus 5", AssetKind.BATTERY, 40.0, 40.0, 80.0),
    ("F-EV1", "Flexa", "LV1.101 Bus 9", AssetKind.EV_HUB, 0.0, 30.0, 0.0),
    ("F-PV2", "Flexa", "LV1.101 Bus 14", AssetKind.PV, 30.0, 0.0, 0.0),
    ("V-PV1", "Voltwise", "LV1.101 Bus 13", AssetKind.PV, 120.0, 0.0, 0.0),
    ("V-HP1", "Voltwise", "LV1.101 Bus 13", AssetKind.HEAT_PUMPS, 0.0, 50.0, 0.0),
    ("V-BAT1", "Voltwise", "LV1.101 Bus 3", AssetKind.BATTERY, 20.0, 20.0, 40.0),
    ("V-BAT2", "Voltwise", "LV1.101 Bus 5", AssetKind.BATTERY, 25.0, 25.0, 50.0),
)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(GRID)


def _asset(spec: tuple[str, str, str, AssetKind, float, float, float], *, flexible: bool = False) -> DerAsset:
    asset_id, aggregator, node, kind, export_kw, import_kw, storage = spec
    agreement = (
        Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.PRO_RATA, 5.0, export_kw / 4) if flexible else Agreement()
    )
    return DerAsset(
        asset_id,
        f"DER {asset_id}",
        kind,
        node,
        f"Owner of {asset_id}",
        aggregator=aggregator,
        export_kw=export_kw,
        import_kw=import_kw,
        storage_kwh=storage,
        agreement=agreement,
    )


@pytest.fixture
def registry(tmp_path: Path, grid: Grid) -> Iterator[DerRegistry]:
    engine = create_engine(f"sqlite:///{tmp_path / 'opendso.db'}")
    migrate.upgrade(engine)
    reg = DerRegistry(DerStore(engine), grid, clock=lambda: T0)
    for spec in ASSETS:
        reg.add_asset(_asset(spec, flexible=spec[3] is AssetKind.PV), actor="t")
    # in no portfolio: an asset without aggregator, and one whose connection request is still queued
    reg.add_asset(DerAsset("N-PV1", "Solo", AssetKind.PV, "LV1.101 Bus 7", "A household", export_kw=5.0), actor="t")
    reg.add_asset(_asset(("F-PV9", "Flexa", "LV1.101 Bus 7", AssetKind.PV, 50.0, 0.0, 0.0)), actor="t")
    reg.submit("R9", "F-PV9", received_at=T0, actor="t")
    yield reg
    engine.dispose()


# -- portfolios ------------------------------------------------------------------------------------------------
def test_portfolios_per_point_and_feeder_match_a_tally_of_the_registered_assets(registry: DerRegistry) -> None:
    books = portfolios(registry)
    assert sorted(books) == ["Flexa", "Voltwise"]
    for aggregator, book in books.items():
        mine = [a for a in ASSETS if a[1] == aggregator]
        assert book.count == len(mine)
        tally: dict[str, list[Any]] = {}
        for a in mine:
            tally.setdefault(a[2], []).append(a)
        assert [p.name for p in book.points] == sorted(tally)
        for p in book.points:
            at = tally[str(p.name)]
            assert p.assets == tuple(sorted(a[0] for a in at))
            assert p.count == len(at)
            assert p.export_kw == pytest.approx(sum(a[4] for a in at))
            assert p.import_kw == pytest.approx(sum(a[5] for a in at))
            assert p.storage_kwh == pytest.approx(sum(a[6] for a in at))
        by_feeder: dict[str | None, list[Any]] = {}
        for a in mine:
            by_feeder.setdefault(registry.feeder_of(a[2]), []).append(a)
        assert {f.name: (f.count, f.export_kw, f.import_kw) for f in book.feeders} == {
            f: (len(v), pytest.approx(sum(a[4] for a in v)), pytest.approx(sum(a[5] for a in v)))
            for f, v in by_feeder.items()
        }
        js = book.to_json()
        assert js["aggregator"] == aggregator
        assert js["count"] == len(mine)
        assert {p["name"]: p["feeder"] for p in js["points"]} == {n: registry.feeder_of(n) for n in tally}
    points = connection_points(registry)
    assert [(p.aggregator, p.node) for p in points] == [
        (a, n) for a in ("Flexa", "Voltwise") for n in sorted({x[2] for x in ASSETS if x[1] == a})
    ]
    bus5 = next(p for p in points if p.key == ("Flexa", "LV1.101 Bus 5"))
    assert (bus5.export_w, bus5.import_w, bus5.export_floor_w) == (120e3, 40e3, 0.0)
    firm = {p.key: p for p in connection_points(registry, firm_floors=True)}
    # flexible PV: its export limit (a quarter of 80 kW); the firm battery: all of its 40 kW
    assert firm[("Flexa", "LV1.101 Bus 5")].export_floor_w == pytest.approx(20e3 + 40e3)


# -- the independent power flow ---------------------------------------------------------------------------------
class Reference:
    """pandapower on the exported grid, loads and generators at the profile values of one interval."""

    def __init__(self, grid: Grid, points: list[ConnectionPoint], limits: ViolationLimits = LIMITS) -> None:
        self.grid = grid
        self.limits = limits
        self.net = to_pandapower(grid)
        node_ids = dict(zip(grid.names_of("node").tolist(), grid.component("node")["id"].tolist(), strict=True))
        self.probes = [
            pp.create_load(self.net, node_ids[p.node], p_mw=0.0, q_mvar=0.0, index=grid.max_id + 1 + k)
            for k, p in enumerate(points)
        ]
        self.steps = {t: int(k) for k, t in enumerate(profile_times(grid).to_pydatetime())}
        self.base_load = self.net.load.copy()

    def set_interval(self, when: datetime, *, load_factor: float = 1.0) -> None:
        profiles = self.grid.profiles
        assert profiles is not None
        update = profiles.update_data(self.steps[when], self.steps[when] + 1)
        table = {"sym_load": self.net.load, "sym_gen": self.net.sgen}
        for component, cols in update.items():
            ids = cols["id"].reshape(-1) if "id" in cols else self.grid.component(component)["id"]
            for attr, column in (("p_specified", "p_mw"), ("q_specified", "q_mvar")):
                if attr in cols:
                    factor = load_factor if component == "sym_load" else 1.0
                    table[component].loc[ids, column] = cols[attr].reshape(-1) * factor / 1e6

    def worst(self, direction: Direction, bounds_w: np.ndarray) -> tuple[float, str]:
        """Run pandapower with every point at its bound; the worst excess over a limit and its element."""
        sign = 1.0 if direction is Direction.IMPORT else -1.0
        self.net.load.loc[self.probes, "p_mw"] = sign * bounds_w / 1e6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(self.net, trafo_model="pi", trafo_loading="power", tolerance_mva=1e-10, max_iteration=50)
        names = {"line": self.net.line["name"], "transformer": self.net.trafo["name"], "node": self.net.bus["name"]}
        lim = self.limits
        vm = self.net.res_bus["vm_pu"]
        excess = [
            ("line", self.net.res_line["loading_percent"] / 100 - lim.loading_max),
            ("transformer", self.net.res_trafo["loading_percent"] / 100 - lim.loading_max),
            ("node", np.maximum(vm - lim.u_max_pu, lim.u_min_pu - vm).dropna()),
        ]
        return max(((float(s.max()), f"{kind}:{names[kind][s.idxmax()]}") for kind, s in excess), key=lambda x: x[0])


def _points(registry: DerRegistry) -> list[ConnectionPoint]:
    return connection_points(registry)


def _bounds(allocation: EnvelopeAllocation, points: list[ConnectionPoint], k: int, d: Direction) -> np.ndarray:
    attr = "import_max_w" if d is Direction.IMPORT else "export_max_w"
    return np.array([getattr(allocation.envelope(p.aggregator).point(p.node), attr)[k] for p in points])


def _raised(points: list[ConnectionPoint], alpha: float, d: Direction, rule: AllocationRule) -> np.ndarray:
    cap = np.array([p.import_w if d is Direction.IMPORT else p.export_w for p in points])
    return alpha * cap if rule is AllocationRule.PROPORTIONAL else np.minimum(cap, alpha * cap.max())


def _check_at_bounds(
    grid: Grid,
    points: list[ConnectionPoint],
    times: tuple[datetime, ...],
    rule: AllocationRule,
    limits: ViolationLimits,
) -> list[str]:
    """Every point at its bound: no violation in pandapower; alpha x RAISE: the named element violates.

    Returns the binding elements met (one per constrained interval and direction).
    """
    allocation = allocate_envelopes(grid, points, times=times, rule=rule, limits=limits)
    assert allocation.feasible.all()
    # one batch power flow per bisection step for every interval and both directions at once
    searched = allocation.alpha[allocation.alpha < 1.0]
    steps = math.ceil(math.log2(1.0 / (TOLERANCE * searched.min()))) if searched.size else 0
    assert allocation.batch_calls <= 1 + steps
    ref = Reference(grid, points, limits)
    binding: list[str] = []
    for k, when in enumerate(times):
        ref.set_interval(when)
        for row, d in enumerate(Direction):
            bounds = _bounds(allocation, points, k, d)
            excess, element = ref.worst(d, bounds)
            assert excess <= PF_TOL, (when, d, element, excess)
            alpha = float(allocation.alpha[row, k])
            named = allocation.binding[row][k]
            if named is None:
                assert alpha == 1.0
                continue
            binding.append(named)
            raised = _raised(points, min(alpha * RAISE, 1.0), d, rule)
            assert np.any(raised > bounds)
            excess, element = ref.worst(d, raised)
            assert excess > PF_TOL, (when, d, excess)
            assert element == named
    return binding


@pytest.mark.parametrize("rule", list(AllocationRule))
def test_every_point_at_its_bound_at_once_is_within_limits_and_the_bounds_are_tight(
    registry: DerRegistry, grid: Grid, rule: AllocationRule
) -> None:
    binding = _check_at_bounds(grid, _points(registry), TIMES, rule, LIMITS)
    assert len(binding) >= 4  # the test is about the constrained intervals: most of them bind


@pytest.mark.parametrize("rule", list(AllocationRule))
def test_a_line_and_a_voltage_limit_bind_where_they_are_the_weakest_element(
    registry: DerRegistry, grid: Grid, rule: AllocationRule
) -> None:
    # two aggregators' large loads at the end of the longest cable: that cable binds the summer noon's import
    far = [
        ConnectionPoint("Flexa", "LV1.101 Bus 1", 200e3, 50e3),
        ConnectionPoint("Voltwise", "LV1.101 Bus 1", 150e3, 50e3),
    ]
    assert "line:LV1.101 Line 10" in _check_at_bounds(grid, far, NOON, rule, LIMITS)
    # a narrow voltage band (the source holds 1.025 p.u.): a node's voltage binds first
    narrow = ViolationLimits(u_min_pu=1.0, u_max_pu=1.04)
    assert any(b.startswith("node:") for b in _check_at_bounds(grid, _points(registry), TIMES, rule, narrow))


def test_mixed_states_inside_the_envelope_stay_within_limits_on_this_radial_feeder(
    registry: DerRegistry, grid: Grid
) -> None:
    # the documented argument: on a radial feeder the two corners are the worst cases, so any mix of
    # imports and exports within the bounds is within the limits too (checked on random mixes)
    points = _points(registry)
    allocation = allocate_envelopes(grid, points, times=TIMES)
    ref = Reference(grid, points)
    rng = np.random.default_rng(12)
    for k, when in enumerate(TIMES):
        ref.set_interval(when)
        imp = _bounds(allocation, points, k, Direction.IMPORT)
        exp = _bounds(allocation, points, k, Direction.EXPORT)
        for _ in range(6):
            share = rng.uniform(0.0, 1.0, len(points))
            mixed = np.where(rng.uniform(size=len(points)) < 0.5, share * imp, -share * exp)
            excess, element = ref.worst(Direction.IMPORT, mixed)
            assert excess <= PF_TOL, (when, element, excess)


def test_the_rules_share_the_network_as_stated_and_differently(registry: DerRegistry, grid: Grid) -> None:
    points = _points(registry)
    prop = allocate_envelopes(grid, points, times=TIMES, rule="proportional")
    equal = allocate_envelopes(grid, points, times=TIMES, rule=AllocationRule.EQUAL)
    differ = 0
    for k in range(len(TIMES)):
        for d in Direction:
            cap = np.array([p.import_w if d is Direction.IMPORT else p.export_w for p in points])
            b_prop = _bounds(prop, points, k, d)
            b_equal = _bounds(equal, points, k, d)
            has = cap > 0
            share = b_prop[has] / cap[has]
            assert np.allclose(share, share[0], rtol=1e-12)  # one share of each point's capacity
            watts = b_equal[b_equal < cap]
            assert np.allclose(watts, watts.max() if watts.size else 0.0, rtol=1e-12)  # one W ...
            w = watts.max() if watts.size else cap.max()
            assert np.allclose(b_equal, np.minimum(cap, w), rtol=1e-12)  # ... capped by each point's capacity
            differ += int(not np.allclose(b_prop, b_equal))
    assert differ >= 3
    js = prop.to_json()
    assert js["rule"] == "proportional"
    assert len(js["intervals"]) == len(TIMES)
    flexa = prop.envelope("Flexa").to_json()
    assert flexa["aggregator"] == "Flexa"
    first = flexa["points"][0]["intervals"][0]
    assert set(first) >= {"time", "import_max_w", "export_max_w", "import_binding", "export_binding"}
    assert first["time"] == "2016-01-14T17:45:00Z"


def test_conservative_quantiles_of_a_forecast_hold_in_the_independent_power_flow(
    registry: DerRegistry, grid: Grid
) -> None:
    points = _points(registry)
    when = TIMES[0]
    ref = Reference(grid, points)
    ref.set_interval(when)
    loads = grid.component("sym_load")
    names = [str(n) for n in grid.names_of("sym_load").tolist()]
    p = ref.net.load.loc[loads["id"], "p_mw"].to_numpy() * 1e6
    factors = np.array([0.7, 1.0, 1.3])
    forecast = QuantileForecast(
        targets=tuple(target_name("sym_load", n) for n in names),
        time=np.array([np.datetime64(when.replace(tzinfo=None), "s")]),
        quantiles=np.array([0.1, 0.5, 0.9]),
        values=factors[:, None, None] * p[None, None, :],
        issued=when - timedelta(days=1),
    )
    median = allocate_envelopes(grid, points, forecast=forecast)
    careful = allocate_envelopes(grid, points, forecast=forecast, import_quantile=0.9, export_quantile=0.1)
    for row in range(len(Direction)):
        assert careful.alpha[row, 0] < median.alpha[row, 0]
    assert careful.to_json()["import_quantile"] == 0.9
    # loads at their 0.9 quantile (1.3 x) with every point at its import bound; at 0.1 (0.7 x) for export
    for d, factor in ((Direction.IMPORT, 1.3), (Direction.EXPORT, 0.7)):
        ref.set_interval(when, load_factor=factor)
        excess, element = ref.worst(d, _bounds(careful, points, 0, d))
        assert excess <= PF_TOL, (d, element, excess)


def test_floors_hold_and_an_infeasible_floor_is_reported_not_hidden(registry: DerRegistry, grid: Grid) -> None:
    points = _points(registry)
    plain = allocate_envelopes(grid, points, times=NOON)
    assert plain.binding[1][0] is not None  # the summer noon's export binds
    low = _bounds(plain, points, 0, Direction.EXPORT)
    j = int(np.argmax([p.export_w for p in points]))
    floored = [replace(p, export_floor_w=min(p.export_w, low[j] * 1.2)) if i == j else p for i, p in enumerate(points)]
    with_floor = allocate_envelopes(grid, floored, times=NOON)
    got = _bounds(with_floor, floored, 0, Direction.EXPORT)
    assert got[j] == pytest.approx(low[j] * 1.2)
    others = np.arange(len(points)) != j
    assert np.all(got[others] <= low[others] + 1e-6)  # the floor takes network room from the others
    ref = Reference(grid, floored)
    ref.set_interval(NOON[0])
    assert ref.worst(Direction.EXPORT, got)[0] <= PF_TOL
    # floors at the full export capacity: more than the network takes at noon
    full = [replace(p, export_floor_w=p.export_w) for p in points]
    none = allocate_envelopes(grid, full, times=NOON)
    assert not none.feasible[1, 0]
    assert none.feasible[0, 0]
    assert np.array_equal(_bounds(none, full, 0, Direction.EXPORT), [p.export_w for p in full])
    excess, element = ref.worst(Direction.EXPORT, np.array([p.export_w for p in full]))
    assert excess > PF_TOL
    assert none.binding[1][0] == element
    point = none.envelope("Flexa").points[0].to_json()["intervals"][0]
    assert point["export_feasible"] is False
    assert point["export_binding"] == element


# -- dispatch against the envelope --------------------------------------------------------------------------------
def test_breaches_are_found_exactly_where_a_measurement_exceeds_its_bound(registry: DerRegistry, grid: Grid) -> None:
    points = _points(registry)
    allocation = allocate_envelopes(grid, points, times=TIMES)
    measured: list[PointMeasurement] = []
    expected: set[tuple[str, str, datetime, Direction]] = set()
    for k, when in enumerate(TIMES):
        for j, p in enumerate(points):
            imp = float(_bounds(allocation, points, k, Direction.IMPORT)[j])
            exp = float(_bounds(allocation, points, k, Direction.EXPORT)[j])
            case = (k + j) % 5
            value = {0: imp, 1: imp + 1.0, 2: -exp, 3: -exp - 500.0, 4: 0.5 * imp - 0.5 * exp}[case]
            measured.append(PointMeasurement(p.aggregator, p.node, when, value))
            if case == 1:
                expected.add((p.aggregator, p.node, when, Direction.IMPORT))
            if case == 3:
                expected.add((p.aggregator, p.node, when, Direction.EXPORT))
    breaches = check_dispatch(allocation, measured)
    assert {(b.aggregator, b.node, b.time, b.direction) for b in breaches} == expected
    for b in breaches:
        assert b.excess_w == pytest.approx(1.0 if b.direction is Direction.IMPORT else 500.0)
        assert b.key == f"envelope:{b.aggregator}/{b.node}"
        assert b.severity in ((1, 2) if b.direction is Direction.IMPORT else (-1, -2))
        assert b.to_json()["condition"] == f"{b.direction.value}_above_envelope"
    small = [b for b in breaches if b.bound_w > 0 and b.excess_w <= 0.1 * b.bound_w]
    assert all(abs(b.severity) == 1 for b in small)
    assert check_dispatch(allocation.envelopes, measured, tolerance_w=600.0) == []


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input_is_one_input_error_naming_it(registry: DerRegistry, grid: Grid) -> None:
    points = _points(registry)
    allocation = allocate_envelopes(grid, points[:2], times=TIMES[:1])
    with pytest.raises(InputError, match="Nowhere"):
        allocate_envelopes(grid, [*points, ConnectionPoint("Flexa", "Nowhere", 1e3, 1e3)], times=TIMES)
    with pytest.raises(InputError, match="Nobody"):
        connection_points(registry, aggregators=["Nobody"])
    with pytest.raises(InputError, match="Nobody"):
        check_dispatch(allocation, [PointMeasurement("Nobody", points[0].node, TIMES[0], 1.0)])
    with pytest.raises(InputError, match="Nobody"):
        allocation.envelope("Nobody")
    with pytest.raises(InputError, match=r"export_w.*negative"):
        ConnectionPoint("Flexa", "LV1.101 Bus 5", 1e3, -5.0)
    with pytest.raises(InputError, match="import floor"):
        ConnectionPoint("Flexa", "LV1.101 Bus 5", 1e3, 1e3, import_floor_w=2e3)
    naive = datetime(2016, 1, 14, 17, 45)
    with pytest.raises(InputError, match="no time zone"):
        allocate_envelopes(grid, points, times=[naive])
    with pytest.raises(InputError, match="no time zone"):
        PointMeasurement("Flexa", points[0].node, naive, 1.0)
    with pytest.raises(InputError, match="not a profile interval"):
        allocate_envelopes(grid, points, times=[datetime(2016, 1, 14, 17, 47, tzinfo=UTC)])
    with pytest.raises(InputError, match="no interval starting"):
        check_dispatch(allocation, [PointMeasurement(points[0].aggregator, points[0].node, TIMES[1], 1.0)])
    with pytest.raises(InputError, match="given twice"):
        allocate_envelopes(grid, [points[0], points[0]], times=TIMES)
    with pytest.raises(InputError, match="allocation rule"):
        allocate_envelopes(grid, points, times=TIMES, rule="first_come")
    with pytest.raises(InputError, match="export quantile"):
        allocate_envelopes(grid, points, times=TIMES, export_quantile=1.5)
