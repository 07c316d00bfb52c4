"""Network-aware merit order on SimBench 1-MV-rural: the selection relieves the constraints at the lowest cost.

The case: the grid's loads scaled by 1.80, 1.95 and 1.87 in three intervals, generators off, so
several lines of one feeder run 0.2-19 % over their rating; every line over its rating in an
interval is a need. Congestion points come from :func:`congestion_points`; offers at them have
random powers and prices (seeded), some with the wrong sign (more consumption on the congested
feeder). The references, none of them the code under test:

- an exhaustive search over every combination (small cases, many seeds; options that relieve no
  need are left out by the same rule there, so it checks the solver, not the filter);
- scipy's MILP (HiGHS through another interface) on a formulation built here from the per-node
  sensitivities, and scipy's LP relaxation as a lower bound (larger cases);
- pandapower power flows with the bought options applied, each option's power spread equally
  over its point's nodes: every congested line ends within :data:`PF_TOL` of its rating. The
  tolerance covers the linearisation (the sensitivities are taken around each interval's
  state; the relief bought is up to 2 MW on a 20 kV feeder at 0.87 p.u.).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from opendso.calc.sensitivity import InjectionSensitivities, injection_sensitivities
from opendso.der import AssetKind, DerAsset, DerRegistry
from opendso.errors import InputError
from opendso.grid import analyse_topology, to_pandapower
from opendso.grid.model import Grid
from opendso.markets.merit import (
    Headroom,
    PointSensitivities,
    Selection,
    congestion_points,
    exhaustive_selection,
    merit_order,
    point_sensitivities,
    point_sensitivity,
    select_offers,
)
from opendso.markets.model import CongestionPoint, FlexNeed, FlexOffer, FlexOption
from opendso.store import migrate
from opendso.store.der import DerStore
from opendso.store.engine import create_engine

GRID = "simbench:1-MV-rural--0-sw"
SCALES = (1.80, 1.95, 1.87)
T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
#: Loading above the rating allowed after the bought options in pandapower (linearisation error).
PF_TOL = 0.01
#: Relative agreement of costs between the MILP and its references (solver tolerances).
COST_RTOL = 1e-6


@dataclass(frozen=True)
class Case:
    grid: Grid
    update: dict[str, dict[str, np.ndarray]]
    sens: InjectionSensitivities
    needs: tuple[FlexNeed, ...]
    points: tuple[CongestionPoint, ...]
    point_sens: PointSensitivities
    congested_feeder: str


@pytest.fixture(scope="module")
def case(grid_of: Callable[[str], Grid]) -> Case:
    grid = grid_of(GRID)
    load, gen = grid.component("sym_load"), grid.component("sym_gen")
    scales = np.array(SCALES)[:, None]
    update = {
        "sym_load": {"p_specified": load["p_specified"] * scales, "q_specified": load["q_specified"] * scales},
        "sym_gen": {"p_specified": np.zeros((len(SCALES), gen.size))},
    }
    node_ids = set(load["node"].tolist()) | set(gen["node"].tolist())
    names = [str(n) for n, i in zip(grid.names_of("node"), grid.component("node")["id"], strict=True) if i in node_ids]
    sens = injection_sensitivities(grid, names, update=update)
    needs = tuple(
        FlexNeed(branch, s, T0 + s * timedelta(minutes=15), float(sens.base_loading[s, b] - 1.0))
        for s in range(len(SCALES))
        for b, branch in enumerate(sens.branches)
        if sens.base_loading[s, b] > 1.0
    )
    watched = sorted({n.element for n in needs})
    points = congestion_points(grid, watched, sensitivities=sens)
    worst = max(needs, key=lambda n: n.excess)
    feeder = min(points, key=lambda p: point_sensitivity(point_sensitivities(points, sens, watched), p.id, worst))
    return Case(grid, update, sens, needs, points, point_sensitivities(points, sens, watched), str(feeder.feeder))


def _offers(case: Case, seed: int, n_offers: int, n_options: int, max_mw: float = 1.5) -> list[FlexOffer]:
    """Random offers: most at points of the congested feeder, a share with the wrong sign (more consumption)."""
    rng = np.random.default_rng(seed)
    on_feeder = [p for p in case.points if p.feeder == case.congested_feeder]
    elsewhere = [p for p in case.points if p.feeder != case.congested_feeder]
    offers = []
    for k in range(n_offers):
        point = (
            on_feeder[rng.integers(len(on_feeder))] if rng.random() < 0.75 else elsewhere[rng.integers(len(elsewhere))]
        )
        wrong = rng.random() < 0.15
        options = []
        for j in range(n_options):
            first = int(rng.integers(0, len(SCALES)))
            length = int(rng.integers(1, len(SCALES) - first + 1))
            if rng.random() < 0.5:  # half the options cover the whole horizon
                first, length = 0, len(SCALES)
            size = rng.uniform(0.2e6, max_mw * 1e6, length)
            power = tuple(float(x) for x in (size if wrong else -size))
            options.append(FlexOption(f"o{j}", first, power, float(round(rng.uniform(50, 1000), 2))))
        offers.append(FlexOffer(f"offer-{seed}-{k}", f"agr{k % 3}.example", point.id, tuple(options)))
    return offers


def _node_effects(case: Case, offers: list[FlexOffer]) -> tuple[np.ndarray, list[tuple[str, str]], np.ndarray]:
    """Independent of merit.py: per need and option, the worst relief over the point's nodes, from per-node figures."""
    nodes_of = {p.id: p.nodes for p in case.points}
    cols = {n: k for k, n in enumerate(case.sens.nodes)}
    keys, prices, effect = [], [], []
    for offer in offers:
        for option in offer.options:
            column = []
            for need in case.needs:
                k = need.interval - option.first
                if not 0 <= k < len(option.power_w):
                    column.append(0.0)
                    continue
                s = case.sens.of(need.element)[need.interval, [cols[n] for n in nodes_of[offer.congestion_point]]]
                column.append(float(np.min(-s * option.power_w[k])))  # relief = fall of the loading
            effect.append(column)
            keys.append((offer.id, option.reference))
            prices.append(option.price)
    return np.array(effect).T, keys, np.array(prices)


