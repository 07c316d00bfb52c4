"""A local (peer-to-peer) energy market on one feeder, cleared by a double auction and approved by a power flow.

Prosumers on one feeder send **orders** for one 15-minute interval (:class:`Order`: participant,
grid node, buy or sell, energy in kWh within the interval, limit price in EUR/kWh). Each interval
is cleared on its own, as a sealed-bid **call double auction**:

1. *Clearing.* Bids are sorted by price descending, asks by price ascending (ties by the order's
   position in the book: time priority). The best remaining bid is matched against the best
   remaining ask for the smaller of their remaining energies, as long as the bid's price is at
   least the ask's; this walk traded quantity is the one where demand and supply cross and it
   maximises the gains from trade (sum over matched energy of bid price minus ask price). The
   marginal orders are partly filled.
2. *Price.* One uniform price for every trade of the interval, by the **k-double auction** of
   Satterthwaite and Williams ("The rate of convergence to efficiency in the buyer's bid double
   auction as the market becomes large", Rev. Econ. Stud. 56(4), 1989) with ``k = 0.5``: the
   price is ``lower + k * (upper - lower)`` in the interval of competitive equilibrium prices
   (the "Economic analysis" section of Wikipedia's *Double auction*: ``[max(s_k, b_(k+1)),
   min(b_k, s_(k+1))]``), with ``lower`` the larger of the marginal (last filled) ask and the best
   bid left unfilled, ``upper`` the smaller of the marginal bid and the best ask left unfilled.
   Every filled bid pays no more than its limit, every filled ask receives no less than its limit,
   and no order left out would trade at that price.
3. *Bilateral trades.* The walk of step 1 pairs them: price priority (the highest bid with the
   cheapest ask, and so on), each pair a :class:`Trade` (buyer, seller, kWh).

**Network charges** (:class:`NetworkTariff`) are per kWh of each trade, by the path between the
seller's and the buyer's node (the branches of their two paths from the source that the paths do
not share, :func:`opendso.grid.topology.path_from_source`): either by *electrical distance* (EUR
per kWh and km of line on the path) or by *voltage level* (a table: ``lv`` when the path stays on
LV lines, ``transformer`` when it passes an MV/LV transformer, ``mv`` when it uses MV lines); the
charge is split between buyer and seller by ``buyer_share``.

**Network approval** (:func:`approve_trades`): the interval's base state is the grid's profile at
that interval (loads and generators); the trades add consumption at the buyers' nodes and
production at the sellers' (kWh over the interval as constant power). One batch power flow of
power-grid-model judges them (:mod:`opendso.markets.network_check`: a branch above its loading
limit, a node outside its voltage band, not already so in the base state). While a violation
remains, the worst violated element is taken, each remaining trade's relief of it per kWh is found
by finite differences (one batch: each trade removed alone), and the trade with the **largest
relief per kWh** is curtailed first: by bisection on its share (batch power flows) to the largest
share that clears that element, or to zero, when it is refused and the element named. The loop
ends when no violation is left; the approved set is then solved once more to confirm it.

The approved trades become per-participant **net schedules** in W per interval (UFTP sign,
consumption positive: :func:`net_schedules`), and :func:`market_setpoints` turns them into
export limits of the set-point arbiter as :attr:`SetpointSource.MARKET` for the participants whose
node has an export-limit point: a seller may export no more than its approved sale; a participant
that sells nothing asks for no limit (a release).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from opendso.calc.timeseries import ViolationLimits
from opendso.der.csv import csv_rows
from opendso.errors import InputError, OrderBookFileError
from opendso.grid.model import Grid
from opendso.grid.topology import Topology, analyse_topology, path_from_source
from opendso.markets.model import ISP, check_aware, check_party_id
from opendso.markets.network_check import (
    BaseInjections,
    InjectionCheck,
    base_at_step,
    element_value,
    violations,
)
from opendso.operations.setpoints import SetpointRequest, SetpointSource
from opendso.planning.history import profile_times
from opendso.timeutil import parse_time

__all__ = [
    "K_DOUBLE_AUCTION",
    "ORDER_BOOK_COLUMNS",
    "AuctionResult",
    "ChargeBasis",
    "LocalMarket",
    "MarketResult",
    "NetworkTariff",
    "Order",
    "ParticipantResult",
    "Side",
    "Trade",
    "approve_trades",
    "clear_auction",
    "market_setpoints",
    "net_schedules",
    "read_order_book",
]

log = logging.getLogger(__name__)

#: The k of the k-double auction: 0.5 is the midpoint of the equilibrium price interval.
K_DOUBLE_AUCTION = 0.5
#: Bisection steps on a trade's share (2**-20 of its energy).
BISECTION_STEPS = 20
_HOURS = ISP.total_seconds() / 3600.0


class Side(enum.StrEnum):
    """Buy or sell."""

    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True)
class Order:
    """One order of one participant for one interval: ``energy_kwh`` (> 0) at ``price`` EUR/kWh or better.

    ``interval`` is the start of the interval (timezone-aware, on the quarter-hour). Bad input
    raises :class:`InputError` naming the participant and the field.
    """

    participant: str
    node: str
    side: Side | str
    energy_kwh: float
    price: float
    interval: datetime

    def __post_init__(self) -> None:
        check_party_id("order participant", self.participant)
        who = f"order of {self.participant}"
        if not isinstance(self.node, str) or not self.node:
            raise InputError(f"{who}: node must be a node name, got {self.node!r}")
        try:
            object.__setattr__(self, "side", Side(self.side))
        except ValueError:
            raise InputError(f"{who}: side must be 'buy' or 'sell', got {self.side!r}") from None
        for name in ("energy_kwh", "price"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"{who}: {name} {value!r} is not a finite number")
            object.__setattr__(self, name, float(value))
        if self.energy_kwh <= 0:
            raise InputError(f"{who}: energy_kwh must be > 0, got {self.energy_kwh}")
        at = check_aware(f"{who} interval", self.interval)
        if at.timestamp() % ISP.total_seconds():
            raise InputError(f"{who}: interval {at.isoformat()} is not the start of a quarter-hour")
        object.__setattr__(self, "interval", at)


@dataclass(frozen=True)
class Trade:
    """A bilateral trade of one interval: ``energy_kwh`` cleared, ``approved_kwh`` after the network check.

    ``refused_by`` names the element (``line:NAME``, ``transformer:NAME``, ``node:NAME``) that
    curtailed the trade, when one did; ``charge_eur`` is the network charge of the approved energy.
    """

    buyer: str
    seller: str
    buyer_node: str
    seller_node: str
    energy_kwh: float
    approved_kwh: float
    refused_by: str | None = None
    charge_eur: float = 0.0

    @property
    def curtailed_kwh(self) -> float:
        """Cleared minus approved energy."""
        return self.energy_kwh - self.approved_kwh

    def to_json(self) -> dict[str, Any]:
        """The trade as JSON."""
        return {
            "buyer": self.buyer,
            "seller": self.seller,
            "buyer_node": self.buyer_node,
            "seller_node": self.seller_node,
            "energy_kwh": self.energy_kwh,
            "approved_kwh": self.approved_kwh,
            "curtailed_kwh": self.curtailed_kwh,
            "refused_by": self.refused_by,
            "charge_eur": self.charge_eur,
        }


@dataclass(frozen=True)
class AuctionResult:
    """One interval's clearing: the uniform ``price`` (None without a trade) and the trades (not yet approved)."""

    interval: datetime
    price: float | None
    trades: tuple[Trade, ...]

    @property
    def cleared_kwh(self) -> float:
        """Total energy traded."""
        return sum(t.energy_kwh for t in self.trades)


