"""Day-ahead flexibility rounds in the control room, over an emulated UFTP market.

==================================  ==========  =========================================================
route                               permission  what it gives
==================================  ==========  =========================================================
``POST /api/flex/rounds``           control     runs one day-ahead round on the running grid (body:
                                                ``issued`` ISO time, ``steps`` 1..96, ``threshold``
                                                0..1, ``scenarios`` 10..500) and returns the round's
                                                JSON (:meth:`~opendso.markets.desk.FlexibilityDesk.to_json`);
                                                409 naming the running round while one runs; audited
                                                (``flex.round``)
``GET /api/flex/rounds/latest``     view        the latest round's JSON; 404 "no flexibility round yet"
==================================  ==========  =========================================================

**The market emulation** (:class:`MarketEmulation`) is the control room's counterpart of the field
simulator for the flexibility market, for the demo and for studies: in place of the real CRO and
the aggregators' systems, each app gets, on first use, a UFTP world on 127.0.0.1 with ephemeral
ports (shapeshifter-uftp services, signed messages, the same transport gate as in the field):
a :class:`~opendso.markets.uftp.Directory`, a :class:`~opendso.markets.uftp.CommonReferenceOperator`,
the DSO's :class:`~opendso.markets.uftp.FlexProcurement` and one
:class:`~opendso.markets.uftp.SimulatedAggregator` per aggregator of the DER registry. An
aggregator's portfolio is its DER at the round's congestion points; its flexibility at a point is
the sum over those assets of ``max(export_kw, import_kw)``; its price is deterministic per name,
``PRICE_MIN + crc32(name) mod (PRICE_MAX - PRICE_MIN + 1)`` EUR/MWh (whole euros, so options cost
whole cents). The aggregators' portfolios follow the congestion points of each round: an
aggregator whose portfolio changed is replaced by a new one (same domain and key) that registers
its connections with the CRO again. UFTP's clocks: the forecast lives in the grid profiles' year,
so the DSO's clock is the round's issue time (in that year): the round's Period (the day of its
first interval) is then never in the past, and the FlexRequests expire :data:`REQUEST_VALIDITY`
after it. The app's lifespan has no hook a route module can use without editing ``app.py``: the
emulation is closed by a :func:`weakref.finalize` on the app (which also runs at interpreter exit),
or explicitly by :func:`close_market`.

**A round** (in a worker thread, never on the event loop, one at a time per app): the congestion
forecast of the running grid issued at ``issued`` (default: now, the simulated clock when a field
simulator runs, moved into the profiles' year, as ``GET /api/congestion`` does;
:func:`~opendso.planning.congestion.congestion_outlook`), with the load/generation forecast it was
made from kept so that the sensitivities are taken around the forecast's median state;
:meth:`~opendso.markets.desk.FlexibilityDesk.plan` -> :meth:`~opendso.markets.desk.FlexibilityDesk.publish`
-> :meth:`~opendso.markets.desk.FlexibilityDesk.procure` (FlexRequest, FlexOffer, network-aware
merit order, FlexOrder). The last :data:`ROUNDS_KEPT` rounds are kept in memory (not persisted: a
restart forgets them). Activation in the field and settlement are not part of this route: the
desk's activation through the set-point arbiter and its settlement are exercised end to end in the
tests of the desk; the round's ``delivery`` and ``settlement`` stay empty here.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from opendso.errors import ConflictError, InputError, NotFoundError, RemoteError
from opendso.service.routes.deps import ControlSession, RoomDep, ViewSession, client_ip, query_time
from opendso.service.routes.der import RegistryDep

if TYPE_CHECKING:
    from opendso.der.registry import DerRegistry
    from opendso.grid.model import Grid
    from opendso.markets.model import CongestionPoint
    from opendso.markets.uftp import PortfolioEntry, SimulatedAggregator

__all__ = [
    "CRO_DOMAIN",
    "DSO_DOMAIN",
    "PRICE_MAX",
    "PRICE_MIN",
    "REQUEST_VALIDITY",
    "ROUNDS_KEPT",
    "MarketEmulation",
    "RoundBody",
    "aggregator_domain",
    "aggregator_price",
    "close_market",
    "market_of",
    "router",
]

log = logging.getLogger(__name__)

router = APIRouter(tags=["flexibility"])

#: The emulated DSO's and CRO's UFTP domains.
DSO_DOMAIN = "dso.opendso.org"
CRO_DOMAIN = "cro.opendso.org"
#: The range of the emulated aggregators' prices, EUR/MWh.
PRICE_MIN, PRICE_MAX = 40, 120
#: How many finished rounds an app keeps in memory.
ROUNDS_KEPT = 5
#: How long the round's FlexRequests (and so its offers) stay valid after the issue time.
REQUEST_VALIDITY = timedelta(hours=6)
#: The longest any wait for a UFTP answer lasts (loopback; generous for 2 busy cores).
DEADLINE_S = 10.0
#: The market's time zone (UFTP's default).
MARKET_TZ = "Europe/Amsterdam"

_STATE = threading.Lock()  # guards the creation of an app's emulation only


def aggregator_domain(name: str) -> str:
    """The emulated UFTP domain of the registry's aggregator ``name`` (``<slug>.agr.opendso.org``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or f"agr-{zlib.crc32(name.encode()):08x}"
    return f"{slug}.agr.opendso.org"