def _bought_keys(selection: Selection) -> set[tuple[str, str]]:
    return {(b.offer_id, b.option) for b in selection.bought}


# -- congestion points ---------------------------------------------------------------------------------------------
def test_congestion_points_group_nodes_that_share_a_sensitivity(case: Case) -> None:
    topology = analyse_topology(case.grid)
    node_row = {str(n): k for k, n in enumerate(case.grid.names_of("node"))}
    cols = {n: k for k, n in enumerate(case.sens.nodes)}
    watched = sorted({n.element for n in case.needs})
    covered = [n for p in case.points for n in p.nodes]
    assert sorted(covered) == sorted(case.sens.nodes)  # every load/generator node in exactly one point
    for point in case.points:
        assert len({int(topology.node_feeder[node_row[n]]) for n in point.nodes}) == 1, point.id
        for element in watched:
            values = case.sens.of(element)[:, [cols[n] for n in point.nodes]]
            scale = np.abs(case.sens.of(element)).max(axis=1, keepdims=True)
            signs = np.where(np.abs(values) <= 1e-3 * scale, 0, np.sign(values))
            assert (signs == signs[:, :1]).all(), (point.id, element)
            spread = np.abs(values).max(axis=1) - np.abs(values).min(axis=1)
            assert (spread <= 0.25 * np.abs(values).max(axis=1) + 1e-18).all(), (point.id, element)
    # the worst case of the nodes: the smallest relief, and zero for a point whose nodes disagree
    need = case.needs[0]
    for point in case.points:
        relief = -case.sens.of(need.element)[need.interval, [cols[n] for n in point.nodes]]
        expected = relief.min() if (relief > 0).all() else relief.max() if (relief < 0).all() else 0.0
        assert point_sensitivity(case.point_sens, point.id, need) == pytest.approx(expected, rel=1e-12)


def test_congestion_points_from_the_registry_cover_its_assets_nodes(case: Case, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'der.db'}")
    migrate.upgrade(engine)
    registry = DerRegistry(DerStore(engine), case.grid, clock=lambda: T0)
    feeder_points = [p for p in case.points if p.feeder == case.congested_feeder]
    nodes = sorted({p.nodes[0] for p in feeder_points} | {case.points[0].nodes[0]})
    for k, node in enumerate(nodes):
        registry.add_asset(
            DerAsset(f"A{k}", f"Flexible load {k}", AssetKind.FLEXIBLE_LOAD, node, "owner", import_kw=500.0), actor="t"
        )
    watched = sorted({n.element for n in case.needs})
    points = congestion_points(case.grid, watched, registry=registry, update=case.update)
    assert sorted(n for p in points for n in p.nodes) == nodes
    # sensitivities computed inside, around the same states: the same grouping as from the case's own
    direct = congestion_points(case.grid, watched, nodes=nodes, sensitivities=case.sens)
    assert [p.nodes for p in points] == [p.nodes for p in direct]
    engine.dispose()