def clear_auction(orders: Sequence[Order], *, k: float = K_DOUBLE_AUCTION) -> AuctionResult:
    """Clear one interval's orders by the k-double auction (see the module docstring).

    Every order must be for the same interval, else :class:`InputError`.
    """
    if not 0.0 <= k <= 1.0:
        raise InputError(f"double auction: k must be within 0..1, got {k!r}")
    if not orders:
        raise InputError("double auction: no orders")
    interval = orders[0].interval
    other = [o for o in orders if o.interval != interval]
    if other:
        raise InputError(f"double auction: order of {other[0].participant} is for another interval")
    bids = sorted(
        (o for o in orders if o.side is Side.BUY), key=lambda o: -o.price
    )  # sorted() is stable: ties keep book order
    asks = sorted((o for o in orders if o.side is Side.SELL), key=lambda o: o.price)
    left_b = [o.energy_kwh for o in bids]
    left_a = [o.energy_kwh for o in asks]
    i = j = 0
    pairs: dict[tuple[int, int], float] = {}
    last_b = last_a = -1
    while i < len(bids) and j < len(asks) and bids[i].price >= asks[j].price:
        q = min(left_b[i], left_a[j])
        pairs[(i, j)] = pairs.get((i, j), 0.0) + q
        left_b[i] -= q
        left_a[j] -= q
        last_b, last_a = i, j
        if left_b[i] <= 1e-12:
            i += 1
        if left_a[j] <= 1e-12:
            j += 1
    if not pairs:
        return AuctionResult(interval, None, ())
    lower = asks[last_a].price
    upper = bids[last_b].price
    if i < len(bids):
        lower = max(lower, bids[i].price)
    if j < len(asks):
        upper = min(upper, asks[j].price)
    price = lower + k * (upper - lower)
    trades = tuple(
        Trade(bids[b].participant, asks[a].participant, bids[b].node, asks[a].node, q, q) for (b, a), q in pairs.items()
    )
    log.debug("event=local_auction interval=%s trades=%d price=%.6g", interval.isoformat(), len(trades), price)
    return AuctionResult(interval, price, trades)


