"""The flexibility desk: one day-ahead UFTP round, from the congestion forecast to the FlexSettlement.

The parts exist elsewhere; the desk runs them in order for one grid and keeps the round's record:

1. **Needs** (:func:`needs_from_forecast`): every (element, interval) of a
   :class:`~opendso.planning.congestion.CongestionForecast` whose violation probability reaches
   ``threshold`` becomes a :class:`~opendso.markets.model.FlexNeed` (excess: the forecast's mean
   excess in the element's unit; direction from the median against the limits; probability carried).
2. **Plan** (:meth:`FlexibilityDesk.plan`): congestion points over the nodes of the registry's
   aggregated DER (:func:`~opendso.markets.merit.congestion_points`), sensitivities around the
   median state of each needed interval (:func:`~opendso.calc.sensitivity.injection_sensitivities`
   with the forecast's median injections, :func:`~opendso.planning.congestion.scenario_injections`),
   and per point and interval the W to ask: ``(excess + margin) / s`` with ``s`` the point's
   worst-case sensitivity (:func:`~opendso.markets.merit.point_sensitivity`, relief per W of
   consumption), the largest over the needs of that interval, with its sign. A point is not asked
   when its ``|s|`` is below ``min_share`` of the best point's for that need (it would take far more
   flexibility for the same relief, and a zero or wrong-sign effect relieves nothing), and the ask is
   capped at what its DER can shift in that direction: more consumption (less export) up to the
   assets' ``export_kw``, less consumption up to their ``import_kw``.
3. **Procure** (:meth:`FlexibilityDesk.procure`): the points go to the CRO (DSOPortfolioUpdate), the
   CRO is asked which AGRs represent them (DSOPortfolioQuery), FlexRequests go out (Shapeshifter
   specification, use cases 3.1/3.3, 3.7), FlexOffers are awaited until every request has been
   answered with an offer or the deadline passes (3.8), the offers at the round's points are selected
   by :func:`~opendso.markets.merit.select_offers` (network-aware MILP: an option that does not
   relieve a need is never bought) and FlexOrders are sent for the options bought (3.10).
4. **Activation** (:meth:`FlexibilityDesk.activation_requests`): per interval, each accepted order's
   change of consumption is shared over the aggregator's DER at the point pro rata to their available
   output and becomes an export limit ``limit = available - share`` (UFTP sign: a positive ordered
   change is more consumption, i.e. that much less export), as
   :class:`~opendso.operations.setpoints.SetpointRequest` from :attr:`SetpointSource.MARKET`. The desk
   never writes a point: the caller submits the requests to the set-point arbiter each interval and
   releases :meth:`~FlexibilityDesk.release_points` at the end.
5. **Verify and settle** (:meth:`FlexibilityDesk.verify_and_settle`): per order a baseline
   (:func:`~opendso.markets.baselines.compute_baseline` with the product's spec, from the history of
   the participant ``<aggregator>@<congestion point>``), delivery verified
   (:func:`~opendso.markets.verification.verify_delivery` inside
   :func:`~opendso.markets.settlement.settle`, penalties from the :class:`FlexContract`), and one
   FlexSettlement per aggregator (3.11); each order's Accepted/Disputed answer is recorded.

The round's JSON (:meth:`FlexibilityDesk.to_json`), the timeline the flexibility page draws::

    {
      "grid": str, "start": ISO time of interval 0, "horizon": int, "margin": float,
      "time": [ISO start of each interval],
      "needs": [{"element", "interval", "time", "excess", "probability", "direction"}],
      "congestion_points": [{"id", "name", "nodes", "feeder", "aggregators": [domain]}],
      "requests": [{"congestion_point", "interval", "time", "requested_w", "element", "sensitivity",
                    "aggregators": [domain]}],                       # W, UFTP sign
      "offers": [{"id", "aggregator", "congestion_point", "currency",
                  "options": [{"reference", "first", "power_w", "price",
                               "status": "bought" | "not bought" | "refused", "reason": str | null}]}],
      "orders": [{"order_reference", "aggregator", "congestion_point", "offer_id", "option",
                  "price", "currency", "status": "sent" | "accepted" | "rejected", "reason"}],
      "selection": {"method", "total_cost", "all_met", "needs_met": int, "needs_unmet": int,
                    "needs": [{need..., "relief", "met", "remaining"}]} | null,
      "delivery": [{"order_reference", "aggregator", "congestion_point",
                    "intervals": [{"interval", "time", "ordered_w", "baseline_w", "measured_w",
                                   "delivered_w", "delivered_low_w", "delivered_high_w"}]}],
      "settlement": {"orders": [UFTP FlexOrderSettlement as OrderSettlement.to_json(), plus
                                "disposition": "Accepted" | "Disputed" | null, "dispute_reason"],
                     "reports": [AggregatorReport.to_json()],
                     "messages": [{"aggregator", "message_id", "status"}]} | null
    }
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from opendso.calc.sensitivity import injection_sensitivities
from opendso.errors import InputError, RemoteError
from opendso.grid.model import Grid
from opendso.markets.baselines import BaselineSpec, compute_baseline
from opendso.markets.merit import (
    PointSensitivities,
    Selection,
    congestion_points,
    point_sensitivities,
    point_sensitivity,
    select_offers,
)
from opendso.markets.model import ISP, CongestionPoint, FlexNeed, FlexOffer, check_aware
from opendso.markets.settlement import FlexContract, OrderDelivery, Settlement, settle
from opendso.markets.uftp.dso import FlexProcurement
from opendso.operations.setpoints import SetpointRequest, SetpointSource
from opendso.planning.congestion import CongestionForecast, scenario_injections
from opendso.planning.model import QuantileForecast

if TYPE_CHECKING:
    from opendso.der.model import DerAsset
    from opendso.der.registry import DerRegistry

__all__ = ["FlexPlan", "FlexRound", "FlexibilityDesk", "PointRequest", "needs_from_forecast", "participant"]

log = logging.getLogger(__name__)

#: The quantity of an export-limit point.
P_LIMIT = "p_limit"


def _iso(time: datetime) -> str:
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fraction(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{what}: {value!r} is not a number")
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{what}: must be 0..1, got {value!r}")
    return float(value)


def participant(aggregator: str, congestion_point: str) -> str:
    """The baseline and measurement column of ``aggregator``'s connections at ``congestion_point``."""
    return f"{aggregator}@{congestion_point}"


