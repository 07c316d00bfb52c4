"""The TSO-DSO interface per grid-supply point: day-ahead exchange, flexibility on offer, and TSO requests.

**Grid-supply points** (:func:`grid_supply_points`). A GSP is where the distribution grid takes
supply from the transmission (or HV) grid: for each source (the external grid), the nodes it
reaches through closed lines and links without crossing a transformer are the upstream side; the
transformers with exactly one end there are the GSP's transformers, and every node they supply is
*behind* the GSP. On a SimBench MV grid that is the HV/MV transformer pair at the source; on an
LV grid the MV/LV transformer. The GSP is named after its source.

**Scheduled exchange** (:meth:`TsoInterface.day_ahead`): the weekly-profile forecast
(:func:`opendso.planning.baselines.weekly_profile_forecast`) of every load and generator from the
measured history (by default :func:`opendso.planning.history.profile_history`), mapped onto the
grid by :func:`opendso.planning.congestion.scenario_injections` (Q follows P by each element's
Q/P), is solved interval by interval in one batch power flow of power-grid-model. The exchange is
the P and Q flowing into the GSP transformers at their upstream ends, in MW/Mvar, **positive when
the distribution grid imports** (UFTP's sign: consumption positive). The forecast band
(``band``, default the 10 % and 90 % quantiles) is the envelope of two more power flows per
interval: every load at its low and every generator at its high quantile (least import), and the
reverse (most import). Errors are not perfectly correlated, so this band is wider than the true
band of the sum (conservative).

**Flexibility on offer**: from the DER registry, every connected asset at a node behind the GSP:
batteries both ways (``export_kw`` up, ``import_kw`` down), flexible loads, heat pumps and EV hubs
upward (less consumption, up to ``import_kw``), PV and wind downward (curtailment, up to
``export_kw``). "Up" is what the TSO calls upward regulation: less import at the GSP (less
consumption or more production behind it); "down" is more import. The capacities are the
registry's: state of charge and the DER's own forecast output are not modelled, so these are
upper bounds. From the gross volume the DSO's own reserve per interval (``reserve_up_mw``,
``reserve_down_mw``, given by the caller, e.g. from the congestion forecast) is taken off; the rest
is limited so that activating it, spread over the DER pro rata to their capacity in that
direction, causes no violation on the median forecast state of that interval
(:mod:`opendso.markets.network_check`: one batch power flow over ``resolution + 1`` fractions of
the volume per interval; the offer is the largest fraction below the first one that violates,
and that violation's element is named as the limit).

**TSO requests** (:meth:`TsoInterface.check_request`): a request names a GSP, intervals, a
direction and MW. Each interval is checked against the offered volume and by a power flow with the
requested activation spread over the DER behind the GSP (the largest feasible fraction, by the
same batch). The answer is ``accepted`` (all of it), ``partial`` (the accepted MW per interval,
with the reason: the offered volume, or the element that would be violated), or ``refused``
(nothing can be activated, or the request was all-or-none and cannot be met whole), with the reason.

**Export** (:meth:`TsoReport.to_dict`, :meth:`TsoReport.write_csv`, :meth:`TsoReport.write_json`).
The CSV has one row per GSP and interval, columns::

    gsp, interval_start (ISO 8601, UTC), p_mw, q_mvar, p_low_mw, p_high_mw, q_low_mvar, q_high_mvar,
    up_mw, down_mw, up_gross_mw, down_gross_mw, reserve_up_mw, reserve_down_mw,
    up_limited_by, down_limited_by

(MW and Mvar; exchange positive = import into the distribution grid; ``*_limited_by`` the element
that limits the offer, empty where none does). The JSON (and the dict for the API) is
``{"issued": ISO time, "sign": "import positive", "band": [lo, hi], "gsps": [{"gsp", "source_node",
"transformers": [...], "intervals": [{"interval_start", and the CSV's columns}]}]}``.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opendso.calc.timeseries import ViolationLimits
from opendso.der.model import AssetKind, DerAsset
from opendso.der.registry import DerRegistry
from opendso.errors import InputError
from opendso.grid.io.atomic import write_atomically
from opendso.grid.model import Grid
from opendso.markets.model import check_aware
from opendso.markets.network_check import BaseInjections, InjectionCheck, violations
from opendso.planning.baselines import weekly_profile_forecast
from opendso.planning.congestion import scenario_injections
from opendso.planning.history import profile_history, profile_times
from opendso.planning.model import QuantileForecast

__all__ = [
    "CSV_COLUMNS",
    "Direction",
    "GridSupplyPoint",
    "GspFleet",
    "GspSchedule",
    "RequestStatus",
    "TsoAnswer",
    "TsoInterface",
    "TsoReport",
    "TsoRequest",
    "grid_supply_points",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The CSV export's columns, in order.
CSV_COLUMNS = (
    "gsp",
    "interval_start",
    "p_mw",
    "q_mvar",
    "p_low_mw",
    "p_high_mw",
    "q_low_mvar",
    "q_high_mvar",
    "up_mw",
    "down_mw",
    "up_gross_mw",
    "down_gross_mw",
    "reserve_up_mw",
    "reserve_down_mw",
    "up_limited_by",
    "down_limited_by",
)
#: Weeks of history before the issue time the weekly-profile forecast reads (4 weeks of mean, 28 days of residuals).
HISTORY_WEEKS = 9
_UP_KINDS = (AssetKind.BATTERY, AssetKind.FLEXIBLE_LOAD, AssetKind.HEAT_PUMPS, AssetKind.EV_HUB)


class Direction(enum.StrEnum):
    """Upward (less import at the GSP) or downward (more import)."""

    UP = "up"
    DOWN = "down"


class RequestStatus(enum.StrEnum):
    """The answer to a TSO request."""

    ACCEPTED = "accepted"
    PARTIAL = "partial"
    REFUSED = "refused"


@dataclass(frozen=True)
class GridSupplyPoint:
    """A grid-supply point: its source, the transformers it feeds through, and the nodes behind them.

    ``upstream_from[k]`` is True when transformer ``k``'s from end is on the upstream side.
    """

    name: str
    source_node: str
    transformers: tuple[str, ...]
    transformer_rows: tuple[int, ...]
    upstream_from: tuple[bool, ...]
    nodes_behind: frozenset[str]


def grid_supply_points(grid: Grid) -> tuple[GridSupplyPoint, ...]:
    """The grid-supply points of ``grid`` (see the module docstring); :class:`InputError` when a source has none."""
    nodes = grid.component("node")
    n = nodes.size
    names = [str(x) for x in grid.names_of("node").tolist()]
    u: list[np.ndarray] = []
    v: list[np.ndarray] = []
    all_u: list[np.ndarray] = []
    all_v: list[np.ndarray] = []
    for component, array in grid.iter_branches():
        closed = (array["from_status"] == 1) & (array["to_status"] == 1)
        a = grid.node_positions(array["from_node"][closed])
        b = grid.node_positions(array["to_node"][closed])
        all_u.append(a)
        all_v.append(b)
        if component != "transformer":
            u.append(a)
            v.append(b)

    def labels(us: list[np.ndarray], vs: list[np.ndarray]) -> np.ndarray:
        uu = np.concatenate(us) if us else np.zeros(0, np.int64)
        vv = np.concatenate(vs) if vs else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(uu.size), (uu, vv)), shape=(n, n))
        return np.asarray(connected_components(graph, directed=False)[1])

    local = labels(u, v)
    whole = labels(all_u, all_v)
    trafos = grid.component("transformer")
    t_names = [str(x) for x in grid.names_of("transformer").tolist()] if trafos.size else []
    t_from = grid.node_positions(trafos["from_node"]) if trafos.size else np.zeros(0, np.int64)
    t_to = grid.node_positions(trafos["to_node"]) if trafos.size else np.zeros(0, np.int64)
    t_closed = (trafos["from_status"] == 1) & (trafos["to_status"] == 1) if trafos.size else np.zeros(0, bool)
    out: list[GridSupplyPoint] = []
    sources = grid.component("source")
    for k, row in enumerate(sources):
        if row["status"] != 1:
            continue
        s = int(grid.node_positions([row["node"]])[0])
        up = local == local[s]
        from_up = up[t_from] & ~up[t_to] & t_closed
        to_up = up[t_to] & ~up[t_from] & t_closed
        rows = np.flatnonzero(from_up | to_up)
        name = str(grid.names_of("source")[k])
        if not rows.size:
            raise InputError(f"grid {grid.name}: source {name!r} feeds no transformer: no grid-supply point")
        behind = (whole == whole[s]) & ~up
        out.append(
            GridSupplyPoint(
                name=name,
                source_node=names[s],
                transformers=tuple(t_names[r] for r in rows),
                transformer_rows=tuple(int(r) for r in rows),
                upstream_from=tuple(bool(from_up[r]) for r in rows),
                nodes_behind=frozenset(names[i] for i in np.flatnonzero(behind)),
            )
        )
    if not out:
        raise InputError(f"grid {grid.name}: no source in service: no grid-supply point")
    return tuple(out)


@dataclass(frozen=True)
class GspSchedule:
    """One GSP's day ahead: the exchange per interval with its band, and the flexibility on offer (MW, Mvar)."""

    gsp: GridSupplyPoint
    times: tuple[datetime, ...]
    p_mw: FloatArray
    q_mvar: FloatArray
    p_low_mw: FloatArray
    p_high_mw: FloatArray
    q_low_mvar: FloatArray
    q_high_mvar: FloatArray
    up_mw: FloatArray
    down_mw: FloatArray
    up_gross_mw: FloatArray
    down_gross_mw: FloatArray
    reserve_up_mw: FloatArray
    reserve_down_mw: FloatArray
    up_limited_by: tuple[str | None, ...]
    down_limited_by: tuple[str | None, ...]

    def rows(self) -> list[dict[str, Any]]:
        """One record per interval with the CSV's columns."""
        out: list[dict[str, Any]] = []
        for k, t in enumerate(self.times):
            row: dict[str, Any] = {"gsp": self.gsp.name, "interval_start": _iso(t)}
            for name in CSV_COLUMNS[2:14]:
                row[name] = float(getattr(self, name)[k])
            row["up_limited_by"] = self.up_limited_by[k]
            row["down_limited_by"] = self.down_limited_by[k]
            out.append(row)
        return out


