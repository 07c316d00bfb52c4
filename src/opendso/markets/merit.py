"""Network-aware merit order: which flexibility offers to buy so that the constraints are relieved at the lowest cost.

A UFTP FlexOffer names a congestion point, not a connection (UFTP 3.x message schema as
shapeshifter-uftp 3.0 carries it: every flex message's ``CongestionPoint`` attribute is "the
entity address of the congestion point this message applies to"; a FlexOffer's ``OfferOption``
has an ``OptionReference``, its ``Power`` per ``ISP``, and one ``Price``, "the asking price for
the flexibility offered in this option"; a FlexOrder names one ``OptionReference``). Options are
bought whole: the FlexOrder's ``ActivationFactor`` is 1.00, and an option's
``MinActivationFactor`` below 1 (partial activation) is not used. The DSO cannot know where
behind the point the power will move, so the selection works in three steps:

1. **Congestion points** (:func:`congestion_points`): the nodes that hold loads or generators
   (or the DER registry's assets) are grouped per feeder (:mod:`opendso.grid.topology`), and a
   feeder's nodes are split where their sensitivities to the watched constraints
   (:mod:`opendso.calc.sensitivity`) change sign or differ by more than ``tolerance`` of the
   largest. A point's connections thus share a sensitivity within that tolerance.
2. **A point's effect on a need** (:func:`point_sensitivity`): the worst case of its nodes, the
   smallest relief per W in the relieving direction, and zero when the nodes disagree in sign.
   An option's effect on a need in an interval is credited as the worst node's: with ``p`` the
   option's power there, ``min over the point's nodes of relief_per_W(node) * p``. That equals
   ``point_sensitivity * p`` when the option relieves, and counts the worst node's harm when it
   makes the need worse, so wherever behind the point the power moves, the relief credited is
   never more than the linearised network gives.
3. **Selection** (:func:`select_offers`): a mixed-integer programme in HiGHS. One binary per
   option (UFTP prices the option whole), at most one option per offer, for every need
   ``sum(effect x bought) >= excess``, for every :class:`Headroom` the worst-case rise of that
   element ``<= room``, minimum total price. Options whose effect on every need they touch is
   zero or negative are never bought: they are filtered before and reported with the reason.

When the needs cannot all be met, the rule is: buy the set that meets the **most** needs, and
among those the **cheapest**; every unmet need is reported with the excess that remains after the
set bought (the set is not chosen to shrink it). :func:`exhaustive_selection` applies the same
rule by trying every combination (the check on small cases), and :func:`merit_order` gives the
plain ranking by price per unit of relief for display.

Units: a need's excess and an option's relief are in the element's own unit (loading as a
fraction of the rating, voltage in p.u.); powers in W, UFTP's sign (consumption).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csc_matrix

from opendso.calc.sensitivity import InjectionSensitivities, injection_sensitivities
from opendso.calc.vvo import _new_highs
from opendso.errors import CalculationError, InputError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.markets.model import CongestionPoint, FlexNeed, FlexOffer, FlexOption

if TYPE_CHECKING:
    from opendso.der.registry import DerRegistry

__all__ = [
    "Headroom",
    "MeritRank",
    "NeedOutcome",
    "PointSensitivities",
    "Purchase",
    "Refusal",
    "Selection",
    "congestion_points",
    "exhaustive_selection",
    "merit_order",
    "point_sensitivities",
    "point_sensitivity",
    "select_offers",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Relative size below which a node's sensitivity counts as zero (of the largest for that element and state).
ZERO_SHARE = 1e-3

#: Relief below this share of a need's excess counts as none when filtering options.
RELIEF_EPS = 1e-9

#: A need counts as met when the relief reaches its excess within this share (the solver's feasibility tolerance).
MET_TOL = 1e-6


# -- records ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Headroom:
    """Room left on a monitored element in one interval: bought options must not push it past its limit.

    ``room``: how far the element may still move toward its limit (loading fraction or p.u.), >= 0;
    ``direction``: ``"high"`` (an upper limit: loading, over-voltage) or ``"low"`` (under-voltage).
    """

    element: str
    interval: int
    room: float
    direction: str = "high"

    def __post_init__(self) -> None:
        if not isinstance(self.room, int | float) or not math.isfinite(self.room) or self.room < 0:
            raise InputError(f"headroom {self.element}@{self.interval}: room must be a number >= 0, got {self.room!r}")
        if self.direction not in ("high", "low"):
            raise InputError(f"headroom {self.element}: direction must be 'high' or 'low', got {self.direction!r}")
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 0:
            raise InputError(f"headroom {self.element}: interval must be an index >= 0, got {self.interval!r}")


@dataclass(frozen=True)
class PointSensitivities:
    """Per congestion point, element and state: the smallest and largest sensitivity of the point's nodes.

    ``low[s, p, e]`` / ``high[s, p, e]``: min / max over the nodes of point ``points[p]`` of the
    change of ``elements[e]`` per W more consumption, in state ``s``. ``intervals[s]`` is the
    interval index of state ``s``; ``None`` means one state that stands for every interval.
    """

    points: tuple[str, ...]
    elements: tuple[str, ...]
    intervals: tuple[int, ...] | None
    low: FloatArray
    high: FloatArray

    def bounds(self, point: str, element: str, interval: int) -> tuple[float, float]:
        """``(min, max)`` change of ``element`` per W at the point's nodes in ``interval``; InputError if unknown."""
        p, e, s = self._rows(point, element, interval)
        return float(self.low[s, p, e]), float(self.high[s, p, e])

    def _rows(self, point: str, element: str, interval: int) -> tuple[int, int, int]:
        try:
            p = self.points.index(point)
        except ValueError:
            raise InputError(f"merit order: unknown congestion point {point!r}") from None
        try:
            e = self.elements.index(element)
        except ValueError:
            raise InputError(f"merit order: no sensitivities for element {element!r}") from None
        return p, e, self.state_of(interval)

    def state_of(self, interval: int) -> int:
        """The state row standing for ``interval``; InputError when there is none."""
        if self.intervals is None:
            return 0
        try:
            return self.intervals.index(interval)
        except ValueError:
            raise InputError(f"merit order: no sensitivities for interval {interval}") from None