# -- needs ----------------------------------------------------------------------------------------------------
def needs_from_forecast(
    forecast: CongestionForecast, *, threshold: float = 0.5, elements: Sequence[str] | None = None
) -> tuple[FlexNeed, ...]:
    """Every (element, interval) whose violation probability is at least ``threshold``, as a FlexNeed.

    ``elements``: only these (``line:NAME``, ``transformer:NAME``, ``node:NAME``; one the forecast
    does not judge is an :class:`InputError`). Excess: the forecast's mean excess (loading fraction
    of the rating, or p.u.); direction: a branch ``high``; a node ``high`` when its median voltage is
    above the middle of the band, else ``low``. Cells without a finite positive excess are left out.
    """
    threshold = _fraction("flex needs: threshold", threshold)
    keys = [f"{k}:{n}" for k, n in zip(forecast.kinds, forecast.names, strict=True)]
    rows = list(range(len(keys)))
    if elements is not None:
        where = {k: e for e, k in enumerate(keys)}
        unknown = [e for e in elements if e not in where]
        if unknown:
            raise InputError(f"flex needs: the forecast of {forecast.grid} has no element {unknown[0]!r}")
        rows = [where[e] for e in dict.fromkeys(elements)]
    times = [pd.Timestamp(t).tz_localize("UTC").to_pydatetime() for t in forecast.time.astype("datetime64[s]").tolist()]
    middle = 0.5 * (forecast.limits.u_min_pu + forecast.limits.u_max_pu)
    needs: list[FlexNeed] = []
    for e in rows:
        for t in np.flatnonzero(forecast.probability[e] >= threshold).tolist():
            excess = float(forecast.excess[e, t])
            if not math.isfinite(excess) or excess <= 0:
                continue
            if forecast.kinds[e] == "node":
                median = float(forecast.median[e, t])
                direction = "high" if math.isfinite(median) and median > middle else "low"
            else:
                direction = "high"
            needs.append(
                FlexNeed(
                    element=keys[e],
                    interval=int(t),
                    time=times[t],
                    excess=excess,
                    probability=float(forecast.probability[e, t]),
                    direction=direction,
                )
            )
    return tuple(needs)