class ChargeBasis(enum.StrEnum):
    """How network charges are set: by the length of the path, or by the voltage levels it uses."""

    DISTANCE = "distance"
    VOLTAGE_LEVEL = "voltage_level"


#: The voltage levels of the voltage-level tariff, cheapest first.
LEVELS = ("lv", "transformer", "mv")


@dataclass(frozen=True)
class NetworkTariff:
    """Network charges per kWh of a trade.

    ``basis`` DISTANCE: ``eur_per_kwh_km`` times the km of line between seller and buyer (plus
    ``base_eur_per_kwh``). VOLTAGE_LEVEL: ``levels[level]`` EUR/kWh for the highest level the path
    uses (keys ``lv``, ``transformer``, ``mv``). ``buyer_share`` of the charge is the buyer's, the
    rest the seller's.
    """

    basis: ChargeBasis = ChargeBasis.DISTANCE
    eur_per_kwh_km: float = 0.01
    base_eur_per_kwh: float = 0.0
    levels: Mapping[str, float] = field(default_factory=lambda: {"lv": 0.01, "transformer": 0.03, "mv": 0.05})
    buyer_share: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "basis", ChargeBasis(self.basis))
        for name in ("eur_per_kwh_km", "base_eur_per_kwh", "buyer_share"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"network tariff: {name} must be a finite number >= 0, got {value!r}")
        if self.buyer_share > 1:
            raise InputError(f"network tariff: buyer_share must be 0..1, got {self.buyer_share}")
        if set(self.levels) != set(LEVELS):
            raise InputError(f"network tariff: levels must give exactly {', '.join(LEVELS)}")
        for level, value in self.levels.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"network tariff: level {level} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class ParticipantResult:
    """One participant in one interval: bought/sold energy cleared and approved, the price and what it pays.

    ``energy_cost_eur`` is positive when paying (a buyer), negative when paid (a seller);
    ``network_charge_eur`` its share of the network charges of its approved trades.
    """

    participant: str
    node: str
    interval: datetime
    cleared_kwh: float
    approved_kwh: float
    price: float | None
    energy_cost_eur: float
    network_charge_eur: float
    net_w: float

    @property
    def curtailed_kwh(self) -> float:
        """Cleared minus approved energy (bought plus sold)."""
        return self.cleared_kwh - self.approved_kwh

    def to_json(self) -> dict[str, Any]:
        """The participant's figures as JSON."""
        return {
            "participant": self.participant,
            "node": self.node,
            "interval": _iso(self.interval),
            "cleared_kwh": self.cleared_kwh,
            "approved_kwh": self.approved_kwh,
            "curtailed_kwh": self.curtailed_kwh,
            "price_eur_per_kwh": self.price,
            "energy_cost_eur": self.energy_cost_eur,
            "network_charge_eur": self.network_charge_eur,
            "net_w": self.net_w,
        }