@dataclass(frozen=True)
class Purchase:
    """One option bought: the offer, its option, the price and the relief credited per need (``element@interval``)."""

    offer_id: str
    aggregator: str
    congestion_point: str
    option: str
    price: float
    relief: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        """The purchase as JSON."""
        return {
            "offer_id": self.offer_id,
            "aggregator": self.aggregator,
            "congestion_point": self.congestion_point,
            "option": self.option,
            "price": self.price,
            "relief": dict(self.relief),
        }


@dataclass(frozen=True)
class NeedOutcome:
    """A need after the selection: the relief bought, whether it is met, and the excess that remains (>= 0)."""

    need: FlexNeed
    relief: float
    met: bool
    remaining: float

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON."""
        return {**self.need.to_json(), "relief": self.relief, "met": self.met, "remaining": self.remaining}


@dataclass(frozen=True)
class Refusal:
    """An option never considered, and why."""

    offer_id: str
    option: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The refusal as JSON."""
        return {"offer_id": self.offer_id, "option": self.option, "reason": self.reason}


@dataclass(frozen=True)
class MeritRank:
    """One option in the plain merit order: price per unit of relief (relief as shares of the needs' excess)."""

    offer_id: str
    option: str
    congestion_point: str
    price: float
    relief_share: float
    price_per_relief: float

    def to_json(self) -> dict[str, Any]:
        """The rank as JSON (``price_per_relief`` None when the option relieves nothing)."""
        ppr = self.price_per_relief if math.isfinite(self.price_per_relief) else None
        return {
            "offer_id": self.offer_id,
            "option": self.option,
            "congestion_point": self.congestion_point,
            "price": self.price,
            "relief_share": self.relief_share,
            "price_per_relief": ppr,
        }