# -- against an exhaustive search ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(24))
def test_milp_costs_what_the_exhaustive_search_finds(case: Case, seed: int) -> None:
    offers = _offers(case, seed, n_offers=8, n_options=2, max_mw=3.0)
    milp_sel = select_offers(case.needs, offers, case.point_sens)
    exhaustive = exhaustive_selection(case.needs, offers, case.point_sens)
    assert sum(n.met for n in milp_sel.needs) == sum(n.met for n in exhaustive.needs)
    assert milp_sel.total_cost == pytest.approx(exhaustive.total_cost, rel=COST_RTOL, abs=1e-9)
    assert len({b.offer_id for b in milp_sel.bought}) == len(milp_sel.bought)  # one option per offer at most
    for outcome in milp_sel.unmet:
        assert outcome.remaining == pytest.approx(outcome.need.excess - outcome.relief, abs=1e-12)
        assert outcome.remaining > 0


@pytest.mark.parametrize("seed", range(6))
def test_headroom_is_kept_like_the_exhaustive_search_keeps_it(case: Case, seed: int) -> None:
    offers = _offers(case, 100 + seed, n_offers=6, n_options=2)
    # less consumption on the feeder raises the voltage at its end: leave it little room
    end = min(case.sens.node_names, key=lambda n: float(case.sens.base(f"node:{n}")[1]))
    sens = case.sens
    watched = [*sorted({n.element for n in case.needs}), f"node:{end}"]
    point_sens = point_sensitivities(case.points, sens, watched)
    room = [Headroom(f"node:{end}", 1, 0.004, "high")]
    milp_sel = select_offers(case.needs, offers, point_sens, headroom=room)
    exhaustive = exhaustive_selection(case.needs, offers, point_sens, headroom=room)
    assert milp_sel.total_cost == pytest.approx(exhaustive.total_cost, rel=COST_RTOL, abs=1e-9)
    cols = {n: k for k, n in enumerate(sens.nodes)}
    rise = 0.0
    for b in milp_sel.bought:
        offer = next(o for o in offers if o.id == b.offer_id)
        option = offer.option(b.option)
        if 1 in option.intervals:
            nodes = next(p.nodes for p in case.points if p.id == offer.congestion_point)
            s = sens.of(f"node:{end}")[1, [cols[n] for n in nodes]]
            rise += float(np.max(s * option.power_w[1 - option.first]))
    assert rise <= 0.004 + 1e-9


# -- against scipy's MILP and LP relaxation --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_milp_matches_an_independent_formulation_on_larger_cases(case: Case, seed: int) -> None:
    offers = _offers(case, 1000 + seed, n_offers=80, n_options=3)
    selection = select_offers(case.needs, offers, case.point_sens)
    assert selection.all_met
    effect, keys, prices = _node_effects(case, offers)
    excess = np.array([n.excess for n in case.needs])
    offer_rows = np.array([[1.0 if k[0] == o.id else 0.0 for k in keys] for o in offers])
    constraints = [LinearConstraint(effect, lb=excess), LinearConstraint(offer_rows, ub=1.0)]
    ref = milp(prices, constraints=constraints, integrality=np.ones(len(keys)), bounds=Bounds(0, 1))
    assert ref.success
    assert selection.total_cost == pytest.approx(ref.fun, rel=COST_RTOL)
    relaxed = linprog(
        prices,
        A_ub=np.vstack([-effect, offer_rows]),
        b_ub=np.concatenate([-excess, np.ones(len(offers))]),
        bounds=(0, 1),
    )
    assert relaxed.success
    assert selection.total_cost >= relaxed.fun - 1e-6
    # never an option with the wrong sign: each bought one relieves some need at every node of its point
    bought = _bought_keys(selection)
    for j, key in enumerate(keys):
        if key in bought:
            assert effect[:, j].max() > 0, key
    wrong = {
        (o.id, opt.reference)
        for o in offers
        for opt in o.options
        if all(p > 0 for p in opt.power_w)
        and any(p.id == o.congestion_point and p.feeder == case.congested_feeder for p in case.points)
    }
    assert wrong, "the seed should hold offers with the wrong sign"
    assert not wrong & bought
    refused = {(r.offer_id, r.option): r.reason for r in selection.refused}
    assert wrong <= set(refused)
    assert all("wrong sign" in refused[k] for k in wrong)


# -- against pandapower ----------------------------------------------------------------------------------------------
def _pandapower_loading(case: Case, selection: Selection, offers: list[FlexOffer]) -> dict[tuple[str, int], float]:
    net = to_pandapower(case.grid)
    load = case.grid.component("sym_load")
    nodes = {str(n): int(i) for n, i in zip(case.grid.names_of("node"), case.grid.component("node")["id"], strict=True)}
    points = {p.id: p for p in case.points}
    by_id = {o.id: o for o in offers}
    line_ids = dict(zip((str(n) for n in case.grid.names_of("line")), case.grid.component("line")["id"], strict=True))
    out: dict[tuple[str, int], float] = {}
    for s, scale in enumerate(SCALES):
        net.load["p_mw"] = load["p_specified"] * scale / 1e6
        net.load["q_mvar"] = load["q_specified"] * scale / 1e6
        net.sgen["p_mw"] = 0.0
        extra = []
        for b in selection.bought:
            option = by_id[b.offer_id].option(b.option)
            if s in option.intervals:
                point = points[b.congestion_point]
                share = option.power_w[s - option.first] / len(point.nodes) / 1e6  # spread equally over its nodes
                extra += [pp.create_load(net, nodes[n], p_mw=share) for n in point.nodes]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(net, tolerance_mva=1e-9, numba=False)
        for need in case.needs:
            if need.interval == s:
                name = need.element.partition(":")[2]
                out[(need.element, s)] = float(net.res_line.loading_percent.loc[line_ids[name]]) / 100.0
        net.load = net.load.drop(extra)
    return out