@dataclass(frozen=True)
class MarketResult:
    """The outcome of a market run: per interval the auction and the approved trades, per participant the figures."""

    feeder: str
    auctions: tuple[AuctionResult, ...]
    participants: tuple[ParticipantResult, ...]

    def to_json(self) -> dict[str, Any]:
        """The result as JSON: intervals with price and trades, and per-participant rows."""
        return {
            "feeder": self.feeder,
            "intervals": [
                {
                    "interval": _iso(a.interval),
                    "price_eur_per_kwh": a.price,
                    "cleared_kwh": a.cleared_kwh,
                    "approved_kwh": sum(t.approved_kwh for t in a.trades),
                    "trades": [t.to_json() for t in a.trades],
                }
                for a in self.auctions
            ],
            "participants": [p.to_json() for p in self.participants],
        }


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class LocalMarket:
    """The local market of one feeder of ``grid`` (a feeder name as :mod:`opendso.grid.topology` gives it).

    ``tariff``: the network charges; ``limits``: what the network approval judges. An unknown
    feeder raises :class:`InputError`.
    """

    def __init__(
        self,
        grid: Grid,
        feeder: str,
        *,
        tariff: NetworkTariff | None = None,
        limits: ViolationLimits | None = None,
    ) -> None:
        self.grid = grid
        self.tariff = tariff or NetworkTariff()
        self.limits = limits or ViolationLimits()
        self._topology: Topology = analyse_topology(grid)
        names = [str(n) for n in self._topology.feeders.name.tolist()]
        if feeder not in names:
            raise InputError(f"local market: {feeder!r} is not a feeder of {grid.name}")
        self.feeder = feeder
        feeder_id = int(self._topology.feeders.id[names.index(feeder)])
        node_names = [str(n) for n in grid.names_of("node").tolist()]
        self._node_id = {n: int(i) for n, i in zip(node_names, grid.component("node")["id"].tolist(), strict=True)}
        self.nodes = frozenset(
            n for n, f in zip(node_names, self._topology.node_feeder.tolist(), strict=True) if f == feeder_id
        )
        self._u_rated = dict(
            zip(grid.component("node")["id"].tolist(), grid.component("node")["u_rated"].tolist(), strict=True)
        )
        self._branch_info = self._branches()

    def _branches(self) -> dict[int, tuple[str, float, float]]:
        """Per branch id: its component, length in km (0 but for lines) and the higher rated voltage of its ends."""
        info: dict[int, tuple[str, float, float]] = {}
        for component, array in self.grid.iter_branches():
            length = self.grid.column(component, "length_km", None) if component == "line" else None
            for k, row in enumerate(array):
                u = max(self._u_rated[int(row["from_node"])], self._u_rated[int(row["to_node"])])
                km = 0.0
                if length is not None and length[k] is not None and np.isfinite(float(length[k])):
                    km = float(length[k])
                info[int(row["id"])] = (component, km, float(u))
        return info

    # -- input -------------------------------------------------------------------------------------
    def check_order(self, order: Order) -> Order:
        """``order`` if its node is on this market's feeder, else :class:`InputError` naming it."""
        if order.node not in self._node_id:
            raise InputError(f"order of {order.participant}: node {order.node!r} is not a node of {self.grid.name}")
        if order.node not in self.nodes:
            raise InputError(
                f"order of {order.participant}: node {order.node!r} is not on feeder {self.feeder!r} of this market"
            )
        return order

    # -- charges -----------------------------------------------------------------------------------
    def path_between(self, a: str, b: str) -> list[int]:
        """The branch ids between nodes ``a`` and ``b`` (radial: the parts of their source paths not shared)."""
        pa = path_from_source(self._topology, self._node_id[a])
        pb = path_from_source(self._topology, self._node_id[b])
        if pa is None or pb is None:
            raise InputError(f"local market: node {a!r} or {b!r} has no supply")
        sa, sb = set(pa.branches.tolist()), set(pb.branches.tolist())
        return sorted(sa ^ sb)

    def charge_rate(self, seller_node: str, buyer_node: str) -> float:
        """Network charge in EUR/kWh for energy from ``seller_node`` to ``buyer_node`` under the tariff."""
        path = self.path_between(seller_node, buyer_node)
        if self.tariff.basis is ChargeBasis.DISTANCE:
            km = sum(self._branch_info[b][1] for b in path)
            return self.tariff.base_eur_per_kwh + self.tariff.eur_per_kwh_km * km
        level = "lv"
        for b in path:
            component, _, u = self._branch_info[b]
            if component == "transformer" and level == "lv":
                level = "transformer"
            if component != "transformer" and u > 1000.0:
                level = "mv"
        return float(self.tariff.levels[level])

    # -- the run -----------------------------------------------------------------------------------
    def run(self, orders: Sequence[Order], *, approve: bool = True) -> MarketResult:
        """Clear, approve (unless ``approve`` is False) and settle every interval of ``orders``."""
        for order in orders:
            self.check_order(order)
        by_interval: dict[datetime, list[Order]] = {}
        for order in orders:
            by_interval.setdefault(order.interval, []).append(order)
        auctions: list[AuctionResult] = []
        rows: list[ParticipantResult] = []
        for interval in sorted(by_interval):
            book = by_interval[interval]
            cleared = clear_auction(book)
            trades = approve_trades(self, cleared) if approve and cleared.trades else cleared.trades
            trades = tuple(self._charged(t) for t in trades)
            auction = AuctionResult(interval, cleared.price, trades)
            auctions.append(auction)
            rows.extend(self._participants(auction, book))
        log.info("event=local_market feeder=%s intervals=%d orders=%d", self.feeder, len(auctions), len(orders))
        return MarketResult(self.feeder, tuple(auctions), tuple(rows))

    def _charged(self, trade: Trade) -> Trade:
        rate = self.charge_rate(trade.seller_node, trade.buyer_node)
        return Trade(
            trade.buyer,
            trade.seller,
            trade.buyer_node,
            trade.seller_node,
            trade.energy_kwh,
            trade.approved_kwh,
            trade.refused_by,
            rate * trade.approved_kwh,
        )

    def _participants(self, auction: AuctionResult, book: Sequence[Order]) -> list[ParticipantResult]:
        price = auction.price or 0.0
        share = self.tariff.buyer_share
        acc: dict[str, list[float]] = {}
        node_of = {o.participant: o.node for o in book}
        for o in book:
            acc.setdefault(o.participant, [0.0, 0.0, 0.0, 0.0, 0.0])
        for t in auction.trades:
            b, s = acc[t.buyer], acc[t.seller]
            b[0] += t.energy_kwh
            s[0] += t.energy_kwh
            b[1] += t.approved_kwh
            s[1] += t.approved_kwh
            b[2] += price * t.approved_kwh
            s[2] -= price * t.approved_kwh
            b[3] += share * t.charge_eur
            s[3] += (1.0 - share) * t.charge_eur
            b[4] += t.approved_kwh / _HOURS * 1e3
            s[4] -= t.approved_kwh / _HOURS * 1e3
        return [
            ParticipantResult(p, node_of[p], auction.interval, v[0], v[1], auction.price, v[2], v[3], v[4])
            for p, v in sorted(acc.items())
        ]

    # -- network -----------------------------------------------------------------------------------
    def base_state(self, interval: datetime) -> BaseInjections:
        """The loads and generators of the grid's profiles at ``interval`` (:class:`InputError` outside them)."""
        times = profile_times(self.grid)
        at = pd.Timestamp(check_aware("interval", interval))
        step = int(times.get_indexer(pd.DatetimeIndex([at]))[0])
        if step < 0:
            raise InputError(f"local market: interval {at.isoformat()} is not a step of the grid's profiles")
        return base_at_step(self.grid, step)