# -- the plan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PointRequest:
    """The W asked at one congestion point in one interval (UFTP sign) and the need that asked most."""

    congestion_point: str
    interval: int
    time: datetime
    requested_w: float
    element: str
    sensitivity: float

    def to_json(self) -> dict[str, Any]:
        """The request as JSON."""
        return {
            "congestion_point": self.congestion_point,
            "interval": self.interval,
            "time": _iso(self.time),
            "requested_w": self.requested_w,
            "element": self.element,
            "sensitivity": self.sensitivity,
        }


@dataclass(frozen=True)
class FlexPlan:
    """The needs, the congestion points, their sensitivities and the W to ask per point and interval."""

    start: datetime
    horizon: int
    needs: tuple[FlexNeed, ...]
    points: tuple[CongestionPoint, ...]
    sensitivities: PointSensitivities | None
    requests: tuple[PointRequest, ...]


@dataclass
class FlexRound:
    """The record of one round: the plan, the offers considered, the selection, orders and settlement.

    ``order_refs`` / ``request_ids``: the OrderReferences and FlexRequest MessageIDs of this round;
    ``settlement_ids``: aggregator -> the MessageID of its FlexSettlement; ``activated``: the
    export-limit points the round's activations have limited.
    """

    plan: FlexPlan
    offers: list[FlexOffer] = field(default_factory=list)
    selection: Selection | None = None
    order_refs: tuple[str, ...] = ()
    request_ids: tuple[str, ...] = ()
    settlement: Settlement | None = None
    settlement_ids: dict[str, str] = field(default_factory=dict)
    activated: set[str] = field(default_factory=set)