def aggregator_price(name: str) -> float:
    """The emulated aggregator's price, EUR/MWh: stable per name, whole euros in ``PRICE_MIN..PRICE_MAX``."""
    return float(PRICE_MIN + zlib.crc32(name.encode()) % (PRICE_MAX - PRICE_MIN + 1))


class _Clock:
    """The DSO's clock: the issue time of the round in progress (in the profiles' year)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class MarketEmulation:
    """One app's emulated UFTP market on loopback (module docstring) and its last rounds."""

    def __init__(self, *, deadline_s: float = DEADLINE_S) -> None:
        from opendso.markets.uftp import CommonReferenceOperator, Directory, FlexProcurement, new_keypair

        self.deadline_s = deadline_s
        self.directory = Directory()
        self.clock = _Clock()
        self.cro = CommonReferenceOperator(domain=CRO_DOMAIN, keypair=new_keypair(), directory=self.directory)
        self.dso = FlexProcurement(domain=DSO_DOMAIN, keypair=new_keypair(), directory=self.directory, clock=self.clock)
        self._aggregators: dict[str, SimulatedAggregator] = {}
        self._portfolios: dict[str, tuple[PortfolioEntry, ...]] = {}
        self._keys: dict[str, Any] = {}
        self._slot = threading.Lock()
        self._rounds: deque[dict[str, Any]] = deque(maxlen=ROUNDS_KEPT)
        self.running: str | None = None
        self.closed = False
        self.cro.start()
        self.dso.start()
        log.info("event=flex_market_started dso=%s cro=%s", DSO_DOMAIN, CRO_DOMAIN)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop every participant (aggregators first); idempotent."""
        if self.closed:
            return
        self.closed = True
        for agr in self._aggregators.values():
            agr.close()
        self._aggregators.clear()
        self.dso.close()
        self.cro.close()
        log.info("event=flex_market_closed")

    @contextmanager
    def round_slot(self, label: str) -> Iterator[None]:
        """Hold the app's one round slot for ``label``; :class:`ConflictError` naming the round that holds it."""
        if not self._slot.acquire(blocking=False):
            raise ConflictError(f"a flexibility round is already running: {self.running}")
        self.running = label
        try:
            yield
        finally:
            self.running = None
            self._slot.release()

    # ------------------------------------------------------------------ the rounds
    def latest(self) -> dict[str, Any]:
        """The latest round's JSON; :class:`NotFoundError` before the first."""
        if not self._rounds:
            raise NotFoundError("no flexibility round yet")
        return self._rounds[-1]

    def _portfolio(self, registry: DerRegistry, name: str, points: tuple[CongestionPoint, ...]) -> list[PortfolioEntry]:
        from opendso.markets.uftp import PortfolioEntry, connection_address

        assets = [a for a, _ in registry.assets() if a.aggregator == name]
        out = []
        for p in points:
            mine = [a for a in assets if a.node in p.nodes]
            flex_w = 1e3 * sum(max(a.export_kw, a.import_kw) for a in mine)
            if flex_w > 0:
                nodes = sorted({a.node for a in mine})
                connections = tuple(connection_address(DSO_DOMAIN, n) for n in nodes)
                out.append(PortfolioEntry(p.id, connections, flex_w, aggregator_price(name)))
        return out

    def _aggregators_for(self, registry: DerRegistry, points: tuple[CongestionPoint, ...], issued: datetime) -> None:
        """Start (or replace) one simulated aggregator per registry aggregator whose portfolio changed."""
        from opendso.markets.uftp import SimulatedAggregator, new_keypair

        names = sorted({a.aggregator for a, _ in registry.assets() if a.aggregator})
        for name in names:
            portfolio = tuple(self._portfolio(registry, name, points))
            if not portfolio or self._portfolios.get(name) == portfolio:
                continue
            old = self._aggregators.pop(name, None)
            if old is not None:
                old.close()
            key = self._keys.setdefault(name, new_keypair())
            agr = SimulatedAggregator(
                domain=aggregator_domain(name), keypair=key, directory=self.directory, portfolio=portfolio
            )
            agr.start()
            self._aggregators[name] = agr
            self._portfolios[name] = portfolio
            agr.register_connections(CRO_DOMAIN, start=issued.date() - timedelta(days=1), time_zone=MARKET_TZ)
            if not agr.wait_for(lambda a: bool(a.received("AgrPortfolioUpdateResponse")), self.deadline_s):
                raise RemoteError(f"flex market: the CRO did not answer {agr.domain}'s portfolio update in time")

    def run_round(
        self, grid: Grid, registry: DerRegistry, issued: datetime, *, steps: int, threshold: float, scenarios: int
    ) -> dict[str, Any]:
        """One day-ahead round (module docstring) on ``grid`` issued at ``issued``; the round's JSON, kept."""
        from opendso.markets.baselines import BaselineMethod, BaselineSpec
        from opendso.markets.desk import FlexibilityDesk
        from opendso.markets.settlement import FlexContract
        from opendso.planning.baselines import weekly_profile_forecast
        from opendso.planning.congestion import HISTORY_WINDOW, congestion_outlook
        from opendso.planning.history import profile_history

        if self.closed:
            raise ConflictError("flex market: the market emulation is closed")
        history = profile_history(grid)
        forecast = congestion_outlook(grid, issued, steps=steps, scenarios=scenarios, history=history)
        end = issued.astimezone(UTC)
        window = history.loc[(history.index < end) & (history.index >= end - HISTORY_WINDOW)]
        quantiles = weekly_profile_forecast(window, issued, horizon_steps=steps)
        self.clock.now = issued
        desk = FlexibilityDesk(
            grid,
            registry,
            self.dso,
            cro=CRO_DOMAIN,
            contract=FlexContract("opendso-emulated-market", Decimal("200"), time_zone=MARKET_TZ),
            baseline=BaselineSpec(
                method=BaselineMethod.HIGH_X_OF_Y, x=4, y=5, backcast_days=10, min_backcast_days=5, time_zone=MARKET_TZ
            ),
            deadline_s=self.deadline_s,
            market_time_zone=MARKET_TZ,
        )
        plan = desk.plan(forecast, quantiles=quantiles, threshold=threshold)
        if plan.requests:
            self._aggregators_for(registry, plan.points, issued)
            first_day = min(r.time for r in plan.requests).astimezone(desk.market_tz).date()
            if not {p.id for p in plan.points} <= set(self.dso.published()):
                desk.publish(start=first_day)
            desk.procure(expires=issued + REQUEST_VALIDITY, start=first_day)
        record = {**desk.to_json(), "issued": issued.astimezone(UTC).isoformat().replace("+00:00", "Z")}
        self._rounds.append(record)
        return record