@dataclass(frozen=True)
class Selection:
    """The options bought, their total price, every need's outcome, the options refused and how long it took."""

    bought: tuple[Purchase, ...]
    total_cost: float
    needs: tuple[NeedOutcome, ...]
    refused: tuple[Refusal, ...]
    solve_s: float
    method: str

    @property
    def all_met(self) -> bool:
        """True when every need is met."""
        return all(n.met for n in self.needs)

    @property
    def unmet(self) -> tuple[NeedOutcome, ...]:
        """The needs not met, with their remaining excess."""
        return tuple(n for n in self.needs if not n.met)

    def to_json(self) -> dict[str, Any]:
        """The selection as JSON."""
        return {
            "method": self.method,
            "total_cost": self.total_cost,
            "all_met": self.all_met,
            "solve_s": self.solve_s,
            "bought": [b.to_json() for b in self.bought],
            "needs": [n.to_json() for n in self.needs],
            "refused": [r.to_json() for r in self.refused],
        }


# -- congestion points --------------------------------------------------------------------------------------
def congestion_points(
    grid: Grid,
    watched: Sequence[str],
    *,
    nodes: Sequence[str] | None = None,
    registry: DerRegistry | None = None,
    sensitivities: InjectionSensitivities | None = None,
    update: Mapping[str, Any] | None = None,
    tolerance: float = 0.25,
    prefix: str = "cp",
) -> tuple[CongestionPoint, ...]:
    """Congestion points whose connections share a sensitivity to the ``watched`` elements (module docstring, step 1).

    The candidate nodes are ``nodes``, else the nodes of the ``registry``'s assets, else the nodes
    of ``sensitivities``, else every node holding an in-service load or generator. They are
    grouped per feeder; within a feeder, nodes whose sensitivities (to every watched element in
    every state) have different signs go to different points, and a point takes the next node
    (in order of the largest sensitivity) only while, for every watched element, the spread of
    its nodes' sensitivities stays within ``tolerance`` of the largest. ``sensitivities``
    (covering the candidate nodes) are computed with
    :func:`~opendso.calc.sensitivity.injection_sensitivities` (around ``update``) when not given.
    Point ids are ``<prefix>-<feeder id>-<k>`` (``<prefix>-bus-<k>`` for busbar nodes).
    """
    if not watched:
        raise InputError("congestion points: no watched elements")
    if not 0 <= tolerance < 1:
        raise InputError(f"congestion points: tolerance must be 0..1, got {tolerance!r}")
    if nodes is None and registry is None and sensitivities is not None:
        nodes = sensitivities.nodes
    candidates = _candidate_nodes(grid, nodes, registry)
    if sensitivities is None:
        sensitivities = injection_sensitivities(grid, candidates, update=update)
    missing = [n for n in candidates if n not in sensitivities.nodes]
    if missing:
        raise InputError(f"congestion points: no sensitivities for node {missing[0]!r}")
    cols = [sensitivities.nodes.index(n) for n in candidates]
    # (nodes, watched x states): each node's sensitivity vector
    vectors = np.concatenate([sensitivities.of(e)[:, cols].T for e in watched], axis=1)
    scale = np.abs(vectors).max(axis=0, keepdims=True)
    signs = np.where(np.abs(vectors) <= ZERO_SHARE * np.where(scale > 0, scale, 1.0), 0, np.sign(vectors)).astype(int)
    topology = analyse_topology(grid)
    node_row = {str(n): k for k, n in enumerate(grid.names_of("node").tolist())}
    feeder_name = {int(i): str(n) for i, n in zip(topology.feeders.id, topology.feeders.name, strict=True)}
    feeder_of = np.array([int(topology.node_feeder[node_row[n]]) for n in candidates])
    points: list[CongestionPoint] = []
    for feeder in sorted(set(feeder_of.tolist()), key=lambda f: (f < 0, f)):
        members = np.flatnonzero(feeder_of == feeder)
        groups: dict[tuple[int, ...], list[int]] = {}
        for m in members:
            groups.setdefault(tuple(signs[m].tolist()), []).append(int(m))
        k = 0
        for key in sorted(groups, reverse=True):
            for cluster in _split(vectors, groups[key], tolerance):
                k += 1
                tag = "bus" if feeder < 0 else str(feeder)
                label = feeder_name.get(feeder, "busbars")[:180]
                points.append(
                    CongestionPoint(
                        id=f"{prefix}-{tag}-{k}",
                        name=f"{label} #{k}",
                        nodes=tuple(candidates[c] for c in cluster),
                        feeder=feeder_name.get(feeder),
                    )
                )
    log.info("event=congestion_points grid=%s nodes=%d points=%d", grid.name, len(candidates), len(points))
    return tuple(points)


