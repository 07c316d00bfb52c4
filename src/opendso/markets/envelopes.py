"""Aggregators' portfolios and their operating envelopes: what each connection point may import and export.

**Portfolios.** :func:`portfolios` reads the DER registry (:class:`~opendso.der.registry.DerRegistry`)
and gives each aggregator its connected assets grouped per connection point (a grid node) and per
feeder, with their counts and capacities (:class:`Portfolio`, :class:`PortfolioGroup`).
:func:`connection_points` turns them into the points an envelope is allocated to
(:class:`ConnectionPoint`: an aggregator at a node, its import and export capacity in W and an
optional firm floor per direction).

**Operating envelopes.** :func:`allocate_envelopes` gives every connection point, for every
interval, the most it may import and the most it may export (W), allocated *jointly* over all
connection points of all aggregators on the grid by one stated rule (:class:`AllocationRule`; the
term and the choice of an explicit allocation principle follow the dynamic operating envelopes of
ARENA's Distributed Energy Integration Program, DEIP, whose workstream names the regulation of
allocation principles as the foundational design issue):

- ``proportional``: every point gets the same share ``alpha`` of its own capacity,
  ``bound = alpha * capacity``;
- ``equal``: every point gets the same power ``W``, capped by its own capacity,
  ``bound = min(capacity, W)``; ``W = alpha * (the largest capacity)``, so ``alpha = 1`` is every
  point at its capacity under both rules;

and then never below the point's firm floor: ``bound = max(floor, rule(alpha))``. ``alpha`` is the
largest value in ``[0, 1]`` for which *every* connection point at its bound *at the same time*,
on top of the rest of the grid's consumption in that interval, keeps every line and transformer
at or under ``loading_max`` and every energised node within ``u_min_pu .. u_max_pu``
(:class:`~opendso.calc.timeseries.ViolationLimits`; loading as power-grid-model reports it:
current-based for lines, power-based for transformers). It is found per interval and direction
by bisection (to ``tolerance`` relative to the bracket's top); each bisection step is *one*
batch power flow of power-grid-model over every interval and both directions, with one zero
probe load per connection point (:func:`~opendso.calc.powerflow.with_probe_loads`) whose
``p_specified`` is the point's bound (positive: import, negative: export; unity power factor).

The rest of the grid is either the grid's own profiles at the given times, or a
:class:`~opendso.planning.model.QuantileForecast` of its loads and generators (mapped to
power-grid-model updates by :func:`~opendso.planning.congestion.scenario_injections`) at one
quantile of *consumption* per direction: the median by default; a high quantile (e.g. 0.9) for
the import envelope and a low one (e.g. 0.1) for the export envelope make them conservative (a
load target is taken at the quantile, a generator target at one minus it: high consumption is
high load and low generation). Every target at the same quantile at once is itself a
conservative corner (comonotone), not a joint quantile.

**Why all-at-export and all-at-import are the cases checked.** With the rest of the grid fixed,
the flow on a branch of a radial feeder is (up to losses) the sum of the injections beyond it, and
a node's voltage rises with injection at every node sharing its path to the source (the voltage
sensitivities ``dU_k/dP_i`` are the resistances of the shared path, all non-negative). Over the
box of every point somewhere between its import and its export bound, such sums reach their
maximum with every point at its export bound and their minimum with every point at its import
bound; so those two corners are the worst cases for reverse flow and over-voltage, and for forward
flow and under-voltage. What that leaves out: *mixed* states (some points importing while others
export) are not solved; they are covered only as far as the linear argument holds, i.e. not for
meshed grids (loop flows can give sensitivities of either sign), not for the nonlinear part
(losses, voltage dependence), not for reactive power (the probes are at unity power factor) and
not for tap changers that act. The envelope is *on top of* the rest of the grid: the aggregators'
assets must not also be in the profiles or the forecast.

**What a result says.** Where every point at its full capacity is within the limits, the bound is
the capacity and no element binds. Where even the floors (zero without floors: the rest of the
grid alone) violate a limit, the interval and direction are *infeasible*: the bounds stay at the
floors, ``feasible`` is false and the violated element is named; nothing is hidden. Feasibility is
assumed to shrink with ``alpha`` (true for the corners above); an export that would relieve a
base-case under-voltage is not searched for. A power flow that does not converge counts as a
violation (named ``power flow``).

**Checking dispatch.** :func:`check_dispatch` compares measured net consumption per connection
point and interval (:class:`PointMeasurement`, UFTP's sign: consumption positive) against the
envelopes and returns an :class:`EnvelopeBreach` for each measurement beyond its bound, with an
alarm-style key (``envelope:<aggregator>/<node>``) and signed severity as in
:mod:`opendso.operations.alarms` (+1/+2 import above the envelope, -1/-2 export above it: warning,
alarm).
"""