@dataclass(frozen=True)
class TsoReport:
    """The day-ahead report of every GSP, and the state it was computed on (to check TSO requests against)."""

    issued: datetime
    band: tuple[float, float]
    schedules: tuple[GspSchedule, ...]
    base: BaseInjections = field(repr=False, compare=False)

    def schedule(self, gsp: str) -> GspSchedule:
        """The schedule of GSP ``gsp``, or :class:`InputError`."""
        for s in self.schedules:
            if s.gsp.name == gsp:
                return s
        raise InputError(f"TSO interface: no grid-supply point {gsp!r}")

    def to_dict(self) -> dict[str, Any]:
        """The report as the API serves it (schema in the module docstring)."""
        return {
            "issued": _iso(self.issued),
            "sign": "import positive",
            "band": list(self.band),
            "gsps": [
                {
                    "gsp": s.gsp.name,
                    "source_node": s.gsp.source_node,
                    "transformers": list(s.gsp.transformers),
                    "intervals": [{k: v for k, v in r.items() if k != "gsp"} for r in s.rows()],
                }
                for s in self.schedules
            ],
        }

    def to_csv(self) -> str:
        """The report as CSV text (columns :data:`CSV_COLUMNS`)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for s in self.schedules:
            for r in s.rows():
                writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return buffer.getvalue()

    def write_csv(self, path: Path) -> None:
        """Write :meth:`to_csv` to ``path`` atomically."""
        write_atomically(path, self.to_csv().encode())

    def write_json(self, path: Path) -> None:
        """Write :meth:`to_dict` as JSON to ``path`` atomically."""
        write_atomically(path, json.dumps(self.to_dict(), indent=1).encode())


@dataclass(frozen=True)
class TsoRequest:
    """A TSO's request: activate ``mw`` (> 0) in ``direction`` at GSP ``gsp`` in each of ``intervals`` (starts, aware).

    ``all_or_none``: the TSO takes the whole volume or nothing.
    """

    gsp: str
    intervals: tuple[datetime, ...]
    direction: Direction | str
    mw: float
    all_or_none: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.gsp, str) or not self.gsp:
            raise InputError(f"TSO request: gsp must be a name, got {self.gsp!r}")
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError:
            raise InputError(
                f"TSO request at {self.gsp}: direction must be 'up' or 'down', got {self.direction!r}"
            ) from None
        if (
            isinstance(self.mw, bool)
            or not isinstance(self.mw, int | float)
            or not math.isfinite(self.mw)
            or self.mw <= 0
        ):
            raise InputError(f"TSO request at {self.gsp}: mw must be a finite number > 0, got {self.mw!r}")
        if not self.intervals:
            raise InputError(f"TSO request at {self.gsp}: no intervals")
        times = tuple(check_aware(f"TSO request at {self.gsp} interval", t) for t in self.intervals)
        if len(set(times)) != len(times):
            raise InputError(f"TSO request at {self.gsp}: an interval is listed twice")
        object.__setattr__(self, "intervals", times)
        object.__setattr__(self, "mw", float(self.mw))


@dataclass(frozen=True)
class TsoAnswer:
    """The answer to a :class:`TsoRequest`: status, accepted MW and reason per interval (None where whole)."""

    request: TsoRequest
    status: RequestStatus
    accepted_mw: tuple[float, ...]
    reasons: tuple[str | None, ...]

    @property
    def reason(self) -> str | None:
        """The reasons of the intervals not accepted whole, joined (None when all were)."""
        found = [f"{_iso(t)}: {r}" for t, r in zip(self.request.intervals, self.reasons, strict=True) if r]
        return "; ".join(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        """The answer as the API returns it."""
        return {
            "gsp": self.request.gsp,
            "direction": Direction(self.request.direction).value,
            "requested_mw": self.request.mw,
            "status": self.status.value,
            "intervals": [
                {"interval_start": _iso(t), "accepted_mw": a, "reason": r}
                for t, a, r in zip(self.request.intervals, self.accepted_mw, self.reasons, strict=True)
            ],
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class GspFleet:
    """The DER behind one GSP: nodes, and the W per node of 1 MW activated up / down (UFTP sign)."""

    nodes: tuple[str, ...]
    up_w_per_mw: FloatArray
    down_w_per_mw: FloatArray
    up_mw: float
    down_mw: float


def _capacity(asset: DerAsset) -> tuple[float, float]:
    """(up, down) kW of one asset (see the module docstring)."""
    up = down = 0.0
    if asset.kind is AssetKind.BATTERY:
        up, down = asset.export_kw, asset.import_kw
    elif asset.kind in _UP_KINDS:
        up = asset.import_kw
    elif asset.kind in (AssetKind.PV, AssetKind.WIND):
        down = asset.export_kw
    return up, down


class TsoInterface:
    """The TSO-DSO interface of ``grid`` with the DER of ``registry`` (see the module docstring).

    ``limits``: what the network check judges; ``resolution``: fractions of a volume per
    interval in the power-flow check (the offer is exact to ``1/resolution`` of the gross volume).
    """

    def __init__(
        self,
        grid: Grid,
        registry: DerRegistry,
        *,
        limits: ViolationLimits | None = None,
        resolution: int = 40,
    ) -> None:
        if not 1 <= resolution <= 1000:
            raise InputError(f"TSO interface: resolution must be 1..1000, got {resolution}")
        self.grid = grid
        self.registry = registry
        self.limits = limits or ViolationLimits()
        self.resolution = resolution
        self.gsps = grid_supply_points(grid)

    def fleet(self, gsp: GridSupplyPoint) -> GspFleet:
        """The connected DER behind ``gsp`` and how an activation spreads over their nodes."""
        up: dict[str, float] = {}
        down: dict[str, float] = {}
        for node in sorted({a.node for a, _ in self.registry.assets()} & gsp.nodes_behind):
            for asset in self.registry.assets_at(node):
                u, d = _capacity(asset)
                up[node] = up.get(node, 0.0) + u
                down[node] = down.get(node, 0.0) + d
        nodes = tuple(sorted(set(up) | set(down)))
        up_kw = np.array([up.get(x, 0.0) for x in nodes])
        down_kw = np.array([down.get(x, 0.0) for x in nodes])
        total_up, total_down = float(up_kw.sum()), float(down_kw.sum())
        # 1 MW up = 1 MW less consumption spread pro rata; 1 MW down = 1 MW more
        per_up = -up_kw / total_up * 1e6 if total_up > 0 else np.zeros(len(nodes))
        per_down = down_kw / total_down * 1e6 if total_down > 0 else np.zeros(len(nodes))
        return GspFleet(nodes, per_up, per_down, total_up / 1e3, total_down / 1e3)

    # -- the day ahead ----------------------------------------------------------------------------
    def day_ahead(
        self,
        issued: datetime,
        *,
        history: pd.DataFrame | None = None,
        steps: int = 96,
        band: tuple[float, float] = (0.1, 0.9),
        reserve_up_mw: Sequence[float] | FloatArray | None = None,
        reserve_down_mw: Sequence[float] | FloatArray | None = None,
    ) -> TsoReport:
        """The exchange and flexibility of every GSP for ``steps`` intervals from ``issued`` (module docstring).

        ``reserve_up_mw``/``reserve_down_mw``: the DSO's own need per interval (``steps`` values,
        >= 0), the same for every GSP (default none). :class:`InputError` for a naive ``issued``,
        a bad band or reserve, or too little history.
        """
        issued = check_aware("TSO day-ahead issue time", issued)
        if not 1 <= steps <= 7 * 96:
            raise InputError(f"TSO day-ahead: steps must be 1..672, got {steps}")
        lo, hi = band
        if not 0 < lo < 0.5 < hi < 1:
            raise InputError(f"TSO day-ahead: band must be (lo, hi) with 0 < lo < 0.5 < hi < 1, got {band!r}")
        reserves = [self._reserve(name, r, steps) for name, r in (("up", reserve_up_mw), ("down", reserve_down_mw))]
        if history is None:
            history = self._history(issued)
        forecast = weekly_profile_forecast(history, issued, horizon_steps=steps, quantiles=(lo, 0.5, hi))
        base = self._base_states(forecast)
        times = tuple(pd.Timestamp(t).tz_localize("UTC").to_pydatetime() for t in forecast.time.astype("datetime64[s]"))
        schedules = tuple(self._schedule(g, base, times, reserves) for g in self.gsps)
        log.info(
            "event=tso_day_ahead grid=%s issued=%s gsps=%d steps=%d",
            self.grid.name,
            _iso(issued),
            len(schedules),
            steps,
        )
        return TsoReport(issued, (lo, hi), schedules, base.take(np.arange(steps)))

    def _reserve(self, name: str, values: Sequence[float] | FloatArray | None, steps: int) -> FloatArray:
        if values is None:
            return np.zeros(steps)
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (steps,) or not np.all(np.isfinite(array)) or np.any(array < 0):
            raise InputError(f"TSO day-ahead: reserve_{name}_mw must be {steps} finite values >= 0")
        return array

    def _history(self, issued: datetime) -> pd.DataFrame:
        times = profile_times(self.grid)
        at = pd.Timestamp(issued)
        stop = int(times.searchsorted(at))
        start = max(0, int(times.searchsorted(at - timedelta(weeks=HISTORY_WEEKS))))
        if stop <= start:
            raise InputError(f"TSO day-ahead: no history of {self.grid.name} before {_iso(issued)}")
        return profile_history(self.grid, start=start, stop=stop)

    def _base_states(self, forecast: QuantileForecast) -> BaseInjections:
        """3*T rows: the median, then the least-import edge, then the most-import edge of the band."""
        q = forecast.values  # (3, T, N): lo, median, hi
        is_load = np.array([t.startswith("sym_load:") for t in forecast.targets])
        least = np.where(is_load[None, :], q[0], q[2])
        most = np.where(is_load[None, :], q[2], q[0])
        update = scenario_injections(self.grid, forecast, np.stack([q[1], least, most]))
        s = 3 * forecast.steps

        def table(component: str, attribute: str) -> FloatArray:
            if component in update:
                return np.asarray(update[component][attribute], dtype=np.float64)
            return np.zeros((s, self.grid.count(component)))

        return BaseInjections(
            table("sym_load", "p_specified"),
            table("sym_load", "q_specified"),
            table("sym_gen", "p_specified"),
            table("sym_gen", "q_specified"),
        )

    def _schedule(
        self, gsp: GridSupplyPoint, base: BaseInjections, times: tuple[datetime, ...], reserves: list[FloatArray]
    ) -> GspSchedule:
        t = len(times)
        fleet = self.fleet(gsp)
        check = InjectionCheck(self.grid, fleet.nodes, limits=self.limits)
        state = check.run(base, np.zeros((base.scenarios, len(fleet.nodes))))
        p, qv = self._exchange(check, state, gsp)
        p, qv = p.reshape(3, t), qv.reshape(3, t)
        median = base.take(np.arange(t))
        zero = check.run(median, np.zeros((t, len(fleet.nodes))))
        offers: list[FloatArray] = []
        limited: list[tuple[str | None, ...]] = []
        gross = {Direction.UP: fleet.up_mw, Direction.DOWN: fleet.down_mw}
        for direction, reserve in zip((Direction.UP, Direction.DOWN), reserves, strict=True):
            net = np.maximum(gross[direction] - reserve, 0.0)
            feasible, element = self._feasible(check, fleet, median, zero, direction, net)
            offers.append(feasible)
            limited.append(element)
        return GspSchedule(
            gsp=gsp,
            times=times,
            p_mw=p[0],
            q_mvar=qv[0],
            p_low_mw=np.minimum.reduce([p[0], p[1], p[2]]),
            p_high_mw=np.maximum.reduce([p[0], p[1], p[2]]),
            q_low_mvar=np.minimum.reduce([qv[0], qv[1], qv[2]]),
            q_high_mvar=np.maximum.reduce([qv[0], qv[1], qv[2]]),
            up_mw=offers[0],
            down_mw=offers[1],
            up_gross_mw=np.full(t, fleet.up_mw),
            down_gross_mw=np.full(t, fleet.down_mw),
            reserve_up_mw=reserves[0],
            reserve_down_mw=reserves[1],
            up_limited_by=limited[0],
            down_limited_by=limited[1],
        )

    def _exchange(self, check: InjectionCheck, state: Any, gsp: GridSupplyPoint) -> tuple[FloatArray, FloatArray]:
        """P (MW) and Q (Mvar) into the GSP transformers at their upstream ends, per scenario."""
        names = [str(x) for x in self.grid.names_of("transformer").tolist()]
        p = np.zeros(state.loading.shape[0])
        q = np.zeros_like(p)
        for row, from_up in zip(gsp.transformer_rows, gsp.upstream_from, strict=True):
            col = check.branches.index(f"transformer:{names[row]}")
            p += state.branch_p_from_w[:, col] if from_up else state.branch_p_to_w[:, col]
            q += state.branch_q_from_w[:, col] if from_up else state.branch_q_to_w[:, col]
        return p / 1e6, q / 1e6

    def _feasible(
        self,
        check: InjectionCheck,
        fleet: GspFleet,
        median: BaseInjections,
        zero: Any,
        direction: Direction,
        volume_mw: FloatArray,
    ) -> tuple[FloatArray, tuple[str | None, ...]]:
        """Per interval, the largest fraction of ``volume_mw`` whose activation causes no violation, and the limit."""
        t = volume_mw.size
        if not fleet.nodes or not np.any(volume_mw > 0):
            return np.zeros(t), (None,) * t
        per = fleet.up_w_per_mw if direction is Direction.UP else fleet.down_w_per_mw
        r = self.resolution
        fractions = np.linspace(0.0, 1.0, r + 1)
        rows = np.repeat(np.arange(t), r + 1)
        extra = (volume_mw[rows] * np.tile(fractions, t))[:, None] * per[None, :]
        result = check.run(median.take(rows), extra)
        found = violations(check, result, zero, base_rows=rows)
        out = np.zeros(t)
        limits: list[str | None] = []
        for k in range(t):
            block = found[k * (r + 1) : (k + 1) * (r + 1)]
            bad = [j for j, v in enumerate(block) if v is not None]
            if not bad:
                out[k] = volume_mw[k]
                limits.append(None)
                continue
            first = bad[0]
            out[k] = fractions[first - 1] * volume_mw[k] if first > 0 else 0.0
            violation = block[first]
            limits.append(violation.element if violation is not None else None)
        return out, tuple(limits)

    # -- requests ---------------------------------------------------------------------------------
    def check_request(self, report: TsoReport, request: TsoRequest) -> TsoAnswer:
        """Check ``request`` against ``report``'s offer and the distribution limits (module docstring).

        :class:`InputError` for an unknown GSP or an interval not in the report.
        """
        schedule = report.schedule(request.gsp)
        index = {t: k for k, t in enumerate(schedule.times)}
        missing = [t for t in request.intervals if t not in index]
        if missing:
            raise InputError(
                f"TSO request at {request.gsp}: interval {_iso(missing[0])} is not in the day-ahead report"
            )
        ks = np.array([index[t] for t in request.intervals], dtype=np.int64)
        direction = Direction(request.direction)
        offered = (schedule.up_mw if direction is Direction.UP else schedule.down_mw)[ks]
        fleet = self.fleet(schedule.gsp)
        check = InjectionCheck(self.grid, fleet.nodes, limits=self.limits)
        median = report.base.take(ks)
        zero = check.run(median, np.zeros((ks.size, len(fleet.nodes))))
        gross = fleet.up_mw if direction is Direction.UP else fleet.down_mw
        wanted = np.full(ks.size, min(request.mw, gross)) if gross > 0 else np.zeros(ks.size)
        feasible, elements = self._feasible(check, fleet, median, zero, direction, wanted)
        accepted = np.minimum(np.minimum(feasible, offered), request.mw)
        reasons: list[str | None] = []
        for k in range(ks.size):
            if accepted[k] >= request.mw - 1e-9:
                reasons.append(None)
            elif elements[k] is not None and feasible[k] < request.mw - 1e-9:
                reasons.append(f"activation of {request.mw:g} MW would violate {elements[k]}")
            elif gross < request.mw:
                reasons.append(f"only {gross:g} MW of DER behind {request.gsp}")
            else:
                reasons.append(f"offered volume {offered[k]:g} MW")
        whole = bool(np.all(accepted >= request.mw - 1e-9))
        if whole:
            status = RequestStatus.ACCEPTED
        elif request.all_or_none or not np.any(accepted > 0):
            status = RequestStatus.REFUSED
            accepted = np.zeros(ks.size)
        else:
            status = RequestStatus.PARTIAL
        log.info("event=tso_request gsp=%s direction=%s mw=%g status=%s", request.gsp, direction, request.mw, status)
        return TsoAnswer(request, status, tuple(float(a) for a in accepted), tuple(reasons))

    def activation_w(self, gsp: str, direction: Direction, mw: float) -> dict[str, float]:
        """The consumption change (W, UFTP sign) per DER node of activating ``mw`` at ``gsp`` in ``direction``."""
        for g in self.gsps:
            if g.name == gsp:
                fleet = self.fleet(g)
                per = fleet.up_w_per_mw if Direction(direction) is Direction.UP else fleet.down_w_per_mw
                return {n: float(w * mw) for n, w in zip(fleet.nodes, per, strict=True)}
        raise InputError(f"TSO interface: no grid-supply point {gsp!r}")