def _candidate_nodes(grid: Grid, nodes: Sequence[str] | None, registry: DerRegistry | None) -> list[str]:
    names = [str(n) for n in grid.names_of("node").tolist()]
    if nodes is not None:
        known = set(names)
        unknown = [n for n in nodes if n not in known]
        if unknown:
            raise InputError(f"congestion points: no node {unknown[0]!r} in grid {grid.name}")
        return list(dict.fromkeys(nodes))
    if registry is not None:
        wanted = {asset.node for asset, _ in registry.assets()}
        return [n for n in names if n in wanted]
    ids: set[int] = set()
    for component in ("sym_load", "sym_gen"):
        array = grid.component(component)
        ids.update(int(i) for i in array["node"][array["status"] == 1].tolist())
    node_ids = grid.component("node")["id"]
    return [n for n, i in zip(names, node_ids.tolist(), strict=True) if int(i) in ids]


def _split(vectors: FloatArray, members: list[int], tolerance: float) -> list[list[int]]:
    """Greedy clusters of nodes of one sign pattern: each within ``tolerance`` spread on every column."""
    sub = np.abs(vectors[members])
    dominant = int(np.argmax(sub.max(axis=0))) if sub.size else 0
    order = [members[i] for i in np.argsort(-sub[:, dominant], kind="stable")]
    clusters: list[list[int]] = []
    lo = hi = np.zeros(0)
    for m in order:
        v = np.abs(vectors[m])
        if clusters:
            new_lo, new_hi = np.minimum(lo, v), np.maximum(hi, v)
            if np.all(new_hi - new_lo <= tolerance * new_hi + 1e-300):
                clusters[-1].append(m)
                lo, hi = new_lo, new_hi
                continue
        clusters.append([m])
        lo, hi = v.copy(), v.copy()
    return clusters


def point_sensitivities(
    points: Sequence[CongestionPoint],
    sensitivities: InjectionSensitivities,
    elements: Sequence[str],
    *,
    intervals: Sequence[int] | None = None,
) -> PointSensitivities:
    """The min and max sensitivity of each point's nodes to each element, per state (see :class:`PointSensitivities`).

    ``intervals``: the interval index of each state of ``sensitivities``; by default state ``s``
    is interval ``s``, and a single state stands for every interval.
    """
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise InputError("point sensitivities: a congestion point id is used twice")
    if intervals is None:
        mapping: tuple[int, ...] | None = None if sensitivities.states == 1 else tuple(range(sensitivities.states))
    else:
        mapping = tuple(int(i) for i in intervals)
        if len(mapping) != sensitivities.states or len(set(mapping)) != len(mapping):
            raise InputError(
                f"point sensitivities: {len(mapping)} intervals for {sensitivities.states} states "
                "(one each, no repeats)"
            )
    col = {n: k for k, n in enumerate(sensitivities.nodes)}
    for cp in points:
        for n in cp.nodes:
            if n not in col:
                raise InputError(f"point sensitivities: congestion point {cp.id}: no sensitivities for node {n!r}")
    per_element = [sensitivities.of(e) for e in elements]  # (S, K) each
    s_count = sensitivities.states
    low = np.zeros((s_count, len(points), len(elements)))
    high = np.zeros_like(low)
    for p, point in enumerate(points):
        rows = [col[n] for n in point.nodes]
        for e, values in enumerate(per_element):
            low[:, p, e] = values[:, rows].min(axis=1)
            high[:, p, e] = values[:, rows].max(axis=1)
    return PointSensitivities(tuple(ids), tuple(elements), mapping, low, high)