def approve_trades(market: LocalMarket, auction: AuctionResult) -> tuple[Trade, ...]:
    """The trades of ``auction`` with their approved energy (see the module docstring: largest relief per kWh first)."""
    trades = list(auction.trades)
    if not trades:
        return ()
    nodes = sorted({t.buyer_node for t in trades} | {t.seller_node for t in trades})
    check = InjectionCheck(market.grid, nodes, limits=market.limits)
    col = {n: k for k, n in enumerate(nodes)}
    base = market.base_state(auction.interval)
    # one unit of each trade: 1 kWh over the interval at the buyer (+) and the seller (-), in W
    unit = np.zeros((len(trades), len(nodes)))
    for k, t in enumerate(trades):
        unit[k, col[t.buyer_node]] += 1e3 / _HOURS
        unit[k, col[t.seller_node]] -= 1e3 / _HOURS
    energy = np.array([t.energy_kwh for t in trades])
    share = np.ones(len(trades))
    refused: list[str | None] = [None] * len(trades)
    zero = check.run(base, np.zeros((1, len(nodes))))

    def solve(shares: np.ndarray) -> tuple[Any, list[Any]]:
        extra = (np.atleast_2d(shares) * energy) @ unit
        res = check.run(base, extra)
        return res, violations(check, res, zero)

    for _ in range(4 * len(trades) + 4):
        _, found = solve(share)
        worst = found[0]
        if worst is None:
            break
        live = np.flatnonzero(share > 0)
        if not live.size:
            break
        # each live trade removed alone: its relief of the worst element per kWh
        trials = np.repeat(share[None, :], live.size, axis=0)
        trials[np.arange(live.size), live] = 0.0
        res_all, _ = solve(np.vstack([share, trials]))
        values = element_value(check, res_all, worst.element)
        sign = 1.0 if worst.value > worst.limit else -1.0
        relief = sign * (values[0] - values[1:]) / (share[live] * energy[live])
        pick = int(live[int(np.argmax(relief))])
        if relief.max() <= 0:
            pick = int(live[0])  # nothing relieves it alone: curtail in book order
        lo, hi = 0.0, float(share[pick])
        trial = share.copy()
        trial[pick] = 0.0
        if _violates(solve(trial)[1][0], worst.element):
            share[pick] = 0.0
            refused[pick] = worst.element
            continue
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            trial[pick] = mid
            if _violates(solve(trial)[1][0], worst.element):
                hi = mid
            else:
                lo = mid
        share[pick] = lo
        refused[pick] = worst.element
    final = solve(share)[1][0]
    if final is not None:
        # a last resort: nothing is approved rather than a violation
        log.warning("event=local_market_refuse_all interval=%s element=%s", _iso(auction.interval), final.element)
        refused = [r or final.element for r in refused]
        share[:] = 0.0
    out = tuple(
        Trade(
            t.buyer,
            t.seller,
            t.buyer_node,
            t.seller_node,
            t.energy_kwh,
            float(share[k] * t.energy_kwh),
            refused[k] if share[k] < 1.0 else None,
        )
        for k, t in enumerate(trades)
    )
    log.info(
        "event=local_market_approval interval=%s trades=%d curtailed=%d",
        _iso(auction.interval),
        len(out),
        sum(1 for t in out if t.curtailed_kwh > 0),
    )
    return out


