"""A small UFTP world over loopback for the UFTP tests: directory, CRO, DSO desk and one or two aggregators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from opendso.markets.model import ISP, CongestionPoint, FlexNeed, FlexOffer
from opendso.markets.uftp import (
    CommonReferenceOperator,
    Directory,
    FlexProcurement,
    Gate,
    PortfolioEntry,
    SimulatedAggregator,
    connection_address,
    new_keypair,
)

#: Every wait in these tests: generous for 2 busy cores, never a sleep (waits end as soon as the message is in).
DEADLINE_S = 10.0

DSO = "dso.opendso.org"
CRO = "cro.opendso.org"
AGR = "agr-one.example.com"
AGR2 = "agr-two.example.com"
TZ = ZoneInfo("Europe/Amsterdam")
CP1 = CongestionPoint(id="ea1.2020-01.org.opendso:cp-1", name="Feeder 1 far end", nodes=("node 5", "node 6"))
CP2 = CongestionPoint(id="ea1.2020-01.org.opendso:cp-2", name="Feeder 2", nodes=("node 9",))
PRICE_PER_MWH = 80.0
FLEX_W = 60_000.0


@dataclass
class Clock:
    """The DSO's clock: a fixed time that tests move on explicitly."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    directory: Directory
    clock: Clock
    cro: CommonReferenceOperator
    dso: FlexProcurement
    agr: SimulatedAggregator
    agr2: SimulatedAggregator

    @property
    def tomorrow(self) -> date:
        return (self.clock.now.astimezone(TZ) + timedelta(days=1)).date()

    def origin(self) -> datetime:
        """08:00 local tomorrow: interval 0 of the needs (ISP 33 of the Period)."""
        t = self.tomorrow
        return datetime(t.year, t.month, t.day, 8, tzinfo=TZ).astimezone(UTC)

    def needs(self, count: int = 4) -> list[FlexNeed]:
        o = self.origin()
        return [FlexNeed(element="line:L1", interval=k, time=o + k * ISP, excess=0.1) for k in range(count)]


def _portfolio() -> list[PortfolioEntry]:
    return [
        PortfolioEntry(CP1.id, tuple(connection_address(DSO, n) for n in CP1.nodes), FLEX_W, PRICE_PER_MWH),
        PortfolioEntry(CP2.id, tuple(connection_address(DSO, n) for n in CP2.nodes), FLEX_W, PRICE_PER_MWH),
    ]


@contextmanager
def uftp_world(*, gate_kwargs: dict[str, object] | None = None, ready: bool = True) -> Iterator[World]:
    """Start CRO, DSO and two aggregators on ephemeral loopback ports; with ``ready``, publish and query the CRO."""
    directory = Directory()
    clock = Clock()
    kw = gate_kwargs or {}

    def gate(service: object, d: Directory) -> Gate:
        return Gate(service, d, **kw)  # type: ignore[arg-type]

    cro = CommonReferenceOperator(domain=CRO, keypair=new_keypair(), directory=directory)
    dso = FlexProcurement(domain=DSO, keypair=new_keypair(), directory=directory, clock=clock, gate=gate)
    agr = SimulatedAggregator(domain=AGR, keypair=new_keypair(), directory=directory, portfolio=_portfolio())
    agr2 = SimulatedAggregator(domain=AGR2, keypair=new_keypair(), directory=directory, portfolio=[])
    parts = (cro, dso, agr, agr2)
    try:
        for p in parts:
            p.start()
        world = World(directory, clock, cro, dso, agr, agr2)
        if ready:
            today = clock.now.astimezone(TZ).date()
            agr.register_connections(CRO, start=today)
            assert agr.wait_for(lambda a: bool(a.received("AgrPortfolioUpdateResponse")), DEADLINE_S)
            dso.publish_congestion_points([CP1, CP2], cro=CRO, start=today)
            assert dso.wait_for(
                lambda d: any(e.kind == "DsoPortfolioUpdateResponse" for e in d.log.entries()), DEADLINE_S
            )
            for cp in (CP1, CP2):
                dso.query_congestion_point(cp.id, cro=CRO, period=world.tomorrow)
            assert dso.wait_for(
                lambda d: d.aggregators_at(CP1.id) == (AGR,) and d.aggregators_at(CP2.id) == (AGR,), DEADLINE_S
            )
        yield world
    finally:
        for p in reversed(parts):
            p.close()


def cheapest_full(offers: list[FlexOffer] | tuple[FlexOffer, ...]) -> list[tuple[str, str]]:
    """Stand-in selector: the ``full`` option of every offer."""
    return [(o.id, "full") for o in offers]