def _relief_range(sens: PointSensitivities, point: str, need: FlexNeed) -> tuple[float, float]:
    """``(min, max)`` relief per W more consumption at the point's nodes (relief: the value moved off its limit)."""
    lo, hi = sens.bounds(point, need.element, need.interval)
    return (-hi, -lo) if need.direction == "high" else (lo, hi)


def point_sensitivity(sensitivities: PointSensitivities, point: str, need: FlexNeed) -> float:
    """Relief of ``need`` per W of consumption change at ``point``: the worst case of its nodes (module doc, step 2).

    Positive: more consumption relieves; negative: less consumption relieves (an option's relief
    is this times its power); zero when the nodes disagree in sign or have no effect.
    """
    r_lo, r_hi = _relief_range(sensitivities, point, need)
    if r_lo > 0:
        return r_lo
    if r_hi < 0:
        return r_hi
    return 0.0


# -- the problem, shared by the MILP, the exhaustive search and the ranking --------------------------------------
@dataclass(frozen=True)
class _Problem:
    needs: tuple[FlexNeed, ...]
    options: tuple[tuple[FlexOffer, FlexOption], ...]
    effect: FloatArray  # (needs, options): worst-case relief credited
    harm: FloatArray  # (headrooms, options): worst-case move toward the limit
    room: FloatArray
    touches: npt.NDArray[np.bool_]  # (needs, options): the option has power in the need's interval


def _problem(
    needs: Sequence[FlexNeed],
    offers: Sequence[FlexOffer],
    sens: PointSensitivities,
    horizon: int | None,
    headroom: Sequence[Headroom],
) -> _Problem:
    ids = [o.id for o in offers]
    seen: set[str] = set()
    for oid in ids:
        if oid in seen:
            raise InputError(f"merit order: offer id {oid!r} is used twice")
        seen.add(oid)
    keys = [(n.element, n.interval) for n in needs]
    if len(set(keys)) != len(keys):
        raise InputError("merit order: a need (element, interval) is listed twice")
    if horizon is None:
        if sens.intervals is not None:
            horizon = max(sens.intervals) + 1
        else:
            horizon = max((n.interval for n in needs), default=-1) + 1
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise InputError(f"merit order: horizon must be a number of intervals >= 1, got {horizon!r}")
    for n in needs:
        if n.interval >= horizon:
            raise InputError(
                f"merit order: need {n.element}@{n.interval} lies outside the horizon of {horizon} intervals"
            )
    for limit in headroom:
        if limit.interval >= horizon:
            raise InputError(f"merit order: headroom {limit.element}@{limit.interval} lies outside the horizon")
    known_points = set(sens.points)
    pairs: list[tuple[FlexOffer, FlexOption]] = []
    for offer in offers:
        if offer.congestion_point not in known_points:
            raise InputError(f"merit order: offer {offer.id}: unknown congestion point {offer.congestion_point!r}")
        for option in offer.options:
            if option.intervals.stop > horizon:
                raise InputError(
                    f"merit order: offer {offer.id} option {option.reference}: intervals {option.first}.."
                    f"{option.intervals.stop - 1} lie outside the horizon of {horizon} intervals"
                )
            pairs.append((offer, option))
    effect = np.zeros((len(needs), len(pairs)))
    touches = np.zeros((len(needs), len(pairs)), dtype=bool)
    harm = np.zeros((len(headroom), len(pairs)))
    for j, (offer, option) in enumerate(pairs):
        cp = offer.congestion_point
        for i, need in enumerate(needs):
            if need.interval not in option.intervals:
                continue
            p = option.power_w[need.interval - option.first]
            touches[i, j] = p != 0
            r_lo, r_hi = _relief_range(sens, cp, need)
            effect[i, j] = min(r_lo * p, r_hi * p)
        for h, room in enumerate(headroom):
            if room.interval not in option.intervals:
                continue
            p = option.power_w[room.interval - option.first]
            lo, hi = sens.bounds(cp, room.element, room.interval)
            toward = (lo * p, hi * p) if room.direction == "high" else (-lo * p, -hi * p)
            harm[h, j] = max(toward)
    return _Problem(
        tuple(needs),
        tuple(pairs),
        effect,
        harm,
        np.array([h.room for h in headroom], dtype=np.float64),
        touches,
    )