def market_of(app: FastAPI) -> MarketEmulation:
    """The app's market emulation, started on first use and closed with the app (module docstring)."""
    state = app.state
    with _STATE:
        market: MarketEmulation | None = getattr(state, "flex_market", None)
        if market is None or market.closed:
            market = state.flex_market = MarketEmulation()
            weakref.finalize(app, market.close)
    return market


def close_market(app: FastAPI) -> None:
    """Close the app's market emulation if one was started (the app's shutdown, or a test's)."""
    market: MarketEmulation | None = getattr(app.state, "flex_market", None)
    if market is not None:
        market.close()


class RoundBody(BaseModel):
    """The parameters of one day-ahead round."""

    model_config = ConfigDict(extra="forbid")

    issued: str | None = Field(default=None, max_length=64)
    steps: int = Field(default=96, ge=1, le=96)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    scenarios: int = Field(default=100, ge=10, le=500)


def _issue_time(request: Request, grid: Grid, issued: str | None) -> datetime:
    from opendso.planning.congestion import issue_time_in_profiles

    if issued is not None:
        return query_time(issued, "issued")
    room = request.app.state.room
    simulator = room.simulator
    now = room.clock()
    at = (simulator.simulated_time_at(now) or simulator.simulated_clock()) if simulator is not None else now
    return issue_time_in_profiles(grid, at)