from __future__ import annotations

import logging
import math
import time as timer
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, PowerGridModel

from opendso.calc.powerflow import batch_power_flow, with_probe_loads
from opendso.calc.timeseries import LOADING_COMPONENTS, ViolationLimits
from opendso.der.model import DerAsset
from opendso.der.registry import DerRegistry
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.planning.congestion import scenario_injections
from opendso.planning.history import profile_times
from opendso.planning.model import QuantileForecast, parse_target
from opendso.text import check_text

__all__ = [
    "AllocationRule",
    "ConnectionPoint",
    "Direction",
    "Envelope",
    "EnvelopeAllocation",
    "EnvelopeBreach",
    "PointEnvelope",
    "PointMeasurement",
    "Portfolio",
    "PortfolioGroup",
    "allocate_envelopes",
    "check_dispatch",
    "connection_points",
    "portfolios",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Bisection steps at most (a relative tolerance of 1e-4 needs about 14).
MAX_BISECTIONS = 60
#: A breach larger than this share of its bound is an alarm (severity 2), a smaller one a warning (1).
ALARM_SHARE = 0.1
#: The binding element named where a power flow did not converge.
NOT_SOLVED = "power flow"


class AllocationRule(StrEnum):
    """How the joint allocation shares the network among connection points (see the module docstring)."""

    PROPORTIONAL = "proportional"
    EQUAL = "equal"


class Direction(StrEnum):
    """Import (consumption) or export (production) at a connection point."""

    IMPORT = "import"
    EXPORT = "export"


def _watts(what: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{what}: {value!r} is not a finite number of watts")
    if value < 0:
        raise InputError(f"{what}: {value} W is negative")
    return float(value)


def _utc(what: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InputError(f"{what}: {value!r} is not a time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what}: {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- portfolios ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PortfolioGroup:
    """An aggregator's assets at one connection point or on one feeder: ids, count and capacities.

    ``name`` is the node (for a connection point) or the feeder (None: a busbar, on no feeder).
    """

    name: str | None
    assets: tuple[str, ...]
    export_kw: float
    import_kw: float
    storage_kwh: float

    @property
    def count(self) -> int:
        """Number of assets."""
        return len(self.assets)

    def to_json(self) -> dict[str, Any]:
        """The group as JSON."""
        return {
            "name": self.name,
            "count": self.count,
            "assets": list(self.assets),
            "export_kw": self.export_kw,
            "import_kw": self.import_kw,
            "storage_kwh": self.storage_kwh,
        }


def _group(name: str | None, assets: Sequence[DerAsset]) -> PortfolioGroup:
    ordered = sorted(assets, key=lambda a: a.id)
    return PortfolioGroup(
        name,
        tuple(a.id for a in ordered),
        float(sum(a.export_kw for a in ordered)),
        float(sum(a.import_kw for a in ordered)),
        float(sum(a.storage_kwh for a in ordered)),
    )


@dataclass(frozen=True, slots=True)
class Portfolio:
    """One aggregator's connected DER: per connection point (node) and per feeder, with the totals."""

    aggregator: str
    points: tuple[PortfolioGroup, ...]
    feeders: tuple[PortfolioGroup, ...]
    #: Each point's feeder (None: a busbar).
    feeder_of: Mapping[str, str | None] = field(default_factory=dict)
    #: Each point's export floor in kW from its agreements (firm assets: all; flexible: the export limit).
    firm_export_kw: Mapping[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of assets in the portfolio."""
        return sum(p.count for p in self.points)

    def to_json(self) -> dict[str, Any]:
        """The portfolio as JSON: totals, then per connection point (with its feeder) and per feeder."""
        return {
            "aggregator": self.aggregator,
            "count": self.count,
            "export_kw": float(sum(p.export_kw for p in self.points)),
            "import_kw": float(sum(p.import_kw for p in self.points)),
            "storage_kwh": float(sum(p.storage_kwh for p in self.points)),
            "points": [{**p.to_json(), "feeder": self.feeder_of.get(p.name or "")} for p in self.points],
            "feeders": [f.to_json() for f in self.feeders],
        }


def portfolios(registry: DerRegistry) -> dict[str, Portfolio]:
    """Every aggregator's portfolio of connected assets in ``registry``, by aggregator name (sorted).

    Assets without an aggregator, and assets whose connection request is not yet connected, are in
    no portfolio. Feeders are those of the grid's present switch states
    (:meth:`~opendso.der.registry.DerRegistry.feeder_of`).
    """
    nodes = sorted({a.node for a, _ in registry.assets() if a.aggregator})
    by_aggregator: dict[str, dict[str, list[DerAsset]]] = {}
    for node in nodes:
        for asset in registry.assets_at(node):
            if asset.aggregator:
                by_aggregator.setdefault(asset.aggregator, {}).setdefault(node, []).append(asset)
    out: dict[str, Portfolio] = {}
    for aggregator in sorted(by_aggregator):
        at = by_aggregator[aggregator]
        feeder_of = {node: registry.feeder_of(node) for node in at}
        per_feeder: dict[str | None, list[DerAsset]] = {}
        for node, assets in at.items():
            per_feeder.setdefault(feeder_of[node], []).extend(assets)
        firm = {
            node: float(
                sum((a.agreement.export_limit_kw or 0.0) if a.agreement.flexible else a.export_kw for a in assets)
            )
            for node, assets in at.items()
        }
        out[aggregator] = Portfolio(
            aggregator,
            tuple(_group(node, at[node]) for node in sorted(at)),
            tuple(_group(f, per_feeder[f]) for f in sorted(per_feeder, key=lambda f: (f is None, f or ""))),
            feeder_of,
            firm,
        )
    log.info("event=portfolios aggregators=%d points=%d", len(out), sum(len(p.points) for p in out.values()))
    return out


@dataclass(frozen=True, slots=True)
class ConnectionPoint:
    """An aggregator's connection point: a node, its import and export capacity (W) and firm floors (W).

    The floors are what the allocation never goes below (e.g. the firm part of the agreement);
    each lies between 0 and its capacity.
    """

    aggregator: str
    node: str
    import_w: float
    export_w: float
    import_floor_w: float = 0.0
    export_floor_w: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.aggregator, str) or not self.aggregator.strip():
            raise InputError(f"connection point: aggregator {self.aggregator!r} is empty")
        object.__setattr__(self, "aggregator", check_text("aggregator", self.aggregator, max_len=200))
        object.__setattr__(self, "node", check_text("connection point node", self.node, max_len=200))
        where = f"connection point {self.aggregator}/{self.node}"
        for name in ("import_w", "export_w", "import_floor_w", "export_floor_w"):
            object.__setattr__(self, name, _watts(f"{where}: {name}", getattr(self, name)))
        if self.import_floor_w > self.import_w:
            raise InputError(f"{where}: import floor {self.import_floor_w} W is above its capacity {self.import_w} W")
        if self.export_floor_w > self.export_w:
            raise InputError(f"{where}: export floor {self.export_floor_w} W is above its capacity {self.export_w} W")

    @property
    def key(self) -> tuple[str, str]:
        """(aggregator, node)."""
        return (self.aggregator, self.node)

    def to_json(self) -> dict[str, Any]:
        """The point as JSON."""
        return {
            "aggregator": self.aggregator,
            "node": self.node,
            "import_w": self.import_w,
            "export_w": self.export_w,
            "import_floor_w": self.import_floor_w,
            "export_floor_w": self.export_floor_w,
        }


def connection_points(
    registry_or_portfolios: DerRegistry | Mapping[str, Portfolio],
    *,
    aggregators: Sequence[str] | None = None,
    firm_floors: bool = False,
) -> list[ConnectionPoint]:
    """The connection points of the aggregators' portfolios (all, or those named), capacities in W.

    With ``firm_floors`` the export floor of each point is the firm part of its assets' agreements
    (a firm asset's whole export capacity, a flexible asset's export limit); the import floor is 0
    (agreements give none). An aggregator named that has no portfolio: :class:`InputError`.
    """
    books = (
        portfolios(registry_or_portfolios)
        if isinstance(registry_or_portfolios, DerRegistry)
        else dict(registry_or_portfolios)
    )
    names = sorted(books) if aggregators is None else list(aggregators)
    unknown = [a for a in names if a not in books]
    if unknown:
        raise InputError(f"aggregator {unknown[0]!r} has no connected assets in the DER registry")
    out: list[ConnectionPoint] = []
    for aggregator in names:
        book = books[aggregator]
        for group in book.points:
            node = group.name or ""
            export_w = group.export_kw * 1e3
            floor = min(export_w, book.firm_export_kw.get(node, 0.0) * 1e3) if firm_floors else 0.0
            out.append(ConnectionPoint(aggregator, node, group.import_kw * 1e3, export_w, export_floor_w=floor))
    return out


# -- envelopes -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PointEnvelope:
    """One connection point's envelope per interval: the import and export it may use (W), and why.

    Arrays have one value per interval of the allocation; ``*_binding`` names the element that
    limits the joint allocation in that interval (None: the capacity limits it), ``*_feasible`` is
    false where even the floors violate a limit (the bound is then the floor).
    """

    point: ConnectionPoint
    time: tuple[datetime, ...]
    import_max_w: FloatArray
    export_max_w: FloatArray
    import_binding: tuple[str | None, ...]
    export_binding: tuple[str | None, ...]
    import_feasible: npt.NDArray[np.bool_]
    export_feasible: npt.NDArray[np.bool_]

    def index(self, when: datetime) -> int:
        """The interval starting at ``when``; :class:`InputError` when the envelope has none."""
        t = _utc("interval", when)
        try:
            return self.time.index(t)
        except ValueError:
            raise InputError(
                f"envelope of {self.point.aggregator}/{self.point.node}: no interval starting at {_iso(t)}"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The point's envelope as JSON: the point, then one record per interval."""
        return {
            **self.point.to_json(),
            "intervals": [
                {
                    "time": _iso(t),
                    "import_max_w": float(self.import_max_w[k]),
                    "export_max_w": float(self.export_max_w[k]),
                    "import_binding": self.import_binding[k],
                    "export_binding": self.export_binding[k],
                    "import_feasible": bool(self.import_feasible[k]),
                    "export_feasible": bool(self.export_feasible[k]),
                }
                for k, t in enumerate(self.time)
            ],
        }


@dataclass(frozen=True, eq=False)
class Envelope:
    """One aggregator's operating envelope: per connection point, per interval (see :class:`PointEnvelope`)."""

    aggregator: str
    rule: AllocationRule
    points: tuple[PointEnvelope, ...]

    def point(self, node: str) -> PointEnvelope:
        """The envelope at connection point ``node``; :class:`InputError` when the aggregator has none there."""
        for p in self.points:
            if p.point.node == node:
                return p
        raise InputError(f"aggregator {self.aggregator!r} has no connection point at node {node!r}")

    def to_json(self) -> dict[str, Any]:
        """The envelope as JSON (what the API publishes to the aggregator)."""
        return {"aggregator": self.aggregator, "rule": self.rule.value, "points": [p.to_json() for p in self.points]}


@dataclass(frozen=True, eq=False)
class EnvelopeAllocation:
    """The joint allocation over every connection point: the envelopes per aggregator and how they were found.

    ``alpha`` (2, T): the rule's parameter per direction (row 0 import, row 1 export) and interval;
    ``binding`` and ``feasible`` the same shape, shared by every point (the allocation is joint).
    """

    grid: str
    rule: AllocationRule
    time: tuple[datetime, ...]
    limits: ViolationLimits
    source: str
    import_quantile: float | None
    export_quantile: float | None
    alpha: FloatArray
    binding: tuple[tuple[str | None, ...], tuple[str | None, ...]]
    feasible: npt.NDArray[np.bool_]
    envelopes: Mapping[str, Envelope]
    batch_calls: int
    seconds: float

    def envelope(self, aggregator: str) -> Envelope:
        """One aggregator's envelope; :class:`InputError` for an aggregator with no connection point."""
        try:
            return self.envelopes[aggregator]
        except KeyError:
            raise InputError(f"aggregator {aggregator!r} has no operating envelope") from None

    def to_json(self) -> dict[str, Any]:
        """The allocation as JSON: the rule, the limits, per interval alpha and binding element, then every envelope."""
        return {
            "grid": self.grid,
            "rule": self.rule.value,
            "source": self.source,
            "import_quantile": self.import_quantile,
            "export_quantile": self.export_quantile,
            "limits": {
                "u_min_pu": self.limits.u_min_pu,
                "u_max_pu": self.limits.u_max_pu,
                "loading_max": self.limits.loading_max,
            },
            "intervals": [
                {
                    "time": _iso(t),
                    **{
                        f"{d.value}_{what}": value
                        for row, d in enumerate(Direction)
                        for what, value in (
                            ("alpha", float(self.alpha[row, k])),
                            ("binding", self.binding[row][k]),
                            ("feasible", bool(self.feasible[row, k])),
                        )
                    },
                }
                for k, t in enumerate(self.time)
            ],
            "batch_calls": self.batch_calls,
            "seconds": round(self.seconds, 3),
            "envelopes": [e.to_json() for e in self.envelopes.values()],
        }


def _bounds(alpha: FloatArray, capacity: FloatArray, floor: FloatArray, rule: AllocationRule) -> FloatArray:
    """(rows, P) bounds for ``alpha`` (rows,), capacities and floors (rows, P) of each row's direction."""
    if rule is AllocationRule.PROPORTIONAL:
        raw = alpha[:, None] * capacity
    else:
        raw = np.minimum(capacity, alpha[:, None] * capacity.max(axis=1, keepdims=True))
    return np.maximum(floor, raw)


class _Judge:
    """One power-grid-model model of the grid with a probe load per connection point; judges batches of rows."""

    def __init__(self, grid: Grid, nodes: npt.NDArray[np.int64], limits: ViolationLimits, threading: int) -> None:
        data, self.probe_ids = with_probe_loads(grid, nodes)
        self.model = PowerGridModel(data, system_frequency=grid.frequency_hz)
        self.grid = grid
        self.limits = limits
        self.threading = threading
        self.branches = [c for c in LOADING_COMPONENTS if grid.count(c)]
        self.wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        self.wanted.update({c: ["loading"] for c in self.branches})
        names: list[str] = []
        for c in self.branches:
            names.extend(f"{c}:{n}" for n in grid.names_of(c).tolist())
        self.n_branch = len(names)
        names.extend(f"node:{n}" for n in grid.names_of("node").tolist())
        self.names = names
        self.calls = 0

    def judge(self, update: dict[str, dict[str, FloatArray]]) -> tuple[npt.NDArray[np.bool_], list[str | None]]:
        """Per row: within every limit, and the worst violated element (None where none)."""
        out, failed = self._call(update, CalculationMethod.iterative_current)
        if failed.size:
            sub = {c: {k: v[failed] for k, v in cols.items()} for c, cols in update.items()}
            again, still = self._call(sub, CalculationMethod.newton_raphson)
            solved = np.ones(failed.size, dtype=bool)
            solved[still] = False
            for c in out:
                for attr in out[c]:
                    out[c][attr][failed[solved]] = again[c][attr][solved]
            failed = failed[~solved]
        lim = self.limits
        parts = [np.asarray(out[c]["loading"], dtype=float) - lim.loading_max for c in self.branches]
        u = np.asarray(out["node"]["u_pu"], dtype=float)
        energised = np.asarray(out["node"]["energized"], dtype=bool)
        with np.errstate(invalid="ignore"):
            parts.append(np.where(energised, np.maximum(u - lim.u_max_pu, lim.u_min_pu - u), -np.inf))
        excess = np.concatenate(parts, axis=1)
        excess = np.where(np.isfinite(excess) | np.isneginf(excess), excess, np.inf)  # NaN: not judged as within
        worst = np.argmax(excess, axis=1)
        ok = excess[np.arange(excess.shape[0]), worst] <= 0.0
        names: list[str | None] = [None if good else self.names[int(w)] for good, w in zip(ok, worst, strict=True)]
        for row in failed.tolist():
            ok[row] = False
            names[row] = NOT_SOLVED
        return ok, names

    def _call(
        self, update: dict[str, dict[str, FloatArray]], method: CalculationMethod
    ) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
        self.calls += 1
        out, failed = batch_power_flow(
            self.model,
            update,
            output=self.wanted,
            what=f"{self.grid.name}: operating envelopes",
            method=method,
            threading=self.threading,
            tolerate_failures=True,
        )
        return out, failed


def _quantile(what: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise InputError(f"{what}: {value!r} is not a level within (0, 1)")
    return float(value)


def _rest_of_grid(
    grid: Grid,
    times: Sequence[datetime] | None,
    forecast: QuantileForecast | None,
    import_quantile: float,
    export_quantile: float,
) -> tuple[tuple[datetime, ...], dict[str, dict[str, FloatArray]], dict[str, dict[str, FloatArray]], str]:
    """The intervals and the rest of the grid's update columns (T rows each) for the import and export cases."""
    if forecast is not None:
        if times is not None:
            raise InputError("operating envelopes: give times or a forecast, not both (a forecast has its intervals)")
        stamps = tuple(
            datetime.fromtimestamp(int(s), tz=UTC) for s in forecast.time.astype("datetime64[s]").astype(np.int64)
        )
        is_gen = np.array([parse_target(t)[0] == "sym_gen" for t in forecast.targets], dtype=bool)
        cases = []
        for level in (import_quantile, export_quantile):
            u = np.where(is_gen, 1.0 - level, level)
            u = np.broadcast_to(u, (1, forecast.steps, len(forecast.targets))).copy()
            cases.append(scenario_injections(grid, forecast, forecast.inverse_cdf(u)))
        return stamps, cases[0], cases[1], "forecast"
    if times is None or len(times) == 0:
        raise InputError("operating envelopes: give the intervals (times) or a forecast")
    stamps = tuple(_utc(f"interval {k}", t) for k, t in enumerate(times))
    if len(set(stamps)) != len(stamps) or any(b <= a for a, b in pairwise(stamps)):
        raise InputError("operating envelopes: the interval times must increase strictly")
    known = profile_times(grid)
    seconds = np.array([int(t.timestamp()) for t in stamps], dtype=np.int64)
    inside = np.isin(seconds, known.asi8 // 10**9)
    if not inside.all():
        bad = stamps[int(np.flatnonzero(~inside)[0])]
        raise InputError(f"operating envelopes: {_iso(bad)} is not a profile interval of grid {grid.name}")
    # no targets: every load and generator at its profile value in each interval
    at_profiles = QuantileForecast(
        targets=(),
        time=seconds.astype("datetime64[s]"),
        quantiles=np.array([0.5]),
        values=np.zeros((1, len(stamps), 0)),
        issued=stamps[0],
    )
    update = scenario_injections(grid, at_profiles, np.zeros((1, len(stamps), 0)))
    return stamps, update, update, "profiles"


def allocate_envelopes(
    grid: Grid,
    points: Sequence[ConnectionPoint],
    *,
    times: Sequence[datetime] | None = None,
    forecast: QuantileForecast | None = None,
    import_quantile: float = 0.5,
    export_quantile: float = 0.5,
    rule: AllocationRule | str = AllocationRule.PROPORTIONAL,
    limits: ViolationLimits | None = None,
    tolerance: float = 1e-4,
    threading: int = 0,
) -> EnvelopeAllocation:
    """Allocate every connection point's import and export bound per interval, jointly, by ``rule``.

    The rest of the grid is the grid's profiles at ``times`` (timezone-aware interval starts on the
    profiles' steps) or ``forecast`` at ``import_quantile`` / ``export_quantile`` of consumption (see
    the module docstring). ``tolerance`` is the bisection's stopping width relative to the top of
    its bracket: the bound found is within that share below the largest feasible one (as the batch
    power flow judges it). Bad input (no points, a point twice, a node the grid does not have,
    naive or unknown times, a quantile outside (0, 1), inconsistent limits): :class:`InputError`.
    """
    started = timer.perf_counter()
    try:
        rule = AllocationRule(rule)
    except ValueError:
        raise InputError(
            f"allocation rule {rule!r} is not one of {', '.join(r.value for r in AllocationRule)}"
        ) from None
    limits = limits or ViolationLimits()
    if not 0 < limits.u_min_pu < limits.u_max_pu or not limits.loading_max > 0:
        raise InputError(f"operating envelopes: need 0 < u_min < u_max and loading_max > 0, got {limits}")
    if not isinstance(tolerance, int | float) or not 0.0 < float(tolerance) < 0.5:
        raise InputError(f"operating envelopes: tolerance {tolerance!r} is not within (0, 0.5)")
    import_quantile = _quantile("import quantile", import_quantile)
    export_quantile = _quantile("export quantile", export_quantile)
    if not points:
        raise InputError("operating envelopes: no connection points")
    seen: set[tuple[str, str]] = set()
    for p in points:
        if not isinstance(p, ConnectionPoint):
            raise InputError(f"operating envelopes: {p!r} is not a connection point")
        if p.key in seen:
            raise InputError(f"operating envelopes: connection point {p.aggregator}/{p.node} is given twice")
        seen.add(p.key)
    node_rows = {str(n): k for k, n in enumerate(grid.names_of("node").tolist())}
    unknown = [p for p in points if p.node not in node_rows]
    if unknown:
        raise InputError(
            f"connection point {unknown[0].aggregator}/{unknown[0].node}: node {unknown[0].node!r} is not in grid "
            f"{grid.name}"
        )
    stamps, imp_update, exp_update, source = _rest_of_grid(grid, times, forecast, import_quantile, export_quantile)
    t = len(stamps)
    node_ids = grid.component("node")["id"].astype(np.int64)[[node_rows[p.node] for p in points]]
    judge = _Judge(grid, node_ids, limits, threading)

    # rows: import intervals then export intervals; capacity, floor and sign per row and point
    cap = np.vstack(
        [
            np.broadcast_to([p.import_w for p in points], (t, len(points))),
            np.broadcast_to([p.export_w for p in points], (t, len(points))),
        ]
    ).astype(float)
    floor = np.vstack(
        [
            np.broadcast_to([p.import_floor_w for p in points], (t, len(points))),
            np.broadcast_to([p.export_floor_w for p in points], (t, len(points))),
        ]
    ).astype(float)
    sign = np.concatenate([np.ones(t), -np.ones(t)])
    base = {c: {a: np.concatenate([imp_update[c][a], exp_update[c][a]]) for a in imp_update[c]} for c in imp_update}

    def update(rows: npt.NDArray[np.int64], alpha: FloatArray) -> dict[str, dict[str, FloatArray]]:
        probe = sign[rows, None] * _bounds(alpha, cap[rows], floor[rows], rule)
        out = {c: {a: v[rows] for a, v in cols.items()} for c, cols in base.items()}
        loads = out.get("sym_load")
        if loads is None:
            loads = {"p_specified": np.zeros((rows.size, 0)), "q_specified": np.zeros((rows.size, 0))}
        out["sym_load"] = {
            "p_specified": np.hstack([loads["p_specified"], probe]),
            "q_specified": np.hstack([loads["q_specified"], np.zeros_like(probe)]),
        }
        return out

    n = 2 * t
    rows_all = np.arange(n, dtype=np.int64)
    # first call: every point at its capacity (alpha 1) and at its floor (alpha 0), every row
    ok, names = judge.judge(update(np.concatenate([rows_all, rows_all]), np.concatenate([np.ones(n), np.zeros(n)])))
    full_ok, floor_ok = ok[:n], ok[n:]
    alpha = np.where(full_ok, 1.0, 0.0)
    binding: list[str | None] = [
        None if full_ok[r] else (names[n + r] if not floor_ok[r] else names[r]) for r in rows_all
    ]
    lo = np.zeros(n)
    hi = np.ones(n)
    active = ~full_ok & floor_ok
    for _ in range(MAX_BISECTIONS):
        active &= (hi - lo) > tolerance * hi
        if not active.any():
            break
        rows = np.flatnonzero(active)
        mid = 0.5 * (lo[rows] + hi[rows])
        good, why = judge.judge(update(rows, mid))
        lo[rows] = np.where(good, mid, lo[rows])
        hi[rows] = np.where(good, hi[rows], mid)
        for k, row in enumerate(rows.tolist()):
            if not good[k]:
                binding[row] = why[k]
    searched = ~full_ok & floor_ok
    alpha[searched] = lo[searched]
    bounds = _bounds(alpha, cap, floor, rule)
    feasible = full_ok | floor_ok

    by_aggregator: dict[str, list[PointEnvelope]] = {}
    for j, p in enumerate(points):
        by_aggregator.setdefault(p.aggregator, []).append(
            PointEnvelope(
                point=p,
                time=stamps,
                import_max_w=bounds[:t, j].copy(),
                export_max_w=bounds[t:, j].copy(),
                import_binding=tuple(binding[:t]),
                export_binding=tuple(binding[t:]),
                import_feasible=feasible[:t].copy(),
                export_feasible=feasible[t:].copy(),
            )
        )
    envelopes = {
        a: Envelope(a, rule, tuple(sorted(pts, key=lambda e: e.point.node))) for a, pts in sorted(by_aggregator.items())
    }
    result = EnvelopeAllocation(
        grid=grid.name,
        rule=rule,
        time=stamps,
        limits=limits,
        source=source,
        import_quantile=import_quantile if source == "forecast" else None,
        export_quantile=export_quantile if source == "forecast" else None,
        alpha=alpha.reshape(2, t),
        binding=(tuple(binding[:t]), tuple(binding[t:])),
        feasible=feasible.reshape(2, t),
        envelopes=envelopes,
        batch_calls=judge.calls,
        seconds=timer.perf_counter() - started,
    )
    if not feasible.all():
        log.warning(
            "event=envelopes_infeasible grid=%s rows=%d first=%s",
            grid.name,
            int((~feasible).sum()),
            binding[int(np.argmin(feasible))],
        )
    log.info(
        "event=envelopes_allocated grid=%s rule=%s points=%d intervals=%d batch_calls=%d seconds=%.3f",
        grid.name,
        rule.value,
        len(points),
        t,
        judge.calls,
        result.seconds,
    )
    return result


# -- dispatch against the envelope -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PointMeasurement:
    """Measured net consumption of a connection point in an interval (W, UFTP's sign: import positive)."""

    aggregator: str
    node: str
    time: datetime
    net_w: float

    def __post_init__(self) -> None:
        where = f"measurement of {self.aggregator}/{self.node}"
        object.__setattr__(self, "time", _utc(f"{where}: time", self.time))
        value = self.net_w
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"{where} at {_iso(self.time)}: {value!r} is not a finite number of watts")
        object.__setattr__(self, "net_w", float(value))


@dataclass(frozen=True, slots=True)
class EnvelopeBreach:
    """A connection point beyond its envelope in an interval: what was measured, the bound, and by how much.

    ``measured_w`` and ``bound_w`` are in the direction of the breach (both positive: import for
    ``import``, export for ``export``); ``severity`` is signed as the alarm monitor's (+1/+2 import
    above the envelope, -1/-2 export above it; 2 when the excess is over ``ALARM_SHARE`` of the
    bound or the bound is 0).
    """

    aggregator: str
    node: str
    time: datetime
    direction: Direction
    measured_w: float
    bound_w: float
    excess_w: float
    severity: int

    @property
    def key(self) -> str:
        """The alarm-style key: ``envelope:<aggregator>/<node>`` (monitor ``envelope``, one channel per point)."""
        return f"envelope:{self.aggregator}/{self.node}"

    @property
    def condition(self) -> str:
        """The alarm condition: ``import_above_envelope`` or ``export_above_envelope``."""
        return f"{self.direction.value}_above_envelope"

    def to_json(self) -> dict[str, Any]:
        """The breach as JSON."""
        return {
            "key": self.key,
            "condition": self.condition,
            "severity": self.severity,
            "aggregator": self.aggregator,
            "node": self.node,
            "time": _iso(self.time),
            "direction": self.direction.value,
            "measured_w": self.measured_w,
            "bound_w": self.bound_w,
            "excess_w": self.excess_w,
        }


def check_dispatch(
    envelopes: EnvelopeAllocation | Mapping[str, Envelope] | Iterable[Envelope],
    measured: Iterable[PointMeasurement],
    *,
    tolerance_w: float = 0.0,
) -> list[EnvelopeBreach]:
    """The breaches of ``measured`` against the envelopes, in the order of the measurements.

    A measurement breaches when its import exceeds ``import_max_w`` or its export exceeds
    ``export_max_w`` by more than ``tolerance_w``. A measurement of an aggregator with no envelope,
    of a node where the aggregator has no connection point, or of an interval the envelope does not
    cover: :class:`InputError` naming it (a breach must not be missed by a silent skip).
    """
    tolerance = _watts("tolerance", tolerance_w)
    if isinstance(envelopes, EnvelopeAllocation):
        book = dict(envelopes.envelopes)
    elif isinstance(envelopes, Mapping):
        book = dict(envelopes)
    else:
        book = {e.aggregator: e for e in envelopes}
    breaches: list[EnvelopeBreach] = []
    for m in measured:
        if not isinstance(m, PointMeasurement):
            raise InputError(f"dispatch check: {m!r} is not a point measurement")
        envelope = book.get(m.aggregator)
        if envelope is None:
            raise InputError(f"dispatch check: aggregator {m.aggregator!r} has no operating envelope")
        point = envelope.point(m.node)
        k = point.index(m.time)
        if m.net_w >= 0:
            direction, value, bound, sign = Direction.IMPORT, m.net_w, float(point.import_max_w[k]), 1
        else:
            direction, value, bound, sign = Direction.EXPORT, -m.net_w, float(point.export_max_w[k]), -1
        excess = value - bound
        if excess <= tolerance:
            continue
        level = 2 if bound <= 0.0 or excess > ALARM_SHARE * bound else 1
        breaches.append(EnvelopeBreach(m.aggregator, m.node, m.time, direction, value, bound, excess, sign * level))
    if breaches:
        log.warning("event=envelope_breaches count=%d first=%s", len(breaches), breaches[0].key)
    return breaches