def _eligible(problem: _Problem) -> tuple[npt.NDArray[np.bool_], list[Refusal]]:
    """Options that relieve at least one need they touch; the rest with their reasons."""
    excess = np.array([n.excess for n in problem.needs], dtype=np.float64)
    relieves = problem.effect > RELIEF_EPS * excess[:, None] if excess.size else problem.effect[:0]
    ok: npt.NDArray[np.bool_] = (
        np.asarray(relieves.any(axis=0), dtype=bool) if excess.size else np.zeros(len(problem.options), dtype=bool)
    )
    refused: list[Refusal] = []
    for j in np.flatnonzero(~ok):
        offer, option = problem.options[j]
        if not problem.touches[:, j].any():
            reason = "no power in any interval with a need"
        else:
            reason = "does not relieve any need it touches (wrong sign, or no effect at its congestion point)"
        refused.append(Refusal(offer.id, option.reference, reason))
    return ok, refused


def _outcome(
    problem: _Problem, chosen: Sequence[int], refused: Sequence[Refusal], solve_s: float, method: str
) -> Selection:
    relief = problem.effect[:, list(chosen)].sum(axis=1) if chosen else np.zeros(len(problem.needs))
    needs = tuple(
        NeedOutcome(
            need,
            float(relief[i]),
            bool(relief[i] >= need.excess * (1 - MET_TOL)),
            float(max(0.0, need.excess - relief[i])),
        )
        for i, need in enumerate(problem.needs)
    )
    bought = []
    for j in chosen:
        offer, option = problem.options[j]
        credited = {
            f"{n.element}@{n.interval}": float(problem.effect[i, j])
            for i, n in enumerate(problem.needs)
            if problem.touches[i, j]
        }
        bought.append(
            Purchase(offer.id, offer.aggregator, offer.congestion_point, option.reference, option.price, credited)
        )
    return Selection(
        tuple(bought),
        float(sum(p.price for p in bought)),
        needs,
        tuple(refused),
        solve_s,
        method,
    )