def _violates(found: Any, element: str) -> bool:
    return found is not None and found.element == element


def net_schedules(result: MarketResult) -> dict[str, dict[datetime, float]]:
    """Per participant, its approved net consumption in W per interval (UFTP sign: buying positive)."""
    out: dict[str, dict[datetime, float]] = {}
    for row in result.participants:
        out.setdefault(row.participant, {})[row.interval] = row.net_w
    return out


def market_setpoints(
    result: MarketResult,
    interval: datetime,
    export_points: Mapping[str, str],
    *,
    actor: str = "local-market",
) -> list[SetpointRequest]:
    """The export limits of ``interval`` as set-point requests of :attr:`SetpointSource.MARKET`.

    ``export_points`` maps a grid node to the export-limit point (``p_limit``) of the DER there.
    For each participant at such a node: a seller's limit is its approved net export (W); a
    participant with no net export asks for no limit (``limit_w=None``, a release).
    """
    at = check_aware("set-point interval", interval)
    out: list[SetpointRequest] = []
    for row in result.participants:
        if row.interval != at or row.node not in export_points:
            continue
        limit = -row.net_w if row.net_w < 0 else None
        reason = f"local market {_iso(at)}: approved sale of {row.participant}"
        out.append(SetpointRequest(SetpointSource.MARKET, export_points[row.node], limit, reason, actor))
    return out