@pytest.mark.parametrize("seed", [2000, 2003])
def test_a_pandapower_power_flow_shows_the_constraints_relieved(case: Case, seed: int) -> None:
    offers = _offers(case, seed, n_offers=60, n_options=3)
    selection = select_offers(case.needs, offers, case.point_sens)
    assert selection.all_met
    assert selection.bought
    loading = _pandapower_loading(case, selection, offers)
    for need in case.needs:
        before = 1.0 + need.excess
        after = loading[(need.element, need.interval)]
        assert after <= 1.0 + PF_TOL, (need.element, need.interval, before, after)
        assert after < before


# -- unmet needs, ranking, records -------------------------------------------------------------------------------------
def test_unmet_needs_are_named_with_what_remains_and_the_most_are_met(case: Case) -> None:
    offers = _offers(case, 7, n_offers=3, n_options=1)
    selection = select_offers(case.needs, offers, case.point_sens)
    exhaustive = exhaustive_selection(case.needs, offers, case.point_sens)
    assert not selection.all_met
    assert sum(n.met for n in selection.needs) == sum(n.met for n in exhaustive.needs)
    assert selection.total_cost == pytest.approx(exhaustive.total_cost, rel=COST_RTOL, abs=1e-9)
    body = selection.to_json()
    assert {n["element"] for n in body["needs"] if not n["met"]}
    assert all(n["remaining"] > 0 for n in body["needs"] if not n["met"])
    assert body["method"] == "milp-partial"


def test_merit_order_ranks_by_price_per_relief(case: Case) -> None:
    offers = _offers(case, 11, n_offers=10, n_options=2)
    ranks = merit_order(case.needs, offers, case.point_sens)
    effect, keys, prices = _node_effects(case, offers)
    excess = np.array([n.excess for n in case.needs])
    share = (np.clip(effect, 0, excess[:, None]) / excess[:, None]).sum(axis=0)
    expected = {k: (p / s if s > 1e-9 else np.inf) for k, p, s in zip(keys, prices, share, strict=True)}
    got = [(r.offer_id, r.option) for r in ranks]
    assert sorted(got) == sorted(keys)
    values = [expected[k] for k in got]
    assert values == sorted(values)
    assert ranks[0].price_per_relief == pytest.approx(min(expected.values()), rel=1e-9)


# -- bad input -------------------------------------------------------------------------------------------------------
def test_bad_input_is_named(case: Case) -> None:
    offers = _offers(case, 3, n_offers=2, n_options=1)
    unknown = FlexOffer("x-1", "agr.example", "cp-nowhere-1", (FlexOption("o0", 0, (-1e5,), 10.0),))
    with pytest.raises(InputError, match="unknown congestion point 'cp-nowhere-1'"):
        select_offers(case.needs, [*offers, unknown], case.point_sens)
    late = FlexOffer("x-2", "agr.example", case.points[0].id, (FlexOption("o0", 2, (-1e5, -1e5), 10.0),))
    with pytest.raises(InputError, match=r"x-2 option o0: intervals 2\.\.3 lie outside the horizon of 3"):
        select_offers(case.needs, [*offers, late], case.point_sens)
    with pytest.raises(InputError, match=f"offer id '{offers[0].id}' is used twice"):
        select_offers(case.needs, [*offers, offers[0]], case.point_sens)
    with pytest.raises(InputError, match="is used twice"):
        exhaustive_selection(case.needs, [*offers, offers[0]], case.point_sens)
    with pytest.raises(InputError, match="listed twice"):
        select_offers([*case.needs, case.needs[0]], offers, case.point_sens)
    with pytest.raises(InputError, match="no sensitivities for element"):
        select_offers([FlexNeed("line:nope", 0, T0, 0.1)], offers, case.point_sens)
    with pytest.raises(InputError, match="no node 'nowhere'"):
        congestion_points(case.grid, ["line:MV1.101 Line 45"], nodes=["nowhere"])
    with pytest.raises(InputError, match="no watched elements"):
        congestion_points(case.grid, [])