class FlexibilityDesk:
    """One grid's day-ahead flexibility round over UFTP (module docstring): plan, procure, activate, settle.

    ``registry``: the DER registry (assets with an ``aggregator`` are the market's); ``procurement``:
    the DSO side of UFTP, started and registered; ``cro``: the CRO's domain; ``contract``: the terms
    orders are settled under (its ``time_zone`` must be the market's, as the ISP numbers of the
    FlexSettlement are counted there); ``baseline``: the product's baseline spec. ``point_prefix``:
    the entity-address prefix of the congestion points (UFTP EA1, ``ea1.<yyyy-mm>.<reversed domain>:<name>``);
    ``margin``: added to each need's excess when asking and selecting (element's unit);
    ``min_share``: see the module docstring; ``deadline_s``: the longest any wait for an answer lasts.
    """

    def __init__(
        self,
        grid: Grid,
        registry: DerRegistry,
        procurement: FlexProcurement,
        *,
        cro: str,
        contract: FlexContract,
        baseline: BaselineSpec,
        point_prefix: str | None = None,
        margin: float = 0.0,
        min_share: float = 0.1,
        deadline_s: float = 10.0,
        market_time_zone: str = "Europe/Amsterdam",
    ) -> None:
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
            raise InputError(f"flex desk: margin must be a number >= 0, got {margin!r}")
        self.min_share = _fraction("flex desk: min_share", min_share)
        if not (isinstance(deadline_s, int | float) and math.isfinite(deadline_s) and deadline_s > 0):
            raise InputError(f"flex desk: deadline_s must be > 0, got {deadline_s!r}")
        self.grid = grid
        self.registry = registry
        self.procurement = procurement
        self.cro = cro
        self.contract = contract
        self.baseline = baseline
        self.margin = float(margin)
        self.deadline_s = float(deadline_s)
        try:
            self.market_tz = ZoneInfo(market_time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"flex desk: market time zone {market_time_zone!r} is not an IANA time zone") from None
        reversed_domain = ".".join(reversed(procurement.domain.split(".")))
        self.point_prefix = point_prefix or f"ea1.2020-01.{reversed_domain}:cp"
        self._round: FlexRound | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def round(self) -> FlexRound:
        """The current round; :class:`InputError` before :meth:`plan`."""
        if self._round is None:
            raise InputError("flex desk: no round planned yet")
        return self._round

    def _market_assets(self) -> list[DerAsset]:
        return [a for a, _ in self.registry.assets() if a.aggregator]

    def _check_elements(self, needs: Sequence[FlexNeed]) -> None:
        known: dict[str, set[str]] = {}
        for need in needs:
            kind, _, name = need.element.partition(":")
            if kind not in known:
                known[kind] = {str(n) for n in self.grid.names_of(kind).tolist()} if self.grid.count(kind) else set()
            if name not in known[kind]:
                raise InputError(f"flex desk: need at {need.element}: grid {self.grid.name} has no {kind} {name!r}")

    def _limit_point(self, asset: DerAsset, generators: Mapping[str, list[str]]) -> str | None:
        address = asset.control.address
        if address:
            return address if address.endswith(f"/{P_LIMIT}") else f"{address}/{P_LIMIT}"
        at = generators.get(asset.node, [])
        return f"{at[0]}/{P_LIMIT}" if len(at) == 1 else None

    def _generators_by_node(self) -> dict[str, list[str]]:
        if not self.grid.count("sym_gen"):
            return {}
        node_name = {
            int(i): str(n)
            for i, n in zip(
                self.grid.component("node")["id"].tolist(), self.grid.names_of("node").tolist(), strict=True
            )
        }
        out: dict[str, list[str]] = {}
        for name, node in zip(
            self.grid.names_of("sym_gen").tolist(), self.grid.component("sym_gen")["node"].tolist(), strict=True
        ):
            out.setdefault(node_name[int(node)], []).append(str(name))
        return out

    # ------------------------------------------------------------------ 2. plan
    def plan(
        self,
        source: CongestionForecast | Sequence[FlexNeed],
        *,
        quantiles: QuantileForecast | None = None,
        threshold: float = 0.5,
        horizon: int | None = None,
    ) -> FlexPlan:
        """Plan a round (module docstring, step 2) from a congestion forecast or from needs; the plan.

        ``quantiles``: the load/generation forecast the congestion forecast was made from; its
        median gives the state the sensitivities are taken around (without it, the grid's input).
        Its first time must be interval 0 of the needs. ``horizon``: intervals of the round (default:
        the forecast's, or up to the last need). A need at an element the grid lacks, needs that do
        not share one start, or a bad threshold is an :class:`InputError`.
        """
        threshold = _fraction("flex desk: threshold", threshold)
        if isinstance(source, CongestionForecast):
            needs = needs_from_forecast(source, threshold=threshold)
            first = pd.Timestamp(source.time[0]).tz_localize("UTC").to_pydatetime()
            horizon = horizon if horizon is not None else source.steps
        else:
            needs = tuple(source)
            first = None
        for need in needs:
            if not isinstance(need, FlexNeed):
                raise InputError(f"flex desk: needs must be FlexNeed records, got {type(need).__name__}")
        self._check_elements(needs)
        origins = {n.time - n.interval * ISP for n in needs}
        if len(origins) > 1:
            raise InputError("flex desk: the needs' times and interval indices do not share one start")
        if origins:
            first = origins.pop() if first is None else first
        if first is None:
            if quantiles is None:
                raise InputError("flex desk: no needs and no forecast: the round's start is unknown")
            first = pd.Timestamp(quantiles.time[0]).tz_localize("UTC").to_pydatetime()
        start = check_aware("flex desk start", first)
        last = max((n.interval for n in needs), default=-1) + 1
        horizon = horizon if horizon is not None else max(last, 1)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < max(last, 1):
            raise InputError(f"flex desk: horizon must be >= {max(last, 1)} intervals, got {horizon!r}")
        if quantiles is not None:
            q0 = pd.Timestamp(quantiles.time[0]).tz_localize("UTC").to_pydatetime()
            if q0 != start or quantiles.steps < last:
                raise InputError(
                    f"flex desk: the forecast starts {_iso(q0)} with {quantiles.steps} intervals; "
                    f"the needs start {_iso(start)} and reach interval {last - 1}"
                )
        if not needs:
            plan = FlexPlan(start, horizon, (), (), None, ())
            self._round = FlexRound(plan)
            log.info("event=flex_round_planned grid=%s needs=0", self.grid.name)
            return plan
        assets = self._market_assets()
        node_names = [str(n) for n in self.grid.names_of("node").tolist()]
        wanted = {a.node for a in assets}
        nodes = [n for n in node_names if n in wanted]
        if not nodes:
            raise InputError(f"flex desk: the registry of {self.grid.name} has no aggregated DER")
        intervals = sorted({n.interval for n in needs})
        update: dict[str, dict[str, Any]] | None = None
        if quantiles is not None:
            full = scenario_injections(self.grid, quantiles, quantiles.median()[None])
            update = {c: {a: v[intervals] for a, v in cols.items()} for c, cols in full.items()}
        sens = injection_sensitivities(self.grid, nodes, update=update)
        watched = sorted({n.element for n in needs})
        points = congestion_points(self.grid, watched, nodes=nodes, sensitivities=sens, prefix=self.point_prefix)
        per_point = point_sensitivities(points, sens, watched, intervals=intervals if update is not None else None)
        requests = self._asks(needs, points, per_point, assets)
        plan = FlexPlan(start, horizon, needs, points, per_point, requests)
        self._round = FlexRound(plan)
        log.info(
            "event=flex_round_planned grid=%s needs=%d points=%d requests=%d",
            self.grid.name,
            len(needs),
            len(points),
            len(requests),
        )
        return plan

    def _target(self, need: FlexNeed) -> FlexNeed:
        return replace(need, excess=need.excess + self.margin) if self.margin else need

    def _asks(
        self,
        needs: Sequence[FlexNeed],
        points: Sequence[CongestionPoint],
        sens: PointSensitivities,
        assets: Sequence[DerAsset],
    ) -> tuple[PointRequest, ...]:
        up: dict[str, float] = {}
        down: dict[str, float] = {}
        for p in points:
            at = [a for a in assets if a.node in p.nodes]
            up[p.id] = 1e3 * sum(a.export_kw for a in at)
            down[p.id] = 1e3 * sum(a.import_kw for a in at)
        best: dict[tuple[str, int], PointRequest] = {}
        for need in needs:
            target = self._target(need)
            effect = {p.id: point_sensitivity(sens, p.id, need) for p in points}
            strongest = max((abs(s) for s in effect.values()), default=0.0)
            for p in points:
                s = effect[p.id]
                if s == 0.0 or abs(s) < self.min_share * strongest:
                    continue
                w = target.excess / s
                cap = up[p.id] if w > 0 else down[p.id]
                if cap <= 0:
                    continue
                w = math.copysign(min(abs(w), cap), w)
                key = (p.id, need.interval)
                before = best.get(key)
                if before is not None and (before.requested_w > 0) != (w > 0):
                    log.warning("event=flex_ask_conflict point=%s interval=%d", p.id, need.interval)
                if before is None or abs(w) > abs(before.requested_w):
                    best[key] = PointRequest(p.id, need.interval, need.time, float(w), need.element, float(s))
        return tuple(best[k] for k in sorted(best))

    # ------------------------------------------------------------------ 3. procure
    def _count(self, kind: str) -> int:
        return sum(1 for e in self.procurement.log.entries() if e.kind == kind and e.direction == "in")

    def publish(self, *, start: date) -> None:
        """Publish the plan's congestion points to the CRO and ask it who represents them; wait for both answers."""
        plan = self.round.plan
        if not plan.points:
            return
        before = self._count("DsoPortfolioUpdateResponse")
        self.procurement.publish_congestion_points(plan.points, cro=self.cro, start=start)
        if not self.procurement.wait_for(lambda d: self._count("DsoPortfolioUpdateResponse") > before, self.deadline_s):
            raise RemoteError(f"flex desk: the CRO {self.cro} did not answer the portfolio update in time")
        periods = sorted({r.time.astimezone(self.market_tz).date() for r in plan.requests})
        asked = {r.congestion_point for r in plan.requests}
        before = self._count("DsoPortfolioQueryResponse")
        for point in sorted(asked):
            for period in periods:
                self.procurement.query_congestion_point(point, cro=self.cro, period=period)
        expected = before + len(asked) * len(periods)
        if not self.procurement.wait_for(
            lambda d: self._count("DsoPortfolioQueryResponse") >= expected, self.deadline_s
        ):
            raise RemoteError(f"flex desk: the CRO {self.cro} did not answer the portfolio queries in time")

    def procure(self, *, expires: datetime, start: date | None = None, over_request: float = 2.0) -> Selection | None:
        """Request, await offers, select network-aware and order (module docstring, step 3); the selection.

        ``expires``: the FlexRequests' ExpirationDateTime; ``start``: the first day of the points'
        registration at the CRO (default: the day of the first request, in the market's zone).
        Without requests nothing is sent and None is returned. Points are published first unless
        :meth:`publish` was called for this round.
        """
        rnd = self.round
        plan = rnd.plan
        expires = check_aware("flex desk: expires", expires)
        if not plan.requests:
            log.info("event=flex_round_nothing_to_request grid=%s", self.grid.name)
            return None
        published = set(self.procurement.published())
        if not {p.id for p in plan.points} <= published:
            first_day = start or min(r.time for r in plan.requests).astimezone(self.market_tz).date()
            self.publish(start=first_day)
        by_need = {(n.element, n.interval): n for n in plan.needs}
        sent: list[str] = []
        for point in sorted({r.congestion_point for r in plan.requests}):
            asks = [r for r in plan.requests if r.congestion_point == point]
            if not self.procurement.aggregators_at(point):
                log.warning("event=flex_no_aggregator point=%s", point)
                continue
            needs = [by_need[(r.element, r.interval)] for r in asks]
            sent.extend(
                self.procurement.request_flex(
                    point, needs, [r.requested_w for r in asks], expires=expires, over_request=over_request
                )
            )
        rnd.request_ids = tuple(sent)
        ids = set(sent)

        def answered(d: FlexProcurement) -> bool:
            requests = [r for r in d.requests() if r.message_id in ids]
            if any(r.answer is None for r in requests):
                return False
            offered = {d.offer_status(o.id).request_id for o in d.open_offers()}
            return all(r.message_id in offered for r in requests if r.answer == "Accepted")

        if not self.procurement.wait_for(answered, self.deadline_s):
            log.warning("event=flex_offers_late requests=%d deadline_s=%.1f", len(sent), self.deadline_s)
        points = {p.id for p in plan.points}
        sens = plan.sensitivities
        if sens is None:  # requests come only from needs with sensitivities: nothing to select with
            return None
        targets = [self._target(n) for n in plan.needs]

        def selector(offers: Sequence[FlexOffer]) -> list[tuple[str, str]]:
            mine = [o for o in offers if o.congestion_point in points]
            mine = [o for o in mine if all(opt.intervals.stop <= plan.horizon for opt in o.options)]
            rnd.offers = list(mine)
            rnd.selection = select_offers(targets, mine, sens, horizon=plan.horizon)
            return [(b.offer_id, b.option) for b in rnd.selection.bought]

        rnd.order_refs = self.procurement.place_orders(selector)
        refs = set(rnd.order_refs)
        self.procurement.wait_for(
            lambda d: all(o.status != "sent" for o in d.orders() if o.order_reference in refs), self.deadline_s
        )
        selection = rnd.selection
        log.info(
            "event=flex_round_procured grid=%s requests=%d offers=%d orders=%d cost=%.2f",
            self.grid.name,
            len(sent),
            len(rnd.offers),
            len(refs),
            selection.total_cost if selection else 0.0,
        )
        return selection

    def _accepted(self) -> list[tuple[Any, FlexOffer]]:
        rnd = self.round
        offers = {o.id: o for o in rnd.offers}
        out = []
        for o in self.procurement.orders():
            if o.order_reference in rnd.order_refs and o.status == "accepted" and o.offer_id in offers:
                out.append((o, offers[o.offer_id]))
        return out

    # ------------------------------------------------------------------ 4. activation
    def activation_requests(self, interval: int, available_w: Mapping[str, float]) -> tuple[SetpointRequest, ...]:
        """The MARKET export limits for ``interval`` (module docstring, step 4), one per DER point.

        ``available_w``: export-limit point -> the DER's available output now (W >= 0). A point the
        round limited before but not in this interval gets a request with no limit (``limit_w``
        None); the caller submits every request to the set-point arbiter.
        """
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise InputError(f"flex activation: interval must be an index >= 0, got {interval!r}")
        generators = self._generators_by_node()
        assets = self._market_assets()
        limits: dict[str, float] = {}
        reasons: dict[str, str] = {}
        for order, offer in self._accepted():
            option = offer.option(order.option_reference)
            if interval not in option.intervals:
                continue
            change = option.power_w[interval - option.first]
            point = next(p for p in self.round.plan.points if p.id == order.congestion_point)
            mine = [(a, self._limit_point(a, generators)) for a in assets if a.aggregator == order.aggregator]
            ders = [(a, pt) for a, pt in mine if a.node in point.nodes and pt is not None and pt in available_w]
            if change <= 0 or not ders:
                if change < 0:
                    log.warning(
                        "event=flex_activation_unsupported order=%s change_w=%.0f", order.order_reference, change
                    )
                continue
            avail = {}
            for _, pt in ders:
                assert pt is not None
                value = float(available_w[pt])
                if not math.isfinite(value) or value < 0:
                    raise InputError(f"flex activation: available output of {pt} must be >= 0 W, got {value!r}")
                avail[pt] = limits.get(pt, value)
            total = sum(avail.values())
            for pt, a in avail.items():
                share = change * a / total if total > 0 else change / len(avail)
                limits[pt] = max(0.0, a - share)
                reasons[pt] = f"UFTP order {order.order_reference} interval {interval}"
        out = [SetpointRequest(SetpointSource.MARKET, pt, limits[pt], reasons[pt]) for pt in sorted(limits)]
        for pt in sorted(self.round.activated - set(limits)):
            out.append(SetpointRequest(SetpointSource.MARKET, pt, None, f"no UFTP order in interval {interval}"))
        self.round.activated |= set(limits)
        return tuple(out)

    def release_points(self) -> tuple[str, ...]:
        """The export-limit points the round's activations touched: release MARKET on each at the end."""
        return tuple(sorted(self.round.activated))

    # ------------------------------------------------------------------ 5. verification and settlement
    def verify_and_settle(self, measured: Mapping[str, Sequence[float]], history: pd.DataFrame) -> Settlement | None:
        """Baseline, verify and settle every accepted order, send the FlexSettlements, record the answers.

        ``measured``: per participant (:func:`participant`) the measured consumption (W, UFTP sign)
        for every interval of the round (index = interval); ``history``: the participants' past
        consumption (timezone-aware index, one column per participant) for the baseline. Returns
        the settlement (None when nothing was ordered).
        """
        rnd = self.round
        accepted = self._accepted()
        if not accepted:
            return None
        start = rnd.plan.start
        deliveries = []
        for order, offer in accepted:
            option = offer.option(order.option_reference)
            who = participant(order.aggregator, order.congestion_point)
            series = measured.get(who)
            if series is None:
                raise InputError(f"flex settlement: no measured values for {who}")
            if len(series) < option.intervals.stop:
                raise InputError(
                    f"flex settlement: {who} has {len(series)} measured intervals, order "
                    f"{order.order_reference} needs {option.intervals.stop}"
                )
            baseline = compute_baseline(
                self.baseline, history, start + option.first * ISP, len(option.power_w), participants=[who]
            )
            deliveries.append(
                OrderDelivery(
                    order_reference=order.order_reference,
                    aggregator=order.aggregator,
                    congestion_point=order.congestion_point,
                    option=option,
                    start=start,
                    measured_w=[float(series[k]) for k in option.intervals],
                    baseline=baseline,
                )
            )
        result = settle(deliveries, self.contract)
        rnd.settlement = result
        for agr in sorted({o.aggregator for o in result.orders}):
            records = [o for o in result.orders if o.aggregator == agr]
            rnd.settlement_ids[agr] = self.procurement.settle(
                agr,
                records,
                period_start=result.period_start,
                period_end=result.period_end,
                currency=result.currency,
            )
        ids = set(rnd.settlement_ids.values())
        self.procurement.wait_for(lambda d: all(d.settlement(i).status != "sent" for i in ids), self.deadline_s)
        log.info("event=flex_round_settled grid=%s orders=%d", self.grid.name, len(result.orders))
        return result

    def dispositions(self) -> dict[str, tuple[str, str | None]]:
        """OrderReference -> (Accepted | Disputed, reason) from the FlexSettlementResponses received."""
        out: dict[str, tuple[str, str | None]] = {}
        for message_id in self.round.settlement_ids.values():
            out.update(self.procurement.settlement(message_id).dispositions)
        return out

    # ------------------------------------------------------------------ the record
    def to_json(self) -> dict[str, Any]:
        """The round as JSON: the timeline the flexibility page draws (schema in the module docstring)."""
        rnd = self.round
        plan = rnd.plan
        times = [plan.start + k * ISP for k in range(plan.horizon)]
        recipients: dict[str, list[str]] = {}
        for r in self.procurement.requests():
            if r.message_id in rnd.request_ids:
                recipients.setdefault(r.congestion_point, []).append(r.aggregator)
        bought = {(b.offer_id, b.option) for b in rnd.selection.bought} if rnd.selection else set()
        refused = {(r.offer_id, r.option): r.reason for r in rnd.selection.refused} if rnd.selection else {}
        offers = []
        for offer in rnd.offers:
            options = []
            for opt in offer.options:
                key = (offer.id, opt.reference)
                status = "bought" if key in bought else "refused" if key in refused else "not bought"
                options.append({**opt.to_json(), "status": status, "reason": refused.get(key)})
            offers.append({**offer.to_json(), "options": options})
        orders = [
            {
                "order_reference": o.order_reference,
                "aggregator": o.aggregator,
                "congestion_point": o.congestion_point,
                "offer_id": o.offer_id,
                "option": o.option_reference,
                "price": o.price,
                "currency": o.currency,
                "status": o.status,
                "reason": o.reason,
            }
            for o in self.procurement.orders()
            if o.order_reference in rnd.order_refs
        ]
        selection = None
        if rnd.selection is not None:
            s = rnd.selection
            selection = {
                "method": s.method,
                "total_cost": s.total_cost,
                "all_met": s.all_met,
                "needs_met": sum(1 for n in s.needs if n.met),
                "needs_unmet": len(s.unmet),
                "needs": [n.to_json() for n in s.needs],
            }
        delivery = []
        settlement = None
        if rnd.settlement is not None:
            dispositions = self.dispositions()
            for o in rnd.settlement.orders:
                v = o.verification
                option = next(
                    offer.option(order.option_reference)
                    for order, offer in self._accepted()
                    if order.order_reference == o.order_reference
                )
                delivery.append(
                    {
                        "order_reference": o.order_reference,
                        "aggregator": o.aggregator,
                        "congestion_point": o.congestion_point,
                        "intervals": [
                            {
                                "interval": k,
                                "time": _iso(times[k]) if k < len(times) else None,
                                "ordered_w": float(v.ordered_w[j, 0]),
                                "baseline_w": float(v.baseline_w[j, 0]),
                                "measured_w": float(v.measured_w[j, 0]),
                                "delivered_w": float(v.delivered_w[j, 0]),
                                "delivered_low_w": float(v.delivered_low_w[j, 0]),
                                "delivered_high_w": float(v.delivered_high_w[j, 0]),
                            }
                            for j, k in enumerate(option.intervals)
                        ],
                    }
                )
            settlement = {
                "orders": [
                    {
                        **o.to_json(),
                        "disposition": dispositions.get(o.order_reference, (None, None))[0],
                        "dispute_reason": dispositions.get(o.order_reference, (None, None))[1],
                    }
                    for o in rnd.settlement.orders
                ],
                "reports": [r.to_json() for r in rnd.settlement.reports],
                "messages": [
                    {"aggregator": a, "message_id": m, "status": self.procurement.settlement(m).status}
                    for a, m in sorted(rnd.settlement_ids.items())
                ],
            }
        return {
            "grid": self.grid.name,
            "start": _iso(plan.start),
            "horizon": plan.horizon,
            "margin": self.margin,
            "time": [_iso(t) for t in times],
            "needs": [n.to_json() for n in plan.needs],
            "congestion_points": [
                {**p.to_json(), "aggregators": list(self.procurement.aggregators_at(p.id))} for p in plan.points
            ],
            "requests": [
                {**r.to_json(), "aggregators": sorted(set(recipients.get(r.congestion_point, [])))}
                for r in plan.requests
            ],
            "offers": offers,
            "orders": orders,
            "selection": selection,
            "delivery": delivery,
            "settlement": settlement,
        }