#: The columns of an order book CSV (:func:`read_order_book`), all required.
ORDER_BOOK_COLUMNS = ("participant", "node", "side", "energy_kwh", "price_eur_per_kwh", "interval")
#: The largest order book file accepted (bytes).
ORDER_BOOK_MAX_BYTES = 20_000_000


def read_order_book(path: Path | str, *, nodes: Collection[str] | None = None) -> tuple[Order, ...]:
    """Read a local market's order book CSV: one order per row; every problem in one :class:`OrderBookFileError`.

    Columns (a header row names them, order free, all required): ``participant`` (an id),
    ``node`` (the participant's grid node; one of ``nodes`` when given, e.g. the market's feeder),
    ``side`` (``buy`` | ``sell``), ``energy_kwh`` (> 0, within the interval), ``price_eur_per_kwh``
    (the limit price, finite), ``interval`` (the interval's start, ISO 8601 with a zone, on the
    quarter-hour). A participant may have one order per interval and side.
    """
    path = Path(path)
    rows, problems = csv_rows(
        path,
        columns=ORDER_BOOK_COLUMNS,
        required=ORDER_BOOK_COLUMNS,
        error=OrderBookFileError,
        max_bytes=ORDER_BOOK_MAX_BYTES,
    )
    orders: list[Order] = []
    seen: set[tuple[str, str, datetime]] = set()
    for n, cells in rows:
        before = len(problems)
        numbers: dict[str, float] = {}
        for column in ("energy_kwh", "price_eur_per_kwh"):
            text = cells[column]
            try:
                numbers[column] = float(text)
            except ValueError:
                problems.append((n, column, f"{text!r} is not a number"))
                continue
            if not math.isfinite(numbers[column]):
                problems.append((n, column, f"{text!r} is not a finite number"))
        try:
            interval = parse_time(cells["interval"], "interval") if cells["interval"] else None
        except (InputError, ValueError) as exc:
            problems.append((n, "interval", str(exc)))
            interval = None
        if interval is None and len(problems) == before:
            problems.append((n, "interval", "is empty"))
        if nodes is not None and cells["node"] not in nodes:
            problems.append((n, "node", f"{cells['node']!r} is not a node of this market"))
        if len(problems) > before or interval is None:
            continue
        try:
            order = Order(
                participant=cells["participant"],
                node=cells["node"],
                side=cells["side"],
                energy_kwh=numbers["energy_kwh"],
                price=numbers["price_eur_per_kwh"],
                interval=interval,
            )
        except InputError as exc:
            message = str(exc)
            named: str | None = next(
                (c for c in ("participant", "node", "side", "energy_kwh", "interval") if c in message),
                "price_eur_per_kwh" if "price" in message else None,
            )
            problems.append((n, named, message))
            continue
        key = (order.participant, Side(order.side).value, order.interval)
        if key in seen:
            problems.append(
                (n, None, f"{order.participant} has a second {key[1]} order for {order.interval.isoformat()}")
            )
            continue
        seen.add(key)
        orders.append(order)
    if not problems and not orders:
        problems.append((None, None, "has no data rows"))
    if problems:
        raise OrderBookFileError(path, problems)
    return tuple(orders)