# -- selection ----------------------------------------------------------------------------------------------
def select_offers(
    needs: Sequence[FlexNeed],
    offers: Sequence[FlexOffer],
    sensitivities: PointSensitivities,
    *,
    horizon: int | None = None,
    headroom: Sequence[Headroom] = (),
    time_limit_s: float = 30.0,
) -> Selection:
    """The cheapest set of options (at most one per offer) that removes every need's excess (module docstring, step 3).

    ``horizon``: the number of intervals of the round (default: those the sensitivities cover, or
    up to the last need); an option outside it, an offer at an unknown congestion point, or an
    offer id used twice raise :class:`~opendso.errors.InputError`. ``headroom``: other monitored
    elements that the options bought must not push past their limits. When not every need can
    be met, the set meeting the most needs is bought, the cheapest among those. A solver that
    fails or runs out of time without a solution raises :class:`~opendso.errors.CalculationError`.
    """
    t0 = time.perf_counter()
    problem = _problem(needs, offers, sensitivities, horizon, headroom)
    ok, refused = _eligible(problem)
    columns = np.flatnonzero(ok)
    if not problem.needs or not columns.size:
        return _outcome(problem, [], refused, time.perf_counter() - t0, "milp")
    excess = np.array([n.excess for n in problem.needs], dtype=np.float64)
    a_need = problem.effect[:, columns] / excess[:, None]  # rows scaled to 1 = the need's excess
    price = np.array([problem.options[j][1].price for j in columns], dtype=np.float64)
    offer_of = [problem.options[j][0].id for j in columns]
    groups = sorted(set(offer_of))
    a_offer = np.zeros((len(groups), columns.size))
    for c, oid in enumerate(offer_of):
        a_offer[groups.index(oid), c] = 1.0
    a_room = problem.harm[:, columns]
    n_x, n_need = columns.size, len(problem.needs)
    inf = math.inf
    # 1) every need met, cheapest
    a = np.vstack([a_need, a_offer, a_room])
    lo = np.concatenate([np.ones(n_need), np.full(len(groups), -inf), np.full(a_room.shape[0], -inf)])
    hi = np.concatenate([np.full(n_need, inf), np.ones(len(groups)), problem.room])
    x = _milp(price, a, lo, hi, np.zeros(n_x), np.ones(n_x), np.ones(n_x, bool), time_limit_s)
    method = "milp"
    if x is None:
        # 2) the most needs met: z_i = 1 when need i is met; a_need @ x - z >= 0
        a2 = np.vstack(
            [
                np.hstack([a_need, -np.eye(n_need)]),
                np.hstack([a_offer, np.zeros((len(groups), n_need))]),
                np.hstack([a_room, np.zeros((a_room.shape[0], n_need))]),
            ]
        )
        lo2 = np.concatenate([np.zeros(n_need), lo[n_need:]])
        ones = np.ones(n_x + n_need)
        cost2 = np.concatenate([np.zeros(n_x), -np.ones(n_need)])
        xz = _milp(cost2, a2, lo2, hi, np.zeros(n_x + n_need), ones, ones.astype(bool), time_limit_s)
        if xz is None:
            raise CalculationError("merit order: the solver found no selection (not even buying nothing)")
        best = round(float(xz[n_x:].sum()))
        # 3) the cheapest among the sets meeting that many
        a3 = np.vstack([a2, np.concatenate([np.zeros(n_x), np.ones(n_need)])[None, :]])
        lo3 = np.concatenate([lo2, [best - 0.5]])
        hi3 = np.concatenate([hi, [inf]])
        cost3 = np.concatenate([price, np.zeros(n_need)])
        xz = _milp(cost3, a3, lo3, hi3, np.zeros(n_x + n_need), ones, ones.astype(bool), time_limit_s)
        if xz is None:
            raise CalculationError("merit order: the solver found no cheapest set for the needs it can meet")
        x = xz[:n_x]
        method = "milp-partial"
    chosen = [int(columns[c]) for c in np.flatnonzero(x > 0.5)]
    selection = _outcome(problem, chosen, refused, time.perf_counter() - t0, method)
    log.info(
        "event=flex_selection needs=%d options=%d eligible=%d bought=%d cost=%.2f met=%d solve_ms=%.1f",
        n_need,
        len(problem.options),
        n_x,
        len(chosen),
        selection.total_cost,
        sum(n.met for n in selection.needs),
        selection.solve_s * 1e3,
    )
    return selection