@router.post("/api/flex/rounds")
async def run_flex_round(
    body: RoundBody, request: Request, session: ControlSession, room: RoomDep, registry: RegistryDep
) -> dict[str, Any]:
    """Run one day-ahead flexibility round (module docstring); the round's JSON. Audited as ``flex.round``."""
    grid = room.grid
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles to forecast congestion from")
    at = _issue_time(request, grid, body.issued)
    market = market_of(request.app)
    label = f"issued {at.astimezone(UTC).isoformat()} by {session.user.username}"
    details: dict[str, Any] = {
        "issued": at.astimezone(UTC).isoformat(),
        "steps": body.steps,
        "threshold": body.threshold,
        "scenarios": body.scenarios,
    }
    with market.round_slot(label):
        try:
            record: dict[str, Any] = await anyio.to_thread.run_sync(
                lambda: market.run_round(
                    grid, registry, at, steps=body.steps, threshold=body.threshold, scenarios=body.scenarios
                )
            )
        except Exception as exc:
            room.audit.append(
                "flex.round",
                actor=session.user.username,
                element=f"grid:{grid.name}",
                result="failed",
                reason=str(exc)[:500],
                details=details,
                source_ip=client_ip(request),
            )
            raise
    selection = record.get("selection") or {}
    room.audit.append(
        "flex.round",
        actor=session.user.username,
        element=f"grid:{grid.name}",
        result="ok",
        details={
            **details,
            "needs": len(record["needs"]),
            "requests": len(record["requests"]),
            "orders": len(record["orders"]),
            "total_cost": selection.get("total_cost"),
        },
        source_ip=client_ip(request),
    )
    return record


@router.get("/api/flex/rounds/latest")
def latest_flex_round(request: Request, _: ViewSession) -> dict[str, Any]:
    """The latest day-ahead round's JSON; 404 before the first."""
    market: MarketEmulation | None = getattr(request.app.state, "flex_market", None)
    if market is None:
        raise NotFoundError("no flexibility round yet")
    return market.latest()