def _milp(
    cost: FloatArray,
    a: FloatArray,
    row_lo: FloatArray,
    row_hi: FloatArray,
    col_lo: FloatArray,
    col_hi: FloatArray,
    integer: npt.NDArray[np.bool_],
    time_limit_s: float,
) -> FloatArray | None:
    """Minimise ``cost @ x`` s.t. ``row_lo <= a @ x <= row_hi``; None when infeasible. HiGHS, silent.

    Unlike :func:`opendso.calc.vvo._highs_milp` (None for any failure), infeasible is told apart
    from a solver failure here: infeasible sends the selection to its most-needs-met rule, a
    failure is a :class:`~opendso.errors.CalculationError`.
    """
    import highspy

    hinf = highspy.kHighsInf
    csc = csc_matrix(a)
    lp = highspy.HighsLp()
    lp.num_col_ = int(a.shape[1])
    lp.num_row_ = int(a.shape[0])
    lp.col_cost_ = cost
    lp.col_lower_ = col_lo
    lp.col_upper_ = col_hi
    lp.row_lower_ = np.where(np.isinf(row_lo), -hinf, row_lo)
    lp.row_upper_ = np.where(np.isinf(row_hi), hinf, row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr
    lp.a_matrix_.index_ = csc.indices
    lp.a_matrix_.value_ = csc.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", 1e-9)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return None
    x = np.asarray(h.getSolution().col_value, dtype=float)
    if status == highspy.HighsModelStatus.kOptimal and x.size == cost.size:
        return x
    if status == highspy.HighsModelStatus.kTimeLimit and x.size == cost.size and h.getInfo().primal_solution_status:
        log.warning("event=flex_selection_time_limit seconds=%.1f", time_limit_s)
        return x
    raise CalculationError(f"merit order: HiGHS ended with {h.modelStatusToString(status)}")


def exhaustive_selection(
    needs: Sequence[FlexNeed],
    offers: Sequence[FlexOffer],
    sensitivities: PointSensitivities,
    *,
    horizon: int | None = None,
    headroom: Sequence[Headroom] = (),
    max_combinations: int = 2_000_000,
) -> Selection:
    """The same selection by trying every combination (no option or one per offer of those that relieve a need).

    The check of :func:`select_offers` on small cases: same rules (an option that relieves no need
    is never bought, even where it would give room on a monitored element; most needs met, then
    cheapest), no solver. More than ``max_combinations`` combinations raise
    :class:`~opendso.errors.InputError`.
    """
    t0 = time.perf_counter()
    problem = _problem(needs, offers, sensitivities, horizon, headroom)
    ok, refused = _eligible(problem)
    by_offer: dict[str, list[int]] = {}
    for j, (offer, _) in enumerate(problem.options):
        if ok[j]:  # the rule, not a shortcut: an option that relieves no need is never bought, not even for room
            by_offer.setdefault(offer.id, []).append(j)
    sizes = [len(v) + 1 for v in by_offer.values()]
    if math.prod(sizes) > max_combinations:
        raise InputError(f"exhaustive selection: {math.prod(sizes)} combinations exceed {max_combinations}")
    excess = np.array([n.excess for n in problem.needs], dtype=np.float64)
    price = np.array([o.price for _, o in problem.options], dtype=np.float64)
    best_key: tuple[int, float] | None = None
    best: list[int] = []
    for combo in itertools.product(*[[-1, *v] for v in by_offer.values()]):
        chosen = [j for j in combo if j >= 0]
        if problem.harm.size and np.any(problem.harm[:, chosen].sum(axis=1) > problem.room + 1e-12):
            continue
        relief = problem.effect[:, chosen].sum(axis=1)
        met = int(np.count_nonzero(relief >= excess * (1 - MET_TOL)))
        key = (-met, float(price[chosen].sum()))
        if best_key is None or key[0] < best_key[0] or (key[0] == best_key[0] and key[1] < best_key[1] - 1e-12):
            best_key, best = key, chosen
    return _outcome(problem, best, refused, time.perf_counter() - t0, "exhaustive")


def merit_order(
    needs: Sequence[FlexNeed],
    offers: Sequence[FlexOffer],
    sensitivities: PointSensitivities,
    *,
    horizon: int | None = None,
) -> tuple[MeritRank, ...]:
    """Every option ranked by price per unit of relief, cheapest first (for display; :func:`select_offers` buys).

    An option's relief is the sum over needs of the relief it is credited with, each capped at the
    need's excess and taken as a share of it (so loading and voltage needs add up); an option
    that relieves nothing ranks last with an infinite price per relief.
    """
    problem = _problem(needs, offers, sensitivities, horizon, ())
    excess = np.array([n.excess for n in problem.needs], dtype=np.float64)
    share = (np.clip(problem.effect, 0.0, excess[:, None]) / excess[:, None]).sum(axis=0) if excess.size else None
    ranks = []
    for j, (offer, option) in enumerate(problem.options):
        s = float(share[j]) if share is not None else 0.0
        ppr = option.price / s if s > RELIEF_EPS else math.inf
        ranks.append(MeritRank(offer.id, option.reference, offer.congestion_point, option.price, s, ppr))
    return tuple(sorted(ranks, key=lambda r: (r.price_per_relief, r.price, r.offer_id, r.option)))
